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

from sqlalchemy import Connection, and_, literal, null, or_, select, union_all

from outreach.cadence_when import Engagement
from outreach.store.schema import Enrollment, Event, Touch

__all__ = ["load_engagement", "needs_engagement"]

_events = Event.__table__
_touches = Touch.__table__
_enrollments = Enrollment.__table__
#: event type -> the signal it gives
_SIGNAL = {"delivered": "delivered", "open": "opened", "click": "clicked", "reply": "replied"}


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
    if not ids:
        return {}
    machine = _events.c.payload["machine"].as_boolean()
    on_touches = (
        select(
            _touches.c.enrollment_id.label("enrollment_id"),
            _events.c.type.label("kind"),
            _touches.c.channel.label("channel"),
        )
        .select_from(_events.join(_touches, _touches.c.id == _events.c.touch_id))
        .where(
            _touches.c.enrollment_id.in_(ids),
            _events.c.type.in_(tuple(_SIGNAL)),
            _events.c.at <= now,
            # SendGrid's machine opens (a proxy fetching the pixel) are never opens.
            or_(_events.c.type != "open", machine.is_(None), machine.is_(False)),
        )
    )
    loose_replies = (
        select(
            _enrollments.c.id.label("enrollment_id"),
            _events.c.type.label("kind"),
            null().label("channel"),
        )
        .select_from(_events.join(_enrollments, _enrollments.c.person_id == _events.c.person_id))
        .where(
            _enrollments.c.id.in_(ids),
            _events.c.touch_id.is_(None),
            _events.c.type == "reply",
            and_(_events.c.at >= _enrollments.c.triggered_at, _events.c.at <= now),
        )
    )
    went_out = select(
        _touches.c.enrollment_id.label("enrollment_id"),
        literal("sent").label("kind"),
        _touches.c.channel.label("channel"),
    ).where(
        _touches.c.enrollment_id.in_(ids),
        _touches.c.status == "sent",
        _touches.c.delivery_at <= now,
    )
    found = {enrollment_id: Engagement() for enrollment_id in ids}
    for enrollment_id, kind, channel in conn.execute(
        union_all(on_touches, loose_replies, went_out)
    ):
        engagement = found[enrollment_id]
        if kind == "sent":
            engagement.channels.add(channel)
        else:
            engagement.add(_SIGNAL[kind])
    return found
