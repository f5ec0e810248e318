"""Fixtures for engine tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from engine_world import World, write_config
from tick_world import SMALL, TEMPLATES, ny

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.paths import default_config_dir


@pytest.fixture
def default_config() -> CadenceConfig:
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def world(engine, default_config) -> World:
    return World(
        engine, default_config, datetime(2026, 11, 2, 7, 0, tzinfo=default_config.policy.zone)
    )


@pytest.fixture
def small(engine, tmp_path: Path) -> World:
    """A store with the small cadence file of :mod:`tick_world` (three steps, one cadence)."""
    config = write_config(tmp_path, SMALL, TEMPLATES)
    return World(engine, config, ny(2026, 11, 2, 9, 0))
