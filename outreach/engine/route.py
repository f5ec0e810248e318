"""Routing, variant choice and rendering of one touch.

:func:`route` picks the channel: ``channel: auto`` tries the person's preferred channel,
then ``policy.channel_order``; a fixed channel may name a ``fallback``. A channel is usable
only with a valid, unsuppressed contact point (and SMS consent and a mobile-capable number
for SMS). Every decision carries its reason.

This module is also the tick's route stage (:func:`route_batch`, at the end): each planned
occurrence gets its channel and contact point; after a permanent failure,
:func:`fallback_candidates` lists the next channels the step allows. Invariant carried: an
opted-out, unsubscribed, bounced or STOPped contact point, or SMS without consent, is never
chosen (invariant 4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from outreach.cadence import TASK_CHANNELS, CadenceConfig, Step
from outreach.contacts import SMS_CAPABLE_TYPES
from outreach.engine.person_state import Contact, PersonState
from outreach.templates import Vars, touch_vars

if TYPE_CHECKING:
    from channels.base import Channel
    from outreach.engine.batch import Occurrence

__all__ = [
    "NO_CHANNEL",
    "Route",
    "build_context",
    "can_deliver",
    "choose_variant",
    "fallback_candidates",
    "held_out",
    "route",
    "route_batch",
    "usable",
]

#: how the reason of a touch no channel may carry begins (opted out, unsubscribed, no
#: address): it becomes a recruiter task, and the SLA report counts it as unreachable
NO_CHANNEL = "no usable channel"


#: why an x or facebook step cannot go to a person (the contact kind is the channel's name)
_PROFILE_MISSING = {"x": "no X profile", "facebook": "no Facebook profile"}


@dataclass(frozen=True)
class Route:
    """Where a touch goes: a channel and contact point, or a recruiter task (``channel`` None)."""

    channel: str | None
    contact: Contact | None
    reason: str
    #: no channel was usable, but one would have been had it not been switched off
    blocked_by_off_channel: bool = False


def usable(channel: str, person: PersonState, config: CadenceConfig) -> tuple[Contact | None, str]:
    """The contact point ``channel`` would use for ``person``, or ``None`` and why not."""
    if channel == "email":
        contact = person.contact("email")
        if contact is None:
            return None, "no email address"
    elif channel in ("sms", "call"):
        contact = person.contact("phone")
        if contact is None:
            return None, "no phone number"
        if channel == "sms":
            if contact.phone_type not in SMS_CAPABLE_TYPES:
                return None, f"phone is {contact.phone_type or 'of unknown type'}, not mobile"
            if contact.sms_consent is False:
                # A withdrawal holds whatever the policy asks of consent.
                where = f" in {contact.consent_source}" if contact.consent_source else ""
                return None, f"no SMS consent (withdrawn{where})"
            if config.policy.sms_requires_consent and contact.sms_consent is not True:
                return None, "no SMS consent"
    elif channel == "linkedin":
        contact = person.contact("linkedin")
        if contact is None:
            return None, "no LinkedIn URL"
    elif channel in _PROFILE_MISSING:
        contact = person.contact(channel)
        if contact is None:
            return None, _PROFILE_MISSING[channel]
    else:
        return None, f"unknown channel {channel}"
    if contact.suppressed:
        return None, f"{contact.kind} suppressed ({contact.suppressed_reason or 'opted out'})"
    if not contact.valid:
        return None, f"{contact.kind} invalid"
    return contact, "ok"


def route(step: Step, person: PersonState, config: CadenceConfig, available: set[str]) -> Route:
    """Choose the channel for ``step`` and ``person`` among the ``available`` channels."""
    if step.channel == "auto":
        order = list(config.policy.channel_order)
        preferred = person.preferred_channel
        if preferred and preferred in order:
            order.remove(preferred)
            order.insert(0, preferred)
        elif preferred:
            order.insert(0, preferred)
        rule = "auto"
    else:
        order = [step.channel] + ([step.fallback] if step.fallback else [])
        rule = "fixed"
    refused: list[str] = []
    off_but_reachable = False
    for index, channel in enumerate(order):
        if channel not in available and channel not in TASK_CHANNELS:
            refused.append(f"{channel}: channel off")
            off_but_reachable = off_but_reachable or usable(channel, person, config)[0] is not None
            continue
        contact, why = usable(channel, person, config)
        if contact is None:
            refused.append(f"{channel}: {why}")
            continue
        if index == 0:
            reason = f"{rule}: {channel}" + (
                " (preferred)" if channel == person.preferred_channel else ""
            )
        else:
            reason = f"{rule}: {channel} after " + "; ".join(refused)
        return Route(channel, contact, reason)
    return Route(None, None, f"{NO_CHANNEL}: " + "; ".join(refused), off_but_reachable)


def choose_variant(person_id: int, cadence_id: str, step: Step) -> tuple[str, str]:
    """The variant label (``a``, ``b``, ...) and template for this person, stable per person.

    The bucket is a hash of person, cadence and step, so the same person always gets the
    same variant of a step, and the shares match the weights over many people.
    """
    if not step.variants:
        return "a", step.template
    digest = hashlib.sha256(f"{person_id}:{cadence_id}:{step.id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    threshold = 100 - sum(v.weight for v in step.variants)
    if bucket < threshold:
        return "a", step.template
    for index, variant in enumerate(step.variants):
        threshold += variant.weight
        if bucket < threshold:
            return chr(ord("b") + index), variant.template
    return chr(ord("b") + len(step.variants) - 1), step.variants[-1].template


def held_out(person_id: int, cadence_id: str, step: Step) -> bool:
    """Whether this person's occurrences of ``step`` are held back (``Step.holdout`` percent).

    A stable hash of person, cadence and step with its own salt, so the holdout group is
    the same on every run and independent of the A/B bucket of :func:`choose_variant`.
    """
    if not step.holdout:
        return False
    digest = hashlib.sha256(f"holdout:{person_id}:{cadence_id}:{step.id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100 < step.holdout


def build_context(
    person: PersonState,
    record: dict[str, Any],
    config: CadenceConfig,
    *,
    cadence_id: str,
    step_id: str,
    variant: str,
    rating_urls: list[str] | None = None,
    candidate_fields: Collection[str] | None = None,
) -> dict[str, Any]:
    """The template variables (DESIGN.md, Templates) for one touch.

    ``rating_urls`` (the touch's five one-click rating links, score 1 first) becomes
    ``touch.rating_urls``; without it (no ``OUTREACH_PUBLIC_URL``) a template that uses it
    fails to render with a message that names the variable to set.
    ``candidate_fields`` limits ``candidate`` to those fields, for a template known to
    read no others (:meth:`outreach.templates.TemplateStore.reads`).
    """
    get = record.get
    if candidate_fields is None:
        best = _best_contacts(person.contacts)
        email, phone, linkedin = best.get("email"), best.get("phone"), best.get("linkedin")
        x, facebook = best.get("x"), best.get("facebook")
        candidate = Vars(
            "candidate",
            {
                "first_name": get("first_name"),
                "last_name": get("last_name"),
                "email": email.value if email else None,
                "phone": phone.value if phone else None,
                "linkedin_url": linkedin.value if linkedin else None,
                "x_url": x.value if x else None,
                "facebook_url": facebook.value if facebook else None,
                "source": get("source"),
                "stage": get("stage"),
                "tags": list(get("tags") or []),
            },
        )
        candidate["custom"] = _custom(get("custom"))
    else:
        candidate = _candidate_fields(person, record, candidate_fields)
    job_values = (get("job_title"), get("job_department"))
    job = _JOBS.get(job_values)
    if job is None:
        job = _share(_JOBS, "job", ("title", "department"), job_values)
    recruiter_values = (get("recruiter_name"), get("recruiter_email"), get("recruiter_phone"))
    recruiter = _RECRUITERS.get(recruiter_values)
    if recruiter is None:
        recruiter = _share(_RECRUITERS, "recruiter", ("name", "email", "phone"), recruiter_values)
    company_values = (config.company.name,)
    company = _COMPANIES.get(company_values)
    if company is None:
        company = _share(_COMPANIES, "company", ("name",), company_values)
    return {
        "candidate": candidate,
        "job": job,
        "recruiter": recruiter,
        "company": company,
        "touch": touch_vars(cadence_id, step_id, variant, rating_urls),
    }


def _custom(values: Mapping[str, Any] | None) -> Vars:
    """``candidate.custom``: one shared empty ``Vars`` for the many records without any
    (templates cannot change their variables)."""
    return Vars("candidate.custom", values) if values else _NO_CUSTOM


_NO_CUSTOM = Vars("candidate.custom")


def _candidate_fields(
    person: PersonState, record: Mapping[str, Any], fields: Collection[str]
) -> Vars:
    """``candidate`` with only ``fields`` (of those :func:`build_context` gives it), each
    with the value it gives it; contact points are looked up only when one is asked for."""
    values: dict[str, Any] = {}
    contacts = None
    for field in fields:
        if field in _RECORD_FIELDS:
            values[field] = record.get(field)
        elif field in _CONTACT_FIELDS:
            if contacts is None:
                contacts = _best_contacts(person.contacts)
            contact = contacts.get(_CONTACT_FIELDS[field])
            values[field] = contact.value if contact else None
        elif field == "tags":
            values[field] = list(record.get("tags") or [])
        elif field == "custom":
            values[field] = _custom(record.get("custom"))
    return Vars("candidate", values)


_RECORD_FIELDS = frozenset({"first_name", "last_name", "source", "stage"})
#: contact fields, by the contact kind :func:`_best_contacts` picks them from
_CONTACT_FIELDS = {
    "email": "email",
    "phone": "phone",
    "linkedin_url": "linkedin",
    "x_url": "x",
    "facebook_url": "facebook",
}

#: template variables many touches have in common (a job, a recruiter, the company), by
#: their values: each made once and shared, since templates cannot change a ``Vars`` (the
#: sandbox refuses it); only text is kept here (see :func:`_share`)
_JOBS: dict[tuple[Any, ...], Vars] = {}
_RECRUITERS: dict[tuple[Any, ...], Vars] = {}
_COMPANIES: dict[tuple[Any, ...], Vars] = {}
#: distinct ones kept before starting afresh (a tick sees far fewer jobs and recruiters)
_SHARED_MAX = 10_000
_TEXT = frozenset({str, type(None)})


def _share(
    shared: dict[tuple[Any, ...], Vars], label: str, keys: tuple[str, ...], values: tuple[Any, ...]
) -> Vars:
    """``Vars(label, dict(zip(keys, values)))``, kept in ``shared`` when the values are text.

    Only strings (and missing values) are kept: they cannot change, and equal text is the
    same value (``1 == True`` must not make two different values one).
    """
    made = Vars(label, dict(zip(keys, values, strict=True)))
    if _TEXT.issuperset(map(type, values)):
        if len(shared) >= _SHARED_MAX:
            shared.clear()
        shared[values] = made
    return made


def _best_contacts(contacts: list[Contact]) -> dict[str, Contact]:
    """The contact of each kind :meth:`PersonState.contact` picks, in one pass.

    The same order (unsuppressed, then valid, then newest id; the first of equals), without
    a filtered, sorted list per kind for every touch.
    """
    best: dict[str, Contact] = {}
    for contact in contacts:
        kind = contact.kind
        held = best.get(kind)
        if held is None or (not contact.suppressed, contact.valid, contact.id) > (
            not held.suppressed,
            held.valid,
            held.id,
        ):
            best[kind] = contact
    return best


# -- the tick's route stage ------------------------------------------------------------------


def route_batch(
    items: list[Occurrence], config: CadenceConfig, available: set[str]
) -> list[Occurrence]:
    """The route stage: each occurrence's channel among the ``available`` ones; return them.

    Routing reads only the person's contact points and consent, which a tick does not
    change while it decides, so the whole batch is routed at once.
    """
    for occ in items:
        occ.route = route(occ.step, occ.person, config, available)
    return items


def can_deliver(channel: Channel, send_at: datetime, now: datetime) -> bool:
    """Whether ``channel`` can deliver at ``send_at``: now when due, else by scheduling."""
    ahead = send_at - now
    if ahead <= timedelta(0):
        return True
    return channel.min_schedule_ahead <= ahead <= channel.max_schedule_ahead


def fallback_candidates(
    step: Step,
    person: PersonState,
    config: CadenceConfig,
    channels: Mapping[str, Channel],
    tried: list[str],
    send_at: datetime,
    now: datetime,
) -> tuple[list[tuple[str, Contact]], bool]:
    """The channels a failed touch may try next, in order, with their contact points.

    Only message channels that are on, not tried yet, usable for the person and able to
    deliver at ``send_at``. The flag says a usable channel exists that cannot deliver at
    that instant (it cannot schedule that far ahead, or that soon): the occurrence is then
    re-planned rather than sent at the wrong time.
    """
    if step.channel == "auto":
        order = list(config.policy.channel_order)
    else:
        order = [step.channel] + ([step.fallback] if step.fallback else [])
    later = False
    out: list[tuple[str, Contact]] = []
    for name in order:
        if name in tried or name in TASK_CHANNELS or name not in channels:
            continue
        contact, _why = usable(name, person, config)
        if contact is None:
            continue
        if not can_deliver(channels[name], send_at, now):
            later = True
            continue
        out.append((name, contact))
    return out, later
