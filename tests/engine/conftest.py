"""Fixtures for engine tests."""

from __future__ import annotations

from datetime import datetime

import pytest
from engine_world import World

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
