"""Inbound events: replies, opt-outs, bounces and unsubscribes, from a file or a provider.

``outreach events import FILE`` reads JSONL (:func:`read_jsonl`); ``outreach serve`` and
the sandbox turn provider webhooks into the same :class:`InboundEvent` with
:func:`from_sendgrid` and :func:`from_twilio_inbound`. Either way :func:`ingest_events`
resolves each event to a person and records it in ``events``; the next ``outreach run``
applies it (:func:`outreach.engine.enroll.process_events`: a reply stops cadences, an
opt-out, unsubscribe or bounce suppresses the contact point).

An event names its person by ``touch_id`` (a touch the engine sent: custom args and
status callbacks carry it), by ``address`` (an email address, phone number or LinkedIn
URL, matched on its normalised value) or by ``source`` + ``external_id`` (a CRM record).
An event resolved through an address or a touch suppresses that one contact point; an
``opt_out`` or ``unsubscribe`` without a channel that names only a record opts the person
out globally.

An opt-out, unsubscribe or bounce that names an address also goes on the suppression list
(:mod:`outreach.store.suppressions`) as it is ingested, matched or not: one for an address
nobody in the store has yet still holds when that person is imported (it is reported as
unmatched, "kept on the suppression list"). A phone two people share (an office line) is
no one person's: a STOP from it suppresses the phone for everyone who has it and stops
no one's cadence, and a reply from it goes to the one holder who was texted on it, or,
when that is not exactly one, is reported unmatched rather than guessed.

Ingest streams in batches with one query per batch and lookup kind. Each event gets a
``dedupe_key`` (``inbound:<id>`` from the provider's event id, else a hash of what the
event says), so feeding the same events twice records nothing new. A bad line or an
event that matches no one is reported with its place (``events.jsonl:4``) and skipped;
the rest goes on (DESIGN.md invariant 7). Messages and logs name places and candidate
ids, never an address or phone number.

Delivery-side signals (SendGrid ``delivered``, ``open``, ``click``; Twilio's ``delivered``
status) are a separate :class:`DeliveryEvent`, recorded by :func:`ingest_deliveries` for
the report only: each names its touch (an item that names none is ignored), is stored
with ``processed_at`` set, so the engine never acts on it, and never carries an address
or a clicked URL. An open that SendGrid marks ``sg_machine_open`` (a mail client fetching
the message by itself, as Apple Mail Privacy Protection does) is stored with
``machine: true`` and is never a sign of interest.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import Connection, Engine, and_, or_, select
from sqlalchemy.exc import SQLAlchemyError

from outreach.contacts import ContactError, normalize_email, normalize_linkedin, normalize_phone
from outreach.errors import InputError
from outreach.profiles import normalize_facebook, normalize_x, profile_kind
from outreach.store import suppressions
from outreach.store.bulk import bulk_write
from outreach.store.schema import CandidateRecord, ContactPoint, Event, Touch

__all__ = [
    "DELIVERY_TYPES",
    "HELP_KEYWORDS",
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "DeliveryEvent",
    "DeliveryReport",
    "InboundEvent",
    "IngestReport",
    "SendGridBatch",
    "from_sendgrid",
    "from_twilio_inbound",
    "ingest_deliveries",
    "ingest_events",
    "read_jsonl",
    "read_sendgrid_batch",
    "twilio_sid",
]

log = logging.getLogger("outreach.events")

_events = Event.__table__
_contacts = ContactPoint.__table__
_records = CandidateRecord.__table__
_touches = Touch.__table__

BATCH_SIZE = 500
#: the largest id a touch can have (an INTEGER column, 32 bits on PostgreSQL; a larger
#: number in a query is an error there that would fail the whole batch)
MAX_ID = 2**31 - 1
#: the last Unix time a datetime holds (9999-12-31T23:59:59Z)
_MAX_EPOCH = 253_402_300_799
#: how far past now a provider's event time may be before it is refused as bogus
_FUTURE_SLACK = timedelta(days=1)
#: deepest JSON nesting of one SendGrid item (real items nest two or three levels)
MAX_ITEM_DEPTH = 32
_KEY_PREFIX = "inbound:"
_MAX_KEY = 200
_CHANNEL_KIND = {
    "email": "email",
    "sms": "phone",
    "call": "phone",
    "linkedin": "linkedin",
    "x": "x",
    "facebook": "facebook",
}
_KIND_CHANNEL = {
    "email": "email",
    "phone": "sms",
    "linkedin": "linkedin",
    "x": "x",
    "facebook": "facebook",
}
_KIND_NAME = {
    "email": "email address",
    "phone": "phone number",
    "linkedin": "LinkedIn profile",
    "x": "X profile",
    "facebook": "Facebook profile",
}

_SUPPRESSING = {"opt_out": "opted out", "unsubscribe": "unsubscribed", "bounce": "bounced"}

#: event types of delivery-side signals (:class:`DeliveryEvent`); the engine ignores them
DELIVERY_TYPES = ("delivered", "open", "click")
#: SendGrid Event Webhook items that become delivery-side events
_SENDGRID_DELIVERY = frozenset(DELIVERY_TYPES)

#: Twilio's default opt-out keywords (a message that is exactly one of them, any case).
OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
#: Twilio's default opt-in keywords: Twilio lifts its own block; nothing is recorded here.
OPT_IN_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})
#: Twilio answers these itself; nothing is recorded here.
HELP_KEYWORDS = frozenset({"HELP", "INFO"})


def _number_as_text(value: Any) -> Any:
    # CRMs and providers hand out numeric ids; JSON keeps them as numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _blank_is_none(value: str | None) -> str | None:
    if value and "\x00" in value:
        raise ValueError("contains a NUL character")  # PostgreSQL text refuses it
    return value or None


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            "needs a time zone offset, e.g. 2026-11-25T09:00:00-05:00 or 2026-11-25T14:00:00Z"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        raise ValueError("is out of range (before year 1 or after 9999 in UTC)") from None


class InboundEvent(BaseModel):
    """One inbound signal, as a file line or a provider adapter states it.

    At least one of ``address``, ``source`` + ``external_id`` or ``touch_id`` names the
    person. ``at`` must carry a time zone. ``id`` is the provider's event id: when given,
    it alone decides whether the event was already recorded.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["reply", "opt_out", "bounce", "unsubscribe"]
    channel: Literal["email", "sms", "linkedin", "call", "x", "facebook"] | None = None
    address: str | None = Field(default=None, max_length=500)
    source: str | None = Field(default=None, max_length=32)
    external_id: str | None = Field(default=None, max_length=128)
    touch_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    at: datetime
    id: str | None = Field(default=None, max_length=500)
    detail: str | None = Field(default=None, max_length=2000)

    @field_validator("external_id", "id", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return _number_as_text(value)

    @field_validator("address", "source", "external_id", "id", "detail")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return _blank_is_none(value)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _aware_utc(value)

    @model_validator(mode="after")
    def _names_someone(self) -> InboundEvent:
        if (self.source is None) != (self.external_id is None):
            raise ValueError("source and external_id go together: give both or neither")
        if self.address is None and self.source is None and self.touch_id is None:
            raise ValueError("needs address, source and external_id, or touch_id")
        return self


class DeliveryEvent(BaseModel):
    """A delivery-side signal about one touch: delivered, opened or clicked.

    Kept apart from :class:`InboundEvent` so the JSONL ``events import`` contract (reply,
    opt_out, bounce, unsubscribe) stays as it is. ``machine`` is SendGrid's
    ``sg_machine_open`` and belongs to opens only. ``id`` is the provider's event id and
    alone decides whether the event was already recorded. No address and no URL: the
    touch says who, and a clicked link can hold personal data.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["delivered", "open", "click"]
    channel: Literal["email", "sms"]
    touch_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    at: datetime
    id: str | None = Field(default=None, max_length=500)
    machine: bool | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return _number_as_text(value)

    @field_validator("id")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return _blank_is_none(value)

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return _aware_utc(value)

    @model_validator(mode="after")
    def _machine_on_opens(self) -> DeliveryEvent:
        if self.type == "open" and self.machine is None:
            self.machine = False
        if self.type != "open" and self.machine is not None:
            raise ValueError("machine: only an open is a machine open or not")
        return self

    def payload(self) -> dict[str, Any]:
        """The ``events.payload`` of this signal: ``{"machine": bool}`` for an open, else
        empty."""
        return {"machine": bool(self.machine)} if self.type == "open" else {}


@dataclass
class DeliveryReport:
    """What one :func:`ingest_deliveries` did; ``ignored`` and ``bad`` hold one message
    per item (an item naming no known touch is ignored, one the store refuses is bad)."""

    read: int = 0
    recorded: int = 0
    duplicates: int = 0
    ignored: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    #: where each duplicate came from, when the caller asked (passed a report with a list)
    duplicate_places: list[str] | None = None

    def add_duplicate(self, where: str) -> None:
        """Count a duplicate (and note its place when asked to)."""
        self.duplicates += 1
        if self.duplicate_places is not None:
            self.duplicate_places.append(where)


@dataclass
class IngestReport:
    """What one ingest did; ``unmatched`` and ``bad`` hold one message per event."""

    read: int = 0
    recorded: int = 0
    duplicates: int = 0
    unmatched: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)

    #: where each duplicate came from, when the caller asked (passed a report with a list)
    duplicate_places: list[str] | None = None

    def add_duplicate(self, where: str) -> None:
        """Count a duplicate (and note its place when asked to)."""
        self.duplicates += 1
        if self.duplicate_places is not None:
            self.duplicate_places.append(where)


# -- reading ------------------------------------------------------------------------------


def read_jsonl(path: Path | str) -> Iterator[tuple[str, InboundEvent | str]]:
    """Yield ``("FILE:LINE", event)`` per line, or ``("FILE:LINE", reason)`` for a bad one.

    Blank lines are skipped; a line that is not UTF-8 is a bad line (its byte and column
    named) and the lines after it go on. Raises :class:`InputError` when the file cannot be
    read at all (missing, unreadable).
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
                yield (
                    f"{path}:{number}",
                    f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
                    "save the file as UTF-8",
                )
                continue
            if text.strip():
                yield f"{path}:{number}", _parse_line(text)


def _parse_line(text: str) -> InboundEvent | str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return _validate(value)


def _validate(value: dict[str, Any]) -> InboundEvent | str:
    try:
        return InboundEvent.model_validate(value)
    except ValidationError as exc:
        return _describe(exc)


def _describe(exc: ValidationError) -> str:
    """Field and problem of each error; never the input value (it may be an address)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        place = ".".join(str(part) for part in error["loc"]) or "event"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = (
                "is not a field; use type, channel, address, source, external_id, "
                "touch_id, at, id, detail"
            )
        problems.append(f"{place}: {message}")
    return "; ".join(problems)


# -- provider adapters --------------------------------------------------------------------


def from_sendgrid(items: list[Any]) -> list[InboundEvent]:
    """SendGrid Event Webhook items as inbound events; delivery-side events are left out.

    ``bounce`` (not ``blocked``, a temporary block) and ``dropped`` for a "Bounced
    Address" are bounces; ``spamreport`` (and a drop for a "Spam Reporting Address") is an
    email opt-out; ``unsubscribe``, ``group_unsubscribe`` (and a drop for an "Unsubscribed
    Address") are email unsubscribes. ``processed``, ``deferred``, ``delivered``, ``open``
    and ``click`` are not inbound events (:func:`read_sendgrid_batch` reads them as
    :class:`DeliveryEvent`). The ``touch_id`` custom arg, which SendGrid puts at the top
    level of each item, names the touch. A malformed item is logged (by its index in the
    batch, with what is wrong) and left out.
    """
    found = []
    for index, item in enumerate(items):
        event = _sendgrid_item(item, None)
        if isinstance(event, str):
            log.warning("sendgrid batch [%d] left out: %s", index, event)
        elif isinstance(event, InboundEvent):
            found.append(event)
    return found


@dataclass
class SendGridBatch:
    """One Event Webhook post, item by item (:func:`read_sendgrid_batch`).

    ``items`` counts the array's items; ``events`` holds ``("[index]", event)`` for each
    inbound event and ``("[index]", reason)`` for each item that cannot be read (of any
    kind), in order, ready for :func:`ingest_events` (which counts the reasons as
    ``bad``). ``deliveries`` holds ``("[index]", event)`` for each ``delivered``,
    ``open`` and ``click`` item, ready for :func:`ingest_deliveries`. Other items
    (``processed``, ``deferred`` ...) are in neither.
    """

    items: int = 0
    events: list[tuple[str, InboundEvent | str]] = field(default_factory=list)
    deliveries: list[tuple[str, DeliveryEvent]] = field(default_factory=list)


def read_sendgrid_batch(body: bytes, *, now: datetime | None = None) -> SendGridBatch:
    """Read an Event Webhook body (a JSON array) item by item.

    Each item is validated alone: an item that is not an object, has a timestamp that is
    not a Unix time (NaN, infinite, negative, past year 9999, more than a day after
    ``now``), a field of the wrong type, text with NUL characters or lone surrogates, or
    nesting deeper than :data:`MAX_ITEM_DEPTH` is a reason naming its index and field;
    the other items are read as usual. Raises :class:`InputError` only when the body as a
    whole is not a JSON array (not UTF-8, not JSON, another JSON value).
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the body is not UTF-8 text") from None
    try:
        items: list[Any] = json.loads(text)
    except RecursionError:
        # One item nests deeper than Python's recursion limit: split the array without
        # recursion, so that one item does not lose the whole batch.
        items = _split_json_array(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"the body is not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(items, list):
        raise InputError(f"the body is a JSON {_json_kind(items)}, not an array")
    batch = SendGridBatch(items=len(items))
    for index, item in enumerate(items):
        event = _sendgrid_item(item, now)
        if isinstance(event, DeliveryEvent):
            batch.deliveries.append((f"[{index}]", event))
        elif event is not None:
            batch.events.append((f"[{index}]", event))
    return batch


class _TooDeep:
    """An item of a batch nested too deeply to be read (it is reported, not parsed)."""


def _sendgrid_item(item: Any, now: datetime | None) -> InboundEvent | DeliveryEvent | str | None:
    """The event of one item, the reason it cannot be read, or ``None`` for an item that
    records nothing (``processed``, ``deferred``, a ``blocked`` bounce ...)."""
    if isinstance(item, _TooDeep):
        return f"nested more than {MAX_ITEM_DEPTH} levels deep"
    if not isinstance(item, dict):
        return f"expected a JSON object, got {_json_kind(item)}"
    name = item.get("event")
    if not isinstance(name, str):
        return "event: missing or not text"
    if name in _SENDGRID_DELIVERY:
        return _sendgrid_delivery(name, item, now)
    kind = _sendgrid_type(name, item)
    if kind is None:
        return None
    at = _epoch(item.get("timestamp"), now)
    if isinstance(at, str):
        return f"timestamp: {at}"
    status = item.get("status")
    status = status if isinstance(status, str | int) and not isinstance(status, bool) else None
    detail = f"sendgrid {name}" + (f" {status}" if status not in (None, "") else "")
    raw = {
        "type": kind,
        "channel": "email",
        "address": item.get("email"),
        "touch_id": _touch_id(item.get("touch_id")),
        "at": at,
        "id": item.get("sg_event_id"),
        "detail": detail[:200],
    }
    return _validate(raw)


def _sendgrid_delivery(
    name: str, item: dict[str, Any], now: datetime | None
) -> DeliveryEvent | str:
    """A ``delivered``, ``open`` or ``click`` item as a :class:`DeliveryEvent`, or what is
    wrong with it. Only the touch, time, event id and machine flag are kept: never the
    address, user agent, IP or URL."""
    at = _epoch(item.get("timestamp"), now)
    if isinstance(at, str):
        return f"timestamp: {at}"
    raw: dict[str, Any] = {
        "type": name,
        "channel": "email",
        "touch_id": _touch_id(item.get("touch_id")),
        "at": at,
        "id": item.get("sg_event_id"),
    }
    if name == "open":
        machine = item.get("sg_machine_open", False)
        if isinstance(machine, str) and machine.strip().lower() in ("true", "false"):
            machine = machine.strip().lower() == "true"
        if not isinstance(machine, bool):
            return "sg_machine_open: not true or false"
        raw["machine"] = machine
    try:
        return DeliveryEvent.model_validate(raw)
    except ValidationError as exc:
        return _describe(exc)


def _sendgrid_type(name: str, item: dict[str, Any]) -> str | None:
    if name == "bounce":
        # "blocked" is a temporary refusal (the receiver may accept later); not a bounce.
        bounce_type = item.get("type", "bounce")
        blocked = isinstance(bounce_type, str) and bounce_type.lower() == "blocked"
        return None if blocked else "bounce"
    if name == "dropped":
        reason = item.get("reason")
        reason = reason.lower() if isinstance(reason, str) else ""
        if "bounced address" in reason:
            return "bounce"
        if "unsubscribed address" in reason:
            return "unsubscribe"
        if "spam reporting address" in reason:
            return "opt_out"
        return None
    if name == "spamreport":
        return "opt_out"
    if name in ("unsubscribe", "group_unsubscribe"):
        return "unsubscribe"
    return None


def _touch_id(value: Any) -> int | None:
    # A custom arg is a string; one that is not a touch id is not ours to name.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip()) if len(value.strip()) <= 19 else 0
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID:
        return value
    return None


def _epoch(value: Any, now: datetime | None = None) -> datetime | str:
    """A SendGrid ``timestamp`` (Unix seconds) as a UTC datetime, or what is wrong."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        digits = value.strip()
        value = int(digits) if len(digits) <= 19 else _MAX_EPOCH + 1
    if value is None:
        return "missing"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "not a Unix time (a number of seconds)"
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if value < 0:
        return "negative; a Unix time counts seconds since 1970"
    if value > _MAX_EPOCH:
        return "past the year 9999"
    at = datetime.fromtimestamp(value, UTC)
    if now is not None and at > now + _FUTURE_SLACK:
        return "more than a day in the future"
    return at


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


_JSON_TOKEN = re.compile(r'["\[\]{},]')
_JSON_STRING_END = re.compile(r'["\\]')


def _split_json_array(text: str) -> list[Any]:
    """The items of the JSON array ``text``, each parsed alone; an item nested deeper than
    :data:`MAX_ITEM_DEPTH` becomes a :class:`_TooDeep` marker instead. Iterative, so any
    depth is safe. Raises :class:`InputError` when ``text`` is not a JSON array."""
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        raise InputError("the body is not a JSON array")
    items: list[Any] = []
    position = start + 1
    if text[position:].lstrip().startswith("]"):
        closing = text.index("]", position)
        if text[closing + 1 :].strip():
            raise InputError("the body has more after its JSON array")
        return items
    while True:
        begin, depth, deepest = position, 0, 0
        while True:
            match = _JSON_TOKEN.search(text, position)
            if match is None:
                raise InputError("the body is not JSON (the array is not closed)")
            char, position = match.group(), match.end()
            if char == '"':
                position = _json_string_end(text, position)
            elif char in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]}" and depth > 0:
                depth -= 1
            elif depth == 0:  # the "," or "]" that ends this item
                break
        if char == "}":
            raise InputError("the body is not JSON (a } closes the array)")
        chunk = text[begin : match.start()]
        if deepest > MAX_ITEM_DEPTH:
            items.append(_TooDeep())
        else:
            try:
                items.append(json.loads(chunk))
            except json.JSONDecodeError as exc:
                raise InputError(f"the body is not JSON ({exc.msg})") from None
        if char == "]":
            if text[position:].strip():
                raise InputError("the body has more after its JSON array")
            return items


def _json_string_end(text: str, position: int) -> int:
    """Where the JSON string whose opening quote ends at ``position`` ends."""
    while True:
        match = _JSON_STRING_END.search(text, position)
        if match is None:
            raise InputError("the body is not JSON (a string is not closed)")
        if match.group() == '"':
            return match.end()
        position = match.end() + 1  # skip the escaped character


def from_twilio_inbound(form: dict[str, Any], at: datetime) -> InboundEvent | None:
    """An incoming SMS (Twilio's webhook form fields) as an inbound event, or ``None``.

    A body that is exactly an opt-out keyword (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END,
    QUIT, OPTOUT, REVOKE; any case, surrounding spaces and a final ``.`` or ``!`` ignored)
    is an SMS ``opt_out`` of the sender's number; Advanced Opt-Out's ``OptOutType`` field,
    when present, decides instead. START, UNSTOP, YES, HELP and INFO give ``None``: Twilio
    handles them itself, and re-consent is not an event here: SMS consent belongs to a
    person and comes from their record (``sms_consent`` in the CRM or an import), never
    from a keyword texted by a number. Anything else is an SMS ``reply``. The
    ``MessageSid`` is the event id; ``at`` is when the message arrived (the form has no
    time). Raises :class:`ValueError` when the form has no sender.
    """
    sender = str(form.get("From") or "").strip()
    if not sender:
        raise ValueError("the Twilio form has no From field")
    opt_type = str(form.get("OptOutType") or "").strip().upper()
    keyword = str(form.get("Body") or "").strip().strip(".!").strip().upper()
    if opt_type in ("START", "HELP"):
        return None
    if opt_type == "STOP" or (not opt_type and keyword in OPT_OUT_KEYWORDS):
        kind, detail = "opt_out", f"twilio keyword {keyword or 'STOP'}"
    elif keyword in OPT_IN_KEYWORDS or keyword in HELP_KEYWORDS:
        return None
    else:
        kind, detail = "reply", "twilio inbound sms"
    sid = twilio_sid(form.get("MessageSid")) or twilio_sid(form.get("SmsSid"))
    return InboundEvent(type=kind, channel="sms", address=sender, at=at, id=sid, detail=detail)


_TWILIO_SID = re.compile(r"^[A-Z]{2}[0-9a-zA-Z]{1,62}$")


def twilio_sid(value: Any) -> str | None:
    """``value`` when it has the shape of a Twilio SID (``SM`` and 32 hex digits; any two
    capitals and up to 62 letters or digits are accepted), else ``None``: a field that is
    not a SID names nothing, and the message still counts by its number."""
    text = value.strip() if isinstance(value, str) else ""
    return text if _TWILIO_SID.match(text) else None


# -- ingest -------------------------------------------------------------------------------


@dataclass
class _Pending:
    where: str
    event: InboundEvent
    key: str
    kind: str | None = None  # email | phone | linkedin, when the address parsed
    value: str | None = None  # the normalised address


def ingest_events(
    engine: Engine,
    events: Iterable[tuple[str, InboundEvent | dict[str, Any] | str]],
    *,
    now: datetime,
    default_region: str = "US",
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
    report: IngestReport | None = None,
) -> IngestReport:
    """Resolve and record ``events``; ``(where, event)`` pairs, ``where`` like ``f.jsonl:3``.

    ``event`` is an :class:`InboundEvent`, a dict (validated here) or a string: the reason
    a reader could not read that item, counted under ``bad``. Recorded events are applied
    by the next tick. ``report``: one to add to (e.g. with ``duplicate_places=[]``).
    """
    report = report if report is not None else IngestReport()
    batch: list[_Pending] = []
    keys: set[str] = set()
    try:
        for where, item in events:
            report.read += 1
            pending = _prepare(where, item, default_region, report)
            if pending is not None:
                if pending.key in keys:
                    report.add_duplicate(pending.where)
                else:
                    keys.add(pending.key)
                    batch.append(pending)
                if len(batch) >= batch_size:
                    _flush(engine, batch, now, report)
                    batch, keys = [], set()
            if progress is not None:
                progress(report.read)
    except InputError:
        # The source broke off (an unreadable file): keep what was read before.
        _flush(engine, batch, now, report)
        raise
    _flush(engine, batch, now, report)
    return report


def _prepare(
    where: str,
    item: InboundEvent | dict[str, Any] | str,
    region: str,
    report: IngestReport,
) -> _Pending | None:
    if isinstance(item, str):
        report.bad.append(f"{where}: {item}")
        return None
    if isinstance(item, dict):
        checked = _validate(item)
        if isinstance(checked, str):
            report.bad.append(f"{where}: {checked}")
            return None
        item = checked
    if not isinstance(item, InboundEvent):
        report.bad.append(f"{where}: not an event ({type(item).__name__})")
        return None
    kind = value = None
    if item.address is not None:
        kind = _address_kind(item.channel, item.address)
        try:
            value = _normalise(kind, item.address, region)
        except ContactError:
            if item.touch_id is None and item.source is None:
                report.bad.append(f"{where}: address: not a valid {_KIND_NAME[kind]}")
                return None
            kind = None  # the other identifiers name the person
    return _Pending(where, item, _dedupe_key(item, value), kind, value)


def _address_kind(channel: str | None, address: str) -> str:
    if channel is not None:
        return _CHANNEL_KIND[channel]
    social = profile_kind(address)
    if social in ("x", "facebook"):
        return social
    if "@" in address:
        return "email"
    if "linkedin." in address.lower():
        return "linkedin"
    return "phone"


def _normalise(kind: str, address: str, region: str) -> str:
    if kind == "email":
        return normalize_email(address)
    if kind == "phone":
        return normalize_phone(address, region).e164
    if kind == "x":
        return normalize_x(address)
    if kind == "facebook":
        return normalize_facebook(address)
    return normalize_linkedin(address)


def _id_key(event_id: str) -> str:
    """The dedupe key of a provider event id (hashed when too long for the column)."""
    key = _KEY_PREFIX + event_id
    if len(key) <= _MAX_KEY:
        return key
    return _KEY_PREFIX + "id-sha256:" + hashlib.sha256(event_id.encode()).hexdigest()


def _dedupe_key(event: InboundEvent, address: str | None) -> str:
    if event.id is not None:
        return _id_key(event.id)
    facts = [
        event.type,
        event.channel,
        address if address is not None else event.address,
        event.source,
        event.external_id,
        event.touch_id,
        event.at.isoformat(),
    ]
    digest = hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()
    return _KEY_PREFIX + "sha256:" + digest


@contextmanager
def _writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads, then writes. On SQLite it takes the write lock up front:
    concurrent posts (``outreach serve`` runs several at once) then queue on the busy
    timeout instead of failing when a reader upgrades to a writer."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
        with conn.begin():
            yield conn


def _flush(engine: Engine, batch: list[_Pending], now: datetime, report: IngestReport) -> None:
    if not batch:
        return
    with _writing(engine) as conn:
        existing = _existing_keys(conn, [p.key for p in batch])
        fresh = []
        for pending in batch:
            if pending.key in existing:
                report.add_duplicate(pending.where)
            else:
                fresh.append(pending)
        listed = _list_suppressions(conn, fresh, now)
        rows = []
        for pending, row in zip(fresh, _resolve(conn, fresh, now), strict=True):
            if isinstance(row, str):
                if id(pending) in listed and "suppressed" not in row:
                    row += "; kept on the suppression list"
                report.unmatched.append(f"{pending.where}: {row}")
            else:
                rows.append((pending, row))
        _write_events(conn, [(pending.where, row) for pending, row in rows], report)


def _write_events(
    conn: Connection,
    rows: list[tuple[str, dict[str, Any]]],
    report: IngestReport | DeliveryReport,
) -> None:
    """Insert event rows (each with where it came from) in one statement; when the database
    refuses the batch, row by row, so one bad row is named and the others are kept."""
    if not rows:
        return
    try:
        with conn.begin_nested():
            bulk_write(conn, _events, [row for _, row in rows], conflict=("dedupe_key",))
    except SQLAlchemyError:
        for where, row in rows:
            try:
                with conn.begin_nested():
                    bulk_write(conn, _events, [row], conflict=("dedupe_key",))
            except SQLAlchemyError as exc:
                report.bad.append(
                    f"{where}: the database refused the event: {type(exc.orig or exc).__name__}"
                )
            else:
                report.recorded += 1
    else:
        report.recorded += len(rows)


def _list_suppressions(conn: Connection, batch: list[_Pending], now: datetime) -> set[int]:
    """Put every opt-out, unsubscribe and bounce naming an address on the suppression
    list; return the ``id()`` of those pending events."""
    entries, listed = [], set()
    for pending in batch:
        event = pending.event
        if event.type not in _SUPPRESSING or pending.kind is None or pending.value is None:
            continue
        entries.append(
            {
                "kind": pending.kind,
                "value": pending.value,
                "scope": suppressions.scope_for(event.type, pending.kind),
                "reason": _SUPPRESSING[event.type],
                "source": _source_of(event),
                "at": event.at,
            }
        )
        listed.add(id(pending))
    if entries:
        suppressions.record(conn, entries, now)
    return listed


def _source_of(event: InboundEvent) -> str:
    """Where an event came from: its CRM, else the provider its detail names."""
    if event.source is not None:
        return event.source
    if event.detail:
        return event.detail.split()[0]
    return "events"


def _existing_keys(conn: Connection, keys: list[str]) -> set[str]:
    return set(
        conn.execute(select(_events.c.dedupe_key).where(_events.c.dedupe_key.in_(keys))).scalars()
    )


def _resolve(conn: Connection, batch: list[_Pending], now: datetime) -> list[dict[str, Any] | str]:
    """The ``events`` row for each pending event, or why it matches no one."""
    touch_ids = {p.event.touch_id for p in batch if p.event.touch_id is not None}
    touches = {}
    if touch_ids:
        query = select(
            _touches.c.id, _touches.c.person_id, _touches.c.contact_point_id, _touches.c.channel
        ).where(_touches.c.id.in_(touch_ids))
        touches = {row.id: row for row in conn.execute(query)}

    # An address names one point, except a phone several people share.
    points: dict[tuple[str, str], list[Any]] = {}
    by_kind: dict[str, set[str]] = {}
    for p in batch:
        if p.kind is not None and p.value is not None:
            by_kind.setdefault(p.kind, set()).add(p.value)
    for kind, values in by_kind.items():
        query = select(_contacts.c.id, _contacts.c.person_id, _contacts.c.value).where(
            _contacts.c.kind == kind, _contacts.c.value.in_(values)
        )
        for row in conn.execute(query):
            points.setdefault((kind, row.value), []).append(row)
    texted = _texted_holders(conn, batch, points)

    records: dict[tuple[str, str], Any] = {}
    by_source: dict[str, set[str]] = {}
    for p in batch:
        if p.event.source is not None and p.event.external_id is not None:
            by_source.setdefault(p.event.source, set()).add(p.event.external_id)
    if by_source:
        query = select(
            _records.c.id, _records.c.person_id, _records.c.source, _records.c.external_id
        ).where(
            or_(
                *(
                    and_(_records.c.source == source, _records.c.external_id.in_(ids))
                    for source, ids in by_source.items()
                )
            )
        )
        records.update(((row.source, row.external_id), row) for row in conn.execute(query))

    shared_stops = [
        (p.kind, p.value)
        for p in batch
        if p.event.type in _SUPPRESSING
        and p.event.touch_id is None
        and p.event.source is None
        and len(points.get((p.kind, p.value), ())) > 1
    ]
    if shared_stops:
        # No one person's event: the list entry holds for every holder, now.
        suppressions.apply_to_people(conn, suppressions.holders(conn, shared_stops), now)
    return [_row(p, touches, points, texted, records, now) for p in batch]


def _texted_holders(
    conn: Connection, batch: list[_Pending], points: dict[tuple[str, str], list[Any]]
) -> dict[tuple[str, str], set[int]]:
    """For a shared phone a reply came from: which of its points were texted."""
    shared = {
        (p.kind, p.value): points[(p.kind, p.value)]
        for p in batch
        if p.event.type == "reply" and len(points.get((p.kind, p.value), ())) > 1
    }
    ids = sorted({row.id for rows in shared.values() for row in rows})
    if not ids:
        return {}
    sent = set(
        conn.execute(
            select(_touches.c.contact_point_id)
            .where(
                _touches.c.contact_point_id.in_(ids),
                _touches.c.channel == "sms",
                _touches.c.status.in_(("sent", "ambiguous")),
            )
            .distinct()
        ).scalars()
    )
    return {key: {row.id for row in rows if row.id in sent} for key, rows in shared.items()}


def _row(
    pending: _Pending,
    touches: dict[int, Any],
    points: dict[tuple[str, str], list[Any]],
    texted: dict[tuple[str, str], set[int]],
    records: dict[tuple[str, str], Any],
    now: datetime,
) -> dict[str, Any] | str:
    event = pending.event
    touch = touches.get(event.touch_id) if event.touch_id is not None else None
    record = records.get((event.source, event.external_id)) if event.source else None
    found = points.get((pending.kind, pending.value), []) if pending.kind else []
    point = found[0] if len(found) == 1 else None
    if len(found) > 1:
        # A shared phone: the touch or record names the holder; else only a reply from
        # it, and only to the one holder texted on it, is anyone's.
        owner = touch.person_id if touch is not None else None
        owner = owner if owner is not None else (record.person_id if record else None)
        if owner is None and event.type == "reply":
            sent = texted.get((pending.kind, pending.value), set())
            if len(sent) == 1:
                point = next(row for row in found if row.id in sent)
        else:
            point = next((row for row in found if row.person_id == owner), None)
        if point is None and touch is None and record is None:
            return _shared(pending, len(found))
    if touch is not None:
        person_id, matched_by = touch.person_id, "touch"
    elif point is not None:
        person_id, matched_by = point.person_id, "address"
    elif record is not None:
        person_id, matched_by = record.person_id, "record"
    else:
        return _no_match(pending)
    # The address names the contact point when it is this person's; else the touch's, but
    # only when the touch went out on a channel of the event's kind: an SMS opt-out naming
    # an email touch is about the phone, which the engine then finds by the channel's kind.
    if point is not None and point.person_id == person_id:
        contact_point_id = point.id
    elif touch is not None and (
        event.channel is None
        or _CHANNEL_KIND.get(touch.channel) == _CHANNEL_KIND.get(event.channel)
    ):
        contact_point_id = touch.contact_point_id
    else:
        contact_point_id = None
    channel = event.channel
    if channel is None:
        if touch is not None and touch.channel in _CHANNEL_KIND:
            channel = touch.channel
        elif point is not None and point.person_id == person_id:
            channel = _KIND_CHANNEL[pending.kind or "email"]
    payload: dict[str, Any] = {"matched_by": matched_by}
    if event.id is not None:
        payload["id"] = event.id
    if event.detail is not None:
        payload["detail"] = event.detail
    return {
        "type": event.type,
        "channel": channel,
        "person_id": person_id,
        "record_id": record.id if record is not None and record.person_id == person_id else None,
        "contact_point_id": contact_point_id,
        "touch_id": touch.id if touch is not None else None,
        "source": event.source,
        "external_id": event.external_id,
        "at": event.at,
        "dedupe_key": pending.key,
        "payload": payload,
        "processed_at": None,
        "created_at": now,
    }


def _shared(pending: _Pending, holders: int) -> str:
    if pending.event.type in _SUPPRESSING:
        return (
            f"the {_KIND_NAME[pending.kind or 'phone']} is shared by {holders} people: "
            "suppressed for all of them, no one's cadence stopped"
        )
    return (
        f"the {_KIND_NAME[pending.kind or 'phone']} is shared by {holders} people and "
        "nothing tells whose message this is"
    )


def _no_match(pending: _Pending) -> str:
    event = pending.event
    reasons = []
    if event.touch_id is not None:
        reasons.append(f"no touch has id {event.touch_id}")
    if pending.kind is not None:
        reasons.append(f"no person has that {_KIND_NAME[pending.kind]}")
    if event.source is not None:
        reasons.append(f"no {event.source} record {event.external_id}")
    return "; ".join(reasons)


# -- delivery-side events -----------------------------------------------------------------


def ingest_deliveries(
    engine: Engine,
    deliveries: Iterable[tuple[str, DeliveryEvent]],
    *,
    now: datetime,
    batch_size: int = BATCH_SIZE,
    report: DeliveryReport | None = None,
) -> DeliveryReport:
    """Record ``(where, event)`` delivery-side signals for the report; one transaction,
    one touch lookup and one insert per batch.

    Each row names the touch, its person and contact point, and is stored with
    ``processed_at = now``: :func:`outreach.engine.enroll.process_events` never sees it,
    so nothing in the engine reacts to a delivery, an open or a click. An event whose
    ``touch_id`` is missing or names no touch is counted in ``ignored`` (there is nothing
    to attribute it to). The dedupe key is ``inbound:<id>`` as for inbound events, so a
    batch posted again records nothing new. ``report``: one to add to.
    """
    report = report if report is not None else DeliveryReport()
    batch: list[tuple[str, DeliveryEvent, str]] = []
    keys: set[str] = set()
    for where, event in deliveries:
        report.read += 1
        if event.touch_id is None:
            report.ignored.append(f"{where}: {event.type} names no touch (no touch_id)")
            continue
        key = _delivery_key(event)
        if key in keys:
            report.add_duplicate(where)
            continue
        keys.add(key)
        batch.append((where, event, key))
        if len(batch) >= batch_size:
            _flush_deliveries(engine, batch, now, report)
            batch, keys = [], set()
    _flush_deliveries(engine, batch, now, report)
    return report


def _delivery_key(event: DeliveryEvent) -> str:
    if event.id is not None:
        return _id_key(event.id)
    facts = [event.type, event.channel, event.touch_id, event.at.isoformat(), event.machine]
    digest = hashlib.sha256(json.dumps(facts, separators=(",", ":")).encode()).hexdigest()
    return _KEY_PREFIX + "sha256:" + digest


def _flush_deliveries(
    engine: Engine,
    batch: list[tuple[str, DeliveryEvent, str]],
    now: datetime,
    report: DeliveryReport,
) -> None:
    if not batch:
        return
    with _writing(engine) as conn:
        existing = _existing_keys(conn, [key for _, _, key in batch])
        fresh = []
        for item in batch:
            if item[2] in existing:
                report.add_duplicate(item[0])
            else:
                fresh.append(item)
        touch_ids = {event.touch_id for _, event, _ in fresh}
        touches = {}
        if touch_ids:
            query = select(_touches.c.id, _touches.c.person_id, _touches.c.contact_point_id).where(
                _touches.c.id.in_(touch_ids)
            )
            touches = {row.id: row for row in conn.execute(query)}
        rows: list[tuple[str, dict[str, Any]]] = []
        for where, event, key in fresh:
            touch = touches.get(event.touch_id)
            if touch is None:
                report.ignored.append(f"{where}: {event.type}: no touch has id {event.touch_id}")
                continue
            rows.append(
                (
                    where,
                    {
                        "type": event.type,
                        "channel": event.channel,
                        "person_id": touch.person_id,
                        "record_id": None,
                        "contact_point_id": touch.contact_point_id,
                        "touch_id": touch.id,
                        "source": None,
                        "external_id": None,
                        "at": event.at,
                        "dedupe_key": key,
                        "payload": event.payload(),
                        "processed_at": now,
                        "created_at": now,
                    },
                )
            )
        _write_events(conn, rows, report)
