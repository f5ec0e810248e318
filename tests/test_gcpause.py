"""frozen_heap: the collector skips what was alive before a bulk job, and only meanwhile."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.gcpause import frozen_heap
from outreach.importer import import_file
from outreach.paths import default_config_dir


class _Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_for_the_block_and_thaws_after() -> None:
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_garbage_of_before_the_block_is_still_collected_after() -> None:
    cycle = _Cycle()
    ref = weakref.ref(cycle)
    with frozen_heap():
        del cycle
        gc.collect()
        assert ref() is not None  # frozen: the collector does not look at it
    gc.collect()
    assert ref() is None


def test_an_outer_freeze_is_kept() -> None:
    gc.freeze()
    outer = gc.get_freeze_count()
    with frozen_heap():
        pass
    assert gc.get_freeze_count() >= outer > 0


def test_thaws_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_import_runs_frozen_and_thaws(tmp_path: Path, engine, clock: FixedClock) -> None:
    data = tmp_path / "people.csv"
    data.write_text("source,external_id,email\nimport,1,ann@example.com\nimport,2,not-an-email\n")
    seen: list[int] = []
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    report = import_file(
        data, engine, config, clock, progress=lambda _: seen.append(gc.get_freeze_count())
    )
    assert report.loaded == 1 and len(report.errors) == 1
    assert seen and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0
