"""Reading people back out of the store, streamed in pages (``outreach candidates``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, select

from outreach.store.schema import CandidateRecord, ContactPoint, Person

__all__ = ["PAGE_SIZE", "iter_people"]

PAGE_SIZE = 1000
_people = Person.__table__
_records = CandidateRecord.__table__
_contacts = ContactPoint.__table__


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
                "suppressed": bool(c["suppressed"]),
                "suppressed_reason": c["suppressed_reason"],
            }
            for c in contacts
        ],
    }
