"""What the candidates of a batch did with their enrollments' touches, for steps with ``when:``.

:func:`load_engagement` reads, in **one** statement per batch, the engagement of only the
enrollments whose due step has a ``when:`` (see :mod:`outreach.cadence_when` for what each
signal means); a batch without such an enrollment costs nothing. It reads three things,
each bounded by the decision's moment ``now`` (events and deliveries after it are not
known yet):

- delivery-side events and replies that name a touch of the enrollment (``delivered``,
  ``open`` without ``machine: true``, ``click``, ``reply``);
- human replies of the person that name no touch (an SMS, a mail matched by its sender)
  since the enrollment began;
- the channels the enrollment's touches went out on (``sent``, delivered by ``now``): what
  says whether an open or a delivery could be reported at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import CompoundSelect, Connection, and_, literal, null, or_, select, union_all

from outreach.cadence_when import Engagement
from outreach.store.schema import Enrollment, Event, Touch

__all__ = ["load_engagement", "needs_engagement"]

_events = Event.__table__
_touches = Touch.__table__
_enrollments = Enrollment.__table__
#: event type -> the signal it gives
_SIGNAL = {"delivered": "delivered", "open": "opened", "click": "clicked", "reply": "replied"}
#: enrollments per statement (a batch is one statement up to this size; the statement binds
#: their ids three times, and SQLite binds at most 32,766 parameters)
_CHUNK = 5_000
#: the kind of the rows that list the enrollments' touches
_TOUCH = "touch"


def needs_engagement(enrollment: Mapping[str, Any], when_steps: frozenset[tuple[str, int]]) -> bool:
    """Whether the enrollment's due step has a ``when:`` (its engagement must be read)."""
    return (enrollment["cadence_id"], enrollment["next_step"]) in when_steps


def load_engagement(
    conn: Connection, enrollments: Iterable[Mapping[str, Any]], now: datetime
) -> dict[int, Engagement]:
    """The :class:`~outreach.cadence_when.Engagement` of each enrollment, as of ``now``.

    One statement for them all; an empty input reads nothing. Every enrollment given gets
    an entry (an empty one when nothing went out and nothing came back).
    """
    ids = sorted({row["id"] for row in enrollments})
    found = {enrollment_id: Engagement() for enrollment_id in ids}
    for start in range(0, len(ids), _CHUNK):
        statement = _statement(ids[start : start + _CHUNK], now)
        for enrollment_id, kind, channel, status, delivery_at in conn.execute(statement):
            engagement = found[enrollment_id]
            if kind == _TOUCH:
                if status == "sent" and delivery_at is not None and delivery_at <= now:
                    engagement.channels.add(channel)
            elif kind in _SIGNAL and (channel is not None or kind == "reply"):
                engagement.add(_SIGNAL[kind])
    return found


def _statement(ids: list[int], now: datetime) -> CompoundSelect:
    """The reads of :func:`load_engagement` as one ``UNION ALL``.

    Each branch reaches the rows by the enrollment, touch and person indexes, from the
    list of ids (which SQLite's planner sizes right, where it guesses a subquery's size).
    Filters that would tempt it onto a table-wide index instead (event type and time,
    touch status and delivery time) are applied to the few rows that come back, in Python;
    ``touch_id + 0`` keeps it off the index of events by touch, where the touch is none.
    """
    # First: its column types (delivery_at as an aware datetime) are the union's.
    touches = select(
        _touches.c.enrollment_id,
        literal(_TOUCH),
        _touches.c.channel,
        _touches.c.status,
        _touches.c.delivery_at,
    ).where(_touches.c.enrollment_id.in_(ids))
    machine = _events.c.payload["machine"].as_boolean()
    on_touches = (
        select(_touches.c.enrollment_id, _events.c.type, _touches.c.channel, null(), null())
        .select_from(_touches.join(_events, _events.c.touch_id == _touches.c.id))
        .where(
            _touches.c.enrollment_id.in_(ids),
            _events.c.at <= now,
            # SendGrid's machine opens (a proxy fetching the pixel) are never opens.
            or_(_events.c.type != "open", machine.is_(None), machine.is_(False)),
        )
    )
    # Events that name no touch (channel NULL here), from the enrollment's start on.
    loose = (
        select(_enrollments.c.id, _events.c.type, null(), null(), null())
        .select_from(_events.join(_enrollments, _enrollments.c.person_id == _events.c.person_id))
        .where(
            _enrollments.c.id.in_(ids),
            (_events.c.touch_id + 0).is_(None),
            and_(_events.c.at >= _enrollments.c.triggered_at, _events.c.at <= now),
        )
    )
    return union_all(touches, on_touches, loose)
