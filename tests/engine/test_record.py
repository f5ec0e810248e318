"""The record stage: outcomes into the ledger in planning order; results after a send."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from stage_data import NOW, config, occurrence, person

from outreach.engine.batch import PlannedTouch, TickSummary
from outreach.engine.ledger import BatchWriter
from outreach.engine.record import record
from outreach.engine.route import route_batch
from outreach.templates import RenderedMessage


def decided(cfg, who, outcome, *, seq, step=0, cadence="a"):
    """An occurrence as the render stage hands it on, with ``outcome``."""
    [occ] = route_batch([occurrence(cfg, who, cadence, step, seq=seq)], cfg, {"email", "sms"})
    occ.chosen = occ.route
    occ.rule = f"rule {seq}"
    if outcome == "claimed":
        occ.kind, occ.template, occ.variant = "email", "t", "a"
        occ.message = RenderedMessage("t", "email", "Hello Ann", subject="Hi Ann")
    elif outcome == "task":
        occ.kind, occ.template, occ.variant = "linkedin", "t", "a"
        occ.title, occ.body = "Connect with Ann", "Say hi"
    occ.decide(outcome, "why" if outcome in ("skipped", "holdout") else "")
    if outcome == "deferred":
        occ.decide("deferred", "channel off", NOW + timedelta(days=1))
    return occ


def test_outcomes_are_written_in_planning_order(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW + timedelta(minutes=15))
    items = [
        decided(cfg, person(3), "task", seq=2, step=1),
        decided(cfg, person(1), "claimed", seq=0),
        decided(cfg, person(2), "skipped", seq=1),
        decided(cfg, person(4), "deferred", seq=3),
    ]
    summary = TickSummary(now=NOW)
    record(items, writer, summary)
    assert [(row["person_id"], row["status"]) for row in writer.touches] == [
        (1, "claimed"),
        (2, "skipped"),
        (3, "task"),
    ]
    claimed = writer.touches[0]
    # the claim carries its lease, reply token and digest before any provider is called
    assert claimed["lease_until"] == NOW + timedelta(minutes=15) and claimed["reply_token"]
    assert claimed["idempotency_key"] == "100:one:0" and claimed["body_digest"]
    assert len(writer.pending) == 1 and len(writer.tasks) == 1
    assert writer.enrollments[403]["next_due_at"] == NOW + timedelta(days=1)
    assert writer.deferred == {403}
    # the claimed, skipped and task occurrences moved their enrollments on
    assert [writer.enrollments[i]["next_step"] for i in (100, 201, 302)] == [1, 1, 2]
    assert [(t.person_id, t.status) for t in summary.journal] == [
        (1, "scheduled"),
        (2, "skipped"),
        (3, "task"),
    ]
    assert isinstance(summary.journal[0], PlannedTouch)


def test_no_journal_without_a_summary(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW)
    record([decided(cfg, person(1), "holdout", seq=0)], writer, None)
    assert writer.touches[0]["status"] == "holdout" and writer.touches[0]["lease_until"] is None


def test_an_undecided_occurrence_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    writer = BatchWriter(NOW, "run-1", NOW)
    fine = decided(cfg, person(1), "claimed", seq=0)
    [undecided] = route_batch([occurrence(cfg, person(2), seq=1)], cfg, {"email"})
    with pytest.raises(ValueError, match="has no outcome"):
        record([fine, undecided], writer, None)
    assert writer.touches == [] and writer.enrollments == {}
