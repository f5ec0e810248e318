"""Fixtures: a store synced from the three sandbox CRMs, and ``outreach serve``'s app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from crm_world import NOW, PEOPLE, SYNCED, crm_settings, sync_all
from sqlalchemy import Engine
from werkzeug.test import Client

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock
from outreach.paths import default_config_dir
from outreach.sandbox.suite import Sandbox
from outreach.serve import WebhookApp, make_app


@pytest.fixture(scope="module")
def config() -> CadenceConfig:
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(PEOPLE, clock=FixedClock(SYNCED)) as running:
        yield running


@pytest.fixture
def store(engine: Engine, sandbox: Sandbox, config: CadenceConfig) -> Engine:
    sync_all(sandbox, engine, config, SYNCED)
    return engine


@pytest.fixture
def app(store: Engine, sandbox: Sandbox, config: CadenceConfig) -> WebhookApp:
    return make_app(store, crm_settings(sandbox), config, FixedClock(NOW))


@pytest.fixture
def client(app: WebhookApp) -> Client:
    return Client(app)
