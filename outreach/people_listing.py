"""Reading people back out of the store, streamed in pages (``outreach candidates``), and
why the records of one person are one person (``outreach candidates --explain ID``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, and_, select

from outreach.store.candidates import name_key
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Person, Suppression

__all__ = ["PAGE_SIZE", "explain_person", "iter_people"]

PAGE_SIZE = 1000
_people = Person.__table__
_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__
_events = Event.__table__
_suppressions = Suppression.__table__


def iter_people(
    engine: Engine, *, stage: str | None = None, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield one dict per person, in id order, with records and contact points.

    A person's ``stage`` is the stage of their most recently entered record (one human
    in two CRMs has one current stage). With ``stage`` only people currently in that
    stage are yielded. Memory is bounded by :data:`PAGE_SIZE`, not by the store.
    """
    after = 0
    yielded = 0
    while True:
        with engine.connect() as conn:
            query = select(_people).where(_people.c.id > after).order_by(_people.c.id)
            if stage is not None:
                query = query.where(
                    _people.c.id.in_(select(_records.c.person_id).where(_records.c.stage == stage))
                )
            people = list(conn.execute(query.limit(PAGE_SIZE)).mappings())
            if not people:
                return
            ids = [p["id"] for p in people]
            records: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in conn.execute(
                select(_records).where(_records.c.person_id.in_(ids)).order_by(_records.c.id)
            ).mappings():
                records[row["person_id"]].append(dict(row))
            contacts: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for row in conn.execute(
                select(_contacts).where(_contacts.c.person_id.in_(ids)).order_by(_contacts.c.id)
            ).mappings():
                contacts[row["person_id"]].append(dict(row))
        for person in people:
            item = _person(person, records[person["id"]], contacts[person["id"]])
            if stage is not None and item["stage"] != stage:
                continue
            yield item
            yielded += 1
            if limit is not None and yielded >= limit:
                return
        after = ids[-1]


def _person(
    person: Any, records: list[dict[str, Any]], contacts: list[dict[str, Any]]
) -> dict[str, Any]:
    staged = [r for r in records if r["stage"] is not None and r["stage_entered_at"] is not None]
    current = max(staged, key=lambda r: r["stage_entered_at"]) if staged else None
    named = records[-1] if records else {}
    return {
        "id": person["id"],
        "first_name": named.get("first_name"),
        "last_name": named.get("last_name"),
        "stage": current["stage"] if current else None,
        "stage_entered_at": current["stage_entered_at"] if current else None,
        "global_opt_out": bool(person["global_opt_out"]),
        "records": [
            {
                "source": r["source"],
                "external_id": r["external_id"],
                "stage": r["stage"],
                "source_stage": r["source_stage"],
                "stage_entered_at": r["stage_entered_at"],
                "job_title": r["job_title"],
                "owner_id": r["owner_id"],
                "timezone": r["timezone"],
            }
            for r in records
        ],
        "contacts": [
            {
                "kind": c["kind"],
                "value": c["value"],
                "valid": bool(c["valid"]),
                "phone_type": c["phone_type"],
                "sms_consent": c["sms_consent"],
                "consent_source": c["consent_source"],
                "consent_at": c["consent_at"],
                "shared": bool(c["shared"]),
                "suppressed": bool(c["suppressed"]),
                "suppressed_reason": c["suppressed_reason"],
            }
            for c in contacts
        ],
    }


def explain_person(engine: Engine, person_id: int) -> dict[str, Any] | None:
    """Which records make person ``person_id`` and why; ``None`` when there is no such person.

    ``links`` names, for each pair of the person's records that the matching rule joins
    directly, what they share: the same email address, the same LinkedIn profile, or the
    same phone with names that agree (or one record with neither name nor email). A record
    joined only through others has no link of its own; ``merges`` lists the people merged
    into this one. ``contacts`` carries each point's state, the other people sharing a
    phone, and the suppression list entries on it.
    """
    with engine.connect() as conn:
        person = conn.execute(select(_people).where(_people.c.id == person_id)).mappings().first()
        if person is None:
            return None
        records = [
            dict(row)
            for row in conn.execute(
                select(_records).where(_records.c.person_id == person_id).order_by(_records.c.id)
            ).mappings()
        ]
        contacts = [
            dict(row)
            for row in conn.execute(
                select(_contacts).where(_contacts.c.person_id == person_id).order_by(_contacts.c.id)
            ).mappings()
        ]
        others: dict[str, list[int]] = defaultdict(list)
        phones = [c["value"] for c in contacts if c["kind"] == "phone"]
        if phones:
            for value, other in conn.execute(
                select(_contacts.c.value, _contacts.c.person_id)
                .where(
                    _contacts.c.kind == "phone",
                    _contacts.c.value.in_(phones),
                    _contacts.c.person_id != person_id,
                )
                .order_by(_contacts.c.person_id)
            ):
                others[value].append(other)
        listed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in conn.execute(
            select(_suppressions)
            .join(
                _contacts,
                and_(
                    _contacts.c.kind == _suppressions.c.kind,
                    _contacts.c.value == _suppressions.c.value,
                ),
            )
            .where(_contacts.c.person_id == person_id)
            .order_by(_suppressions.c.id)
        ).mappings():
            listed[(row["kind"], row["value"])].append(
                {
                    "scope": row["scope"],
                    "reason": row["reason"],
                    "source": row["source"],
                    "at": row["at"],
                }
            )
        merges = [
            payload.get("merged_people", [])
            for payload in conn.execute(
                select(_events.c.payload).where(
                    _events.c.person_id == person_id, _events.c.type == "merge"
                )
            ).scalars()
        ]
    return {
        "id": person_id,
        "global_opt_out": bool(person["global_opt_out"]),
        "records": [
            {
                "source": r["source"],
                "external_id": r["external_id"],
                "first_name": r["first_name"],
                "last_name": r["last_name"],
                "email": r["email"],
                "phone": r["phone"],
                "linkedin_url": r["linkedin_url"],
                "x_url": r["x_url"],
                "facebook_url": r["facebook_url"],
                "sms_consent": r["sms_consent"],
                "sms_consent_at": r["sms_consent_at"],
            }
            for r in records
        ],
        "links": _links(records),
        "merges": sorted(p for group in merges for p in group),
        "contacts": [
            {
                "kind": c["kind"],
                "value": c["value"],
                "shared_with": others.get(c["value"], []) if c["kind"] == "phone" else [],
                "valid": bool(c["valid"]),
                "sms_consent": c["sms_consent"],
                "consent_source": c["consent_source"],
                "consent_at": c["consent_at"],
                "suppressed": bool(c["suppressed"]),
                "suppressed_reason": c["suppressed_reason"],
                "suppressions": listed.get((c["kind"], c["value"]), []),
            }
            for c in contacts
        ],
    }


def _links(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    links = []
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            why = []
            if a["email"] and a["email"] == b["email"]:
                why.append("same email")
            if a["linkedin_url"] and a["linkedin_url"] == b["linkedin_url"]:
                why.append("same LinkedIn profile")
            if a["x_url"] and a["x_url"] == b["x_url"]:
                why.append("same X profile")
            if a["facebook_url"] and a["facebook_url"] == b["facebook_url"]:
                why.append("same Facebook profile")
            if a["phone"] and a["phone"] == b["phone"]:
                key_a = name_key(a["first_name"], a["last_name"])
                key_b = name_key(b["first_name"], b["last_name"])
                if key_a is not None and key_a == key_b:
                    why.append("same phone, names agree")
                elif (key_a is None and not a["email"]) or (key_b is None and not b["email"]):
                    why.append("same phone, one record has neither name nor email")
            if why:
                links.append(
                    {
                        "records": [
                            f"{a['source']}:{a['external_id']}",
                            f"{b['source']}:{b['external_id']}",
                        ],
                        "why": why,
                    }
                )
    return links
