"""The plan stage: claim a batch of due enrollments, load their people, list the occurrences.

:func:`claim_due` selects the next batch of enrollments due before the horizon (in due
order, after a cursor) and locks them and their people (PostgreSQL: ``FOR UPDATE SKIP
LOCKED``; SQLite: the claim's ``BEGIN IMMEDIATE``), adds every other due enrollment of
those people and loads the people with their recent touch history. :func:`plan` turns
them into :class:`~outreach.engine.batch.Occurrence` items, person by person, each
person's in priority order (transactional first, then the cadence of the person's
current stage, then the earliest due), and ends the enrollments that cannot go on.

Invariant carried: one person's due touches are decided by one worker at a time and all
together, so the caps compare across cadences (invariant 1); work grows with the due
enrollments, not with the people (the next-due index).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from outreach.cadence import CadenceConfig
from outreach.cadence_when import Engagement, When
from outreach.engine.batch import Occurrence, TickSummary
from outreach.engine.engagement import load_engagement, needs_engagement
from outreach.engine.ledger import BatchWriter
from outreach.engine.person_state import PersonState, history_window, load_people
from outreach.engine.route import Route
from outreach.engine.throttle import rule
from outreach.store.bulk import select_dicts
from outreach.store.schema import Enrollment, Person

__all__ = ["DueBatch", "claim_due", "plan", "priority", "without_duplicates"]

_enrollments = Enrollment.__table__
_people = Person.__table__
#: what the tick reads of an enrollment (its own timestamps are written, never read)
_COLUMNS = [c for c in _enrollments.c if c.name not in ("created_at", "updated_at")]


@dataclass
class DueBatch:
    """A claimed batch: where the next one starts, its due enrollments and their people.

    ``engagement`` holds, for each enrollment whose due step has ``when:``, what the
    candidate did with its earlier touches (empty when no step of the file has ``when:``).
    """

    cursor: tuple[datetime, int]
    enrollments: list[dict[str, Any]]
    people: dict[int, PersonState]
    engagement: dict[int, Engagement] = field(default_factory=dict)


def claim_due(
    conn: Connection,
    config: CadenceConfig,
    now: datetime,
    limit: datetime,
    cursor: tuple[datetime, int] | None,
    *,
    batch_size: int,
    person_ids: Iterable[int] | None = None,
    postgres: bool = False,
) -> DueBatch | None:
    """Lock and load the next batch due before ``limit``; None when nothing is left.

    Strictly before: a deferral to exactly the horizon's edge (a switched-off channel is
    retried a day later, the default horizon) belongs to the next run, so a second worker
    of this run does not claim it again and count it twice.
    """
    query = (
        select(*_COLUMNS)
        .where(_enrollments.c.status == "active", _enrollments.c.next_due_at < limit)
        .order_by(_enrollments.c.next_due_at, _enrollments.c.id)
        .limit(batch_size)
    )
    if cursor is not None:
        query = query.where(
            or_(
                _enrollments.c.next_due_at > cursor[0],
                and_(_enrollments.c.next_due_at == cursor[0], _enrollments.c.id > cursor[1]),
            )
        )
    if person_ids is not None:
        query = query.where(_enrollments.c.person_id.in_(person_ids))
    if postgres:
        query = query.with_for_update(skip_locked=True)
    due = select_dicts(conn, query)
    if not due:
        return None
    new_cursor = (due[-1]["next_due_at"], due[-1]["id"])
    people_ids = {row["person_id"] for row in due}
    if postgres:
        people_ids = set(
            conn.execute(
                select(_people.c.id)
                .where(_people.c.id.in_(people_ids))
                .with_for_update(skip_locked=True)
            ).scalars()
        )
    if not people_ids:
        return DueBatch(new_cursor, [], {})
    # Every due enrollment of these people, so priorities compare across cadences:
    # those of this batch, and any others (usually none) outside it.
    enrollments = [row for row in due if row["person_id"] in people_ids]
    seen = {row["id"] for row in enrollments}
    query = select(_enrollments).where(
        _enrollments.c.person_id.in_(people_ids),
        _enrollments.c.status == "active",
        _enrollments.c.next_due_at < limit,
    )
    if postgres:
        query = query.with_for_update(skip_locked=True)
    also = query.with_only_columns(_enrollments.c.id)
    missing = [row.id for row in conn.execute(also).all() if row.id not in seen]
    if missing:
        enrollments.extend(
            select_dicts(conn, select(*_COLUMNS).where(_enrollments.c.id.in_(missing)))
        )
    policy = config.policy
    people = load_people(
        conn,
        people_ids,
        history_since=now - history_window(policy.min_gap, policy.max_touches.per),
        default_timezone=policy.default_timezone,
    )
    engagement: dict[int, Engagement] = {}
    if config.when_steps:  # nothing to read (and no cost) without a step with when:
        wanted = [row for row in enrollments if needs_engagement(row, config.when_steps)]
        engagement = load_engagement(conn, wanted, now)
    return DueBatch(new_cursor, enrollments, people, engagement)


def plan(
    due: DueBatch,
    config: CadenceConfig,
    writer: BatchWriter,
    summary: TickSummary,
    *,
    deferred: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[Occurrence]:
    """The batch's due occurrences, person by person, each person's in priority order.

    A step with ``when:`` is decided by the run that sends or schedules it, on the
    engagement known at that run (``due.engagement``, events up to ``now``), as every
    other rule of the step is: a nightly job that waited for the due time would send it a
    day late. One whose condition does not hold is skipped with the reason.

    An enrollment this tick already deferred is left alone (looking again would decide
    the same); one whose cadence left the cadence file is stopped, one past its last step
    completed, through ``writer``. Every one of a person who opted out of all contact is
    stopped too and comes out ``ended`` (the record stage counts it, in order). Each
    occurrence gets ``seq``, its place in this order.
    """
    order = {cadence.id: index for index, cadence in enumerate(config.cadences)}
    by_person: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for enrollment in due.enrollments:
        by_person[enrollment["person_id"]].append(enrollment)
    items: list[Occurrence] = []
    for person_id, enrollments in by_person.items():
        person = due.people.get(person_id)
        if person is None:
            continue
        enrollments = without_duplicates(enrollments, writer)
        if len(enrollments) > 1:
            enrollments = sorted(enrollments, key=lambda e: priority(e, person, config, order))
        for enrollment in enrollments:
            if enrollment["id"] in deferred:
                continue
            occ = _occurrence(enrollment, person, config, writer, summary)
            if occ is not None and occ.step.when is not None and not occ.outcome:
                _decide_when(occ, occ.step.when, due.engagement)
            if occ is not None:
                occ.seq = len(items)
                items.append(occ)
    return items


def _occurrence(
    enrollment: dict[str, Any],
    person: PersonState,
    config: CadenceConfig,
    writer: BatchWriter,
    summary: TickSummary,
) -> Occurrence | None:
    try:
        cadence = config.cadence(enrollment["cadence_id"])
    except KeyError:
        writer.end(enrollment, "stopped", "cadence no longer in the cadence file")
        return None
    if enrollment["next_step"] >= len(cadence.steps):
        writer.end(enrollment, "completed", None)
        return None
    step = cadence.steps[enrollment["next_step"]]
    counts = summary.steps[(cadence.id, step.id)]
    due = enrollment["step_due_at"] or enrollment["next_due_at"]
    not_before = max(due, enrollment["next_due_at"])
    occ = Occurrence(
        enrollment,
        person,
        person.record(enrollment["record_id"]),
        cadence,
        step,
        enrollment["next_occurrence"],
        due,
        not_before,
        counts,
        not_before=not_before,
    )
    if person.global_opt_out:
        writer.end(enrollment, "stopped", "opt_out: person opted out of all contact")
        occ.decide("ended", "opted out", tally="opted out")
    return occ


def _decide_when(
    occ: Occurrence,
    when: When,
    engagement: dict[int, Engagement],
) -> None:
    """Skip a ``when:`` step whose condition does not hold, with the reason."""
    seen = engagement.get(occ.enrollment["id"], Engagement())
    why = when.check(seen)
    if why is None:
        return
    reason = when.skip_reason(why)
    skip = Route(None, None, reason)
    occ.rule = rule(occ.cadence, occ.step, occ.enrollment, [], skip, False, None)
    occ.decide("skipped", reason, tally="when: not met")


def priority(
    enrollment: dict[str, Any],
    person: PersonState,
    config: CadenceConfig,
    order: dict[str, int],
) -> tuple[Any, ...]:
    """Sort key of a person's due enrollments: transactional, stage-specific, earliest."""
    try:
        cadence = config.cadence(enrollment["cadence_id"])
        index = order[cadence.id]
        step = cadence.steps[enrollment["next_step"]]
        transactional = step.transactional
    except (KeyError, IndexError, ValueError):
        return (2, 2, enrollment["next_due_at"], 0)
    specific = cadence.trigger.stage == person.current_stage
    return (
        0 if transactional else 1,
        0 if specific else 1,
        enrollment["step_due_at"] or enrollment["next_due_at"],
        index,
    )


def without_duplicates(items: list[dict[str, Any]], writer: BatchWriter) -> list[dict[str, Any]]:
    """One running enrollment per cadence and person; people merged later may have two."""
    newest: dict[str, dict[str, Any]] = {}
    for item in items:
        kept = newest.get(item["cadence_id"])
        if kept is None or item["triggered_at"] > kept["triggered_at"]:
            newest[item["cadence_id"]] = item
    for item in items:
        if newest[item["cadence_id"]] is not item:
            writer.end(item, "stopped", "duplicate: the person runs this cadence already")
    return [item for item in items if newest[item["cadence_id"]] is item]
