"""The engine's candidate model and the normaliser every input goes through.

Import files and CRM connectors hand raw mappings to :func:`normalize_record`, which
returns a :class:`CandidateIn` or raises :class:`RecordError` listing every problem of
that record. Unknown keys become custom fields (``candidate.custom.<key>`` in templates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from outreach.clock import parse_instant
from outreach.contacts import (
    ContactError,
    PhoneInfo,
    normalize_email,
    normalize_linkedin,
    normalize_phone,
)
from outreach.errors import RecordError
from outreach.profiles import normalize_facebook, normalize_x

__all__ = ["KNOWN_FIELDS", "CandidateIn", "normalize_record", "parse_bool"]

KNOWN_FIELDS: tuple[str, ...] = (
    "source",
    "external_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "linkedin_url",
    "x_url",
    "facebook_url",
    "timezone",
    "stage",
    "stage_entered_at",
    "job_title",
    "job_department",
    "recruiter_name",
    "recruiter_email",
    "recruiter_phone",
    "owner_id",
    "sms_consent",
    "email_opt_out",
    "preferred_channel",
    "tags",
    "updated_at",
)
_KNOWN = frozenset(KNOWN_FIELDS)
_CHANNELS = ("email", "sms", "linkedin", "call", "x", "facebook")
_LIMITS = {
    "source": 32,
    "external_id": 128,
    "first_name": 200,
    "last_name": 200,
    "source_stage": 200,
    "job_title": 300,
    "job_department": 300,
    "recruiter_name": 200,
    "owner_id": 128,
    "linkedin_url": 500,
    "x_url": 500,
    "facebook_url": 500,
}
_TRUE = frozenset({"true", "yes", "y", "1", "t", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "f", "off"})


@dataclass(slots=True)
class CandidateIn:
    """One normalised candidate record, ready for the store."""

    source: str
    external_id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: PhoneInfo | None = None
    linkedin_url: str | None = None
    #: ``https://x.com/<handle>`` (see :mod:`outreach.profiles`)
    x_url: str | None = None
    #: ``https://www.facebook.com/<name>`` or ``.../profile.php?id=<n>``
    facebook_url: str | None = None
    timezone: str | None = None
    source_stage: str | None = None
    stage: str | None = None
    stage_entered_at: datetime | None = None
    job_title: str | None = None
    job_department: str | None = None
    recruiter_name: str | None = None
    recruiter_email: str | None = None
    recruiter_phone: str | None = None
    owner_id: str | None = None
    sms_consent: bool | None = None
    #: the CRM says this person must not be emailed (HubSpot opt-out, Greenhouse can_email)
    email_opt_out: bool = False
    preferred_channel: str | None = None
    tags: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    source_updated_at: datetime | None = None
    #: contact values dropped in lenient mode (CRM data), for the sync summary
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        """``(source, external_id)``: the record's identity."""
        return (self.source, self.external_id)


def parse_bool(value: object) -> bool | None:
    """Read a yes/no value; ``None`` for empty; ``ValueError`` for anything else."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a yes/no value (true/false, yes/no, 1/0)")


@lru_cache(maxsize=1024)
def _valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def normalize_record(
    raw: Mapping[str, Any],
    *,
    where: str,
    default_region: str,
    canonical_stage: Callable[[str, str | None], str | None],
    default_source: str | None = None,
    strict_contacts: bool = True,
) -> CandidateIn:
    """Validate and normalise one raw record.

    ``where`` names the record in messages (``line 7``); ``canonical_stage`` maps
    ``(source, CRM stage name)`` to a canonical stage or ``None`` when unmapped. Raises
    :class:`RecordError` with every problem of the record joined by ``; ``. With
    ``strict_contacts=False`` (records from a CRM) a malformed email, phone or LinkedIn URL
    is dropped with a warning instead, as long as one usable contact point remains.
    """
    problems: list[str] = []
    contact_problems: list[str] = []
    get = raw.get

    source = _text(get("source")) or default_source
    external_id = _text(get("external_id"))
    if not source:
        problems.append("source is empty")
    else:
        source = source.lower()
    if not external_id:
        problems.append("external_id is empty")

    record = CandidateIn(source=source or "", external_id=external_id or "")
    record.first_name = _text(get("first_name"))
    record.last_name = _text(get("last_name"))

    email = _text(get("email"))
    if email:
        try:
            record.email = normalize_email(email)
        except ContactError as exc:
            contact_problems.append(str(exc))
    phone = _text(get("phone"))
    if phone:
        try:
            record.phone = normalize_phone(phone, default_region)
        except ContactError as exc:
            contact_problems.append(str(exc))
    linkedin = _text(get("linkedin_url"))
    if linkedin:
        try:
            record.linkedin_url = normalize_linkedin(linkedin)
        except ContactError as exc:
            contact_problems.append(str(exc))
    profiles = []
    for name, normalize in (("x_url", normalize_x), ("facebook_url", normalize_facebook)):
        given = _text(get(name))
        if given:
            profiles.append(given)
            try:
                setattr(record, name, normalize(given))
            except ContactError as exc:
                contact_problems.append(str(exc))
    usable = (
        record.email or record.phone or record.linkedin_url or record.x_url or record.facebook_url
    )
    if strict_contacts or not usable:
        problems.extend(contact_problems)
    else:
        record.warnings.extend(contact_problems)
    if not (email or phone or linkedin or profiles):
        problems.append(
            "no contact point: give at least one of email, phone, linkedin_url, x_url, facebook_url"
        )

    zone = _text(get("timezone"))
    if zone:
        if _valid_zone(zone):
            record.timezone = zone
        else:
            problems.append(f"timezone {zone!r} is not an IANA zone (e.g. America/Chicago)")

    stage = _text(get("stage"))
    record.source_stage = stage
    if stage and source:
        record.stage = canonical_stage(source, stage)

    for name in ("stage_entered_at", "updated_at"):
        value = get(name)
        if value is None or value == "":
            continue
        try:
            instant = value if isinstance(value, datetime) else parse_instant(str(value))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if name == "stage_entered_at":
            record.stage_entered_at = instant
        else:
            record.source_updated_at = instant

    record.job_title = _text(get("job_title"))
    record.job_department = _text(get("job_department"))
    record.recruiter_name = _text(get("recruiter_name"))
    recruiter_email = _text(get("recruiter_email"))
    if recruiter_email:
        try:
            record.recruiter_email = normalize_email(recruiter_email)
        except ContactError as exc:
            problems.append(f"recruiter_{exc}")
    recruiter_phone = _text(get("recruiter_phone"))
    if recruiter_phone:
        try:
            record.recruiter_phone = normalize_phone(recruiter_phone, default_region).e164
        except ContactError as exc:
            problems.append(f"recruiter_{exc}")
    record.owner_id = _text(get("owner_id"))

    try:
        record.sms_consent = parse_bool(get("sms_consent"))
    except ValueError as exc:
        problems.append(f"sms_consent: {exc}")
    try:
        record.email_opt_out = bool(parse_bool(get("email_opt_out")))
    except ValueError as exc:
        problems.append(f"email_opt_out: {exc}")

    preferred = _text(get("preferred_channel"))
    if preferred:
        if preferred.lower() in _CHANNELS:
            record.preferred_channel = preferred.lower()
        else:
            problems.append(f"preferred_channel {preferred!r} is not one of {', '.join(_CHANNELS)}")

    tags = get("tags")
    if isinstance(tags, list):
        record.tags = [str(t).strip() for t in tags if str(t).strip()]
    elif tags:
        record.tags = [t.strip() for t in str(tags).split(",") if t.strip()]

    record.custom = {
        key: value
        for key, value in raw.items()
        if key not in _KNOWN and key and value is not None and value != ""
    }

    for name, limit in _LIMITS.items():
        value = getattr(record, name)
        if isinstance(value, str) and len(value) > limit:
            problems.append(f"{name} is {len(value)} characters long; at most {limit} fit")

    if problems:
        label = f"{where} ({source} {external_id})" if source and external_id else where
        raise RecordError(label, "; ".join(problems))
    return record
