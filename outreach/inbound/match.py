"""Which touch a message answers: reply token, then thread, then sender.

Every email the engine sends carries a Reply-To ``replies+<token>@domain`` and a
Message-ID the ledger keeps (``touches.reply_token``, ``touches.message_id``). A message
is matched, in this order, by

1. ``token``: a token in one of its recipient addresses (To, Cc, Delivered-To,
   X-Original-To, X-Envelope-To), exact and unforgeable in practice;
2. ``thread``: a Message-ID the engine sent in In-Reply-To or References (for a bounce,
   the returned message's Message-ID);
3. ``sender``: the sender's address (for a bounce, the failed recipient), the most recent
   email touch to that address; a known address with no touch names only the person.

A whole batch is matched with one query per clue kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from outreach.contacts import ContactError, normalize_email
from outreach.inbound.classify import Classification
from outreach.inbound.message import Mail
from outreach.store.schema import ContactPoint, Touch

__all__ = ["Clues", "Match", "clues_for", "match_batch"]

_touches = Touch.__table__
_contacts = ContactPoint.__table__
#: the token the engine puts after the "+" of its Reply-To (secrets.token_hex(8))
_TOKEN = re.compile(r"\+([0-9a-f]{16})@", re.IGNORECASE)
#: a reply goes to the touch that was delivered (or may have been)
_ANSWERABLE = ("sent", "ambiguous")
_CHUNK = 500


@dataclass(frozen=True)
class Clues:
    """What one message offers for matching."""

    tokens: tuple[str, ...] = ()
    thread_ids: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    """The person (and touch) a message belongs to; ``by`` is None when nothing matched."""

    person_id: int | None = None
    touch_id: int | None = None
    contact_point_id: int | None = None
    enrollment_id: int | None = None
    by: str | None = None


NO_MATCH = Match()


def clues_for(mail: Mail, classification: Classification) -> Clues:
    """The tokens, thread ids and addresses ``mail`` can be matched by."""
    tokens = []
    for address in mail.recipients:
        found = _TOKEN.search(address)
        if found and found.group(1).lower() not in tokens:
            tokens.append(found.group(1).lower())
    # In-Reply-To names the message answered; References the thread, newest last.
    thread = [*mail.in_reply_to, *reversed(mail.references)]
    if mail.returned_message_id:
        thread.insert(0, mail.returned_message_id)
    if classification.kind == "bounce":
        raw_addresses = [b.address for b in classification.bounces]
    else:
        raw_addresses = [mail.from_address] if mail.from_address else []
    addresses = []
    for value in raw_addresses:
        try:
            address = normalize_email(value)
        except ContactError:
            continue
        if address not in addresses:
            addresses.append(address)
    return Clues(tuple(tokens), tuple(dict.fromkeys(thread)), tuple(addresses))


def match_batch(conn: Connection, batch: Sequence[Clues]) -> list[Match]:
    """One :class:`Match` per item of ``batch``, in order."""
    columns = (
        _touches.c.id,
        _touches.c.person_id,
        _touches.c.contact_point_id,
        _touches.c.enrollment_id,
    )
    by_token = {}
    tokens = sorted({t for clues in batch for t in clues.tokens})
    for chunk in _chunks(tokens):
        for row in conn.execute(
            select(*columns, _touches.c.reply_token).where(_touches.c.reply_token.in_(chunk))
        ):
            by_token[row.reply_token] = row
    by_thread = {}
    ids = sorted({i for clues in batch for i in clues.thread_ids})
    for chunk in _chunks(ids):
        for row in conn.execute(
            select(*columns, _touches.c.message_id).where(_touches.c.message_id.in_(chunk))
        ):
            by_thread[row.message_id] = row
    points = {}
    addresses = sorted({a for clues in batch for a in clues.addresses})
    for chunk in _chunks(addresses):
        for row in conn.execute(
            select(_contacts.c.id, _contacts.c.person_id, _contacts.c.value).where(
                _contacts.c.kind == "email", _contacts.c.value.in_(chunk)
            )
        ):
            points[row.value] = row
    latest = {}
    point_ids = sorted(row.id for row in points.values())
    for chunk in _chunks(point_ids):
        newest = (
            select(func.max(_touches.c.id))
            .where(
                _touches.c.contact_point_id.in_(chunk),
                _touches.c.channel == "email",
                _touches.c.status.in_(_ANSWERABLE),
            )
            .group_by(_touches.c.contact_point_id)
        )
        for row in conn.execute(select(*columns).where(_touches.c.id.in_(newest))):
            latest[row.contact_point_id] = row

    matches = []
    for clues in batch:
        found = next((by_token[t] for t in clues.tokens if t in by_token), None)
        if found is not None:
            matches.append(_from_touch(found, "token"))
            continue
        found = next((by_thread[i] for i in clues.thread_ids if i in by_thread), None)
        if found is not None:
            matches.append(_from_touch(found, "thread"))
            continue
        point = next((points[a] for a in clues.addresses if a in points), None)
        if point is None:
            matches.append(NO_MATCH)
        elif point.id in latest:
            touch = latest[point.id]
            matches.append(
                Match(touch.person_id, touch.id, point.id, touch.enrollment_id, "sender")
            )
        else:
            matches.append(Match(point.person_id, None, point.id, None, "sender"))
    return matches


def _from_touch(row, by: str) -> Match:
    return Match(row.person_id, row.id, row.contact_point_id, row.enrollment_id, by)


def _chunks(values: list, size: int = _CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]
