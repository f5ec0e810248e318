"""Candidate experience ratings for the report: the ``ratings`` object.

Scores come from ``rating`` events (``GET /r/<token>/<score>``, :mod:`outreach.ratings`):
one per touch, a later click replacing the score. :func:`summarize` counts the latest
score of each rated touch whose rating falls in ``[since, until)`` and breaks them down
by the stage the candidate was in when touched (the enrollment's ``trigger_stage``), by
recruiter (the candidate record's ``recruiter_name``, else its ``owner_id``, else
``(none)``) and by cadence. Every figure is one SQL aggregate: the work is the same for
ten ratings or ten million, with no per-row Python.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, literal, select

from outreach.ratings import SCORES
from outreach.store.schema import CandidateRecord, Enrollment, Event, Touch

__all__ = ["NO_RECRUITER", "summarize"]

#: the recruiter of a rating whose candidate record names none
NO_RECRUITER = "(none)"

_events = Event.__table__
_touches = Touch.__table__
_enrollments = Enrollment.__table__
_records = CandidateRecord.__table__


def summarize(conn: Connection, since: datetime, until: datetime) -> dict[str, Any]:
    """The report's ``ratings`` object for ratings given in ``[since, until)``.

    Returns ``{"count", "mean", "by_stage", "by_recruiter", "by_cadence",
    "distribution"}``: each ``by_*`` maps a name to ``{"count", "mean"}``;
    ``distribution`` maps ``"1"`` .. ``"5"`` to the number of touches with that score;
    ``mean`` is ``None`` when nothing was rated. Raises :class:`ValueError` when
    ``since`` is after ``until``.
    """
    if since > until:
        raise ValueError(f"since ({since.isoformat()}) is after until ({until.isoformat()})")
    score = _events.c.payload["score"].as_integer()
    ranked = (
        select(
            _events.c.touch_id,
            score.label("score"),
            func.row_number()
            .over(
                partition_by=_events.c.touch_id,
                order_by=(_events.c.at.desc(), _events.c.id.desc()),
            )
            .label("nth"),
        )
        .where(
            _events.c.type == "rating",
            _events.c.at >= since,
            _events.c.at < until,
            _events.c.touch_id.is_not(None),
        )
        .subquery("ranked")
    )
    recruiter = func.coalesce(
        func.nullif(_records.c.recruiter_name, ""),
        func.nullif(_records.c.owner_id, ""),
        literal(NO_RECRUITER),
    )
    rated = (
        select(
            ranked.c.score,
            _touches.c.cadence_id.label("cadence"),
            _enrollments.c.trigger_stage.label("stage"),
            recruiter.label("recruiter"),
        )
        .select_from(
            ranked.join(_touches, _touches.c.id == ranked.c.touch_id)
            .join(_enrollments, _enrollments.c.id == _touches.c.enrollment_id)
            .outerjoin(_records, _records.c.id == _enrollments.c.record_id)
        )
        .where(ranked.c.nth == 1, ranked.c.score.between(min(SCORES), max(SCORES)))
        .cte("rated")
    )

    def grouped(key: Any) -> dict[str, dict[str, Any]]:
        rows = conn.execute(
            select(key, func.count(), func.sum(rated.c.score)).group_by(key).order_by(key)
        )
        return {str(name): _cell(count, total) for name, count, total in rows}

    distribution = {str(n): 0 for n in SCORES}
    for value, count in conn.execute(select(rated.c.score, func.count()).group_by(rated.c.score)):
        distribution[str(value)] = count
    count = sum(distribution.values())
    total = sum(int(name) * n for name, n in distribution.items())
    return {
        "count": count,
        "mean": total / count if count else None,
        "by_stage": grouped(rated.c.stage),
        "by_recruiter": grouped(rated.c.recruiter),
        "by_cadence": grouped(rated.c.cadence),
        "distribution": distribution,
    }


def _cell(count: int, total: int | None) -> dict[str, Any]:
    return {"count": count, "mean": int(total or 0) / count if count else None}
