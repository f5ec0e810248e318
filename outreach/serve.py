"""``outreach serve``: the webhook receiver that turns provider callbacks into events.

Routes (``OUTREACH_PUBLIC_URL`` is where providers reach this server):

``POST /webhooks/sendgrid/events``
    SendGrid's signed Event Webhook. The ECDSA P-256 / SHA-256 signature over
    ``timestamp + body`` (headers ``X-Twilio-Email-Event-Webhook-Signature`` and
    ``-Timestamp``) is checked against ``SENDGRID_WEBHOOK_PUBLIC_KEY``; a timestamp more
    than ten minutes from now is refused (replay). The JSON array is read item by item
    (:func:`outreach.events.read_sendgrid_batch`): an item that cannot be read (not an
    object, a timestamp that is NaN, negative or past year 9999, a wrong type, nesting
    past 32 levels) is logged with its index and what is wrong, and left out; the others
    are recorded with :func:`outreach.events.ingest_events`, and ``delivered``, ``open``
    and ``click`` items with :func:`outreach.events.ingest_deliveries` (for the report;
    an item whose ``touch_id`` names no touch is ignored). The answer is 200 with how
    many were recorded, duplicates, unmatched, ignored and bad; 400 only when the body as
    a whole is not a JSON array (not UTF-8, not JSON), which a retry would not change.
``POST /webhooks/sendgrid/inbound?token=…``
    SendGrid Inbound Parse: a reply to the per-touch address, posted as
    ``multipart/form-data`` in either the default (parsed) or the "Send Raw" shape. The
    ``token`` query parameter must equal ``SENDGRID_INBOUND_TOKEN`` (403 otherwise, and
    403 for every post while it is not set: an open endpoint would let anyone inject
    "replies"). Where ``SENDGRID_INBOUND_PUBLIC_KEY`` is set (a Parse security policy with
    signing), the same signature headers as the Event Webhook must sign the raw body (401
    when missing, forged or older than ten minutes). The body (at most
    :data:`INBOUND_MAX_BODY_BYTES`: SendGrid's 30 MB message limit plus the form's
    overhead; 413 past it) is streamed to a spooled temporary file, hashed as it arrives,
    and parsed from there (:mod:`outreach.inbound.parse_webhook`); the message is handed to
    :func:`outreach.inbound.intake.ingest_messages`. 200 when stored or already known; 400
    when the post or the message cannot be read at all (SendGrid would retry a hopeless
    post for three days); 503 when the store fails, so that SendGrid retries.
``POST /webhooks/twilio/inbound``
    An incoming SMS (Twilio's form, ``X-Twilio-Signature`` checked with
    ``TWILIO_AUTH_TOKEN`` over ``OUTREACH_PUBLIC_URL`` + path). STOP and the other opt-out
    keywords become an SMS opt-out, anything else a reply. The answer is an empty TwiML
    ``<Response/>``: Twilio sends no reply of ours.
``POST /webhooks/twilio/status``
    The status callback :class:`channels.sms.TwilioSMS` sets. ``undelivered`` or
    ``failed`` with error 30003, 30005 or 30006 (unreachable, unknown, landline) is an SMS
    bounce of the touch whose ``provider_message_id`` is the ``MessageSid`` (or of the
    ``To`` number when no touch has it); ``delivered`` is a ``delivered`` event of that
    touch (for the report; recorded once per SID and status, ignored when no touch has
    the SID); other statuses record nothing.
``POST /webhooks/mailchimp`` (and ``HEAD``, which Mandrill sends to check the URL: 200)
    Mailchimp Transactional (Mandrill) webhooks: the ``mandrill_events`` form field,
    ``X-Mandrill-Signature`` checked with ``MAILCHIMP_WEBHOOK_KEY`` over
    ``OUTREACH_PUBLIC_URL`` + path and the sorted form parameters (401 without it, 403
    when it does not match, 503 while the key or the public URL is not set). Bounces,
    spam reports and unsubscribes become events, sends, opens and clicks delivery events,
    inbound route messages go through the same intake as Inbound Parse
    (:mod:`outreach.inbound.mandrill`). 400 when the field is not a JSON array, 413 past
    :data:`outreach.inbound.mandrill.MAX_BODY_BYTES`; a replayed batch records nothing new.
``POST /webhooks/greenhouse``, ``POST /webhooks/lever``, ``POST /webhooks/hubspot``
    A CRM's stage change, hire, rejection, archive change, deletion or merge, pushed the
    moment it happens (:mod:`outreach.crm_webhooks`). Greenhouse: ``Signature: sha256
    <hex>``, the HMAC-SHA256 of the raw body with ``GREENHOUSE_WEBHOOK_SECRET``, idempotent
    on ``Greenhouse-Event-ID``. Lever: the body's ``signature``, the HMAC-SHA256 of ``token
    + triggeredAt`` with ``LEVER_WEBHOOK_TOKEN``, idempotent on ``id``; the opportunity it
    names is read with ``LEVER_API_KEY``. HubSpot: ``X-HubSpot-Signature-v3``, the base64
    HMAC-SHA256 of method + URL (``OUTREACH_PUBLIC_URL`` + path behind a proxy) + body +
    ``X-HubSpot-Request-Timestamp`` with ``HUBSPOT_CLIENT_SECRET``, refused when more than
    five minutes old; idempotent on each event's ``eventId``. A change is written the way a
    sync writes it (the next sync of it does nothing twice) and applied at once: cadences
    start or stop before the next ``outreach run``. An event older than the stored state
    rolls nothing back. 401 for a missing, forged or stale signature; 413 past 1 MB; 400
    for a signed body that cannot be read; 503 while the secret is not set (naming it) or
    when the store or Lever's API fails; 200 with what became of each event otherwise
    (a replayed or retried delivery: ``duplicates``, nothing changes).
``GET /r/<token>/<score>``
    A candidate's one-click rating (1 to 5) of the touch whose ``rating_token`` is
    ``token`` (:mod:`outreach.ratings`): one ``rating`` event per touch, a later click
    replaces the score, a repeated click changes nothing; the answer is a small
    self-contained thank-you page (``no-store``, ``noindex``, ``no-referrer``). A score
    other than 1..5 is 400 before any lookup; an unknown or malformed token is the same
    404. HEAD answers alike and records nothing. No login: the token is the credential.
``GET /healthz``
    ``ok``.

Requests that cannot be verified are refused (403; 401 for a bad Inbound Parse or CRM
signature), and a route whose secret is not configured answers 503 naming the variable
(Inbound Parse without its token: 403): nothing unsigned is ever recorded. Recorded
events are applied by the next ``outreach run``. Logs name event counts, sizes, touch and
candidate ids, never an address, phone number, message body, token or signature.

The CLI runs it on a production server (:mod:`outreach.http_server`: waitress with a read
deadline, connection and size limits, and a draining stop)::

    app = make_app(engine, settings, config, SystemClock())
    serve(app, host, port, stop)          # until ``stop`` is set (or Ctrl-C)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from outreach.cadence import CadenceConfig
from outreach.clock import Clock
from outreach.crm_webhooks.hooks import build_hooks
from outreach.crm_webhooks.receiver import receive as receive_crm
from outreach.errors import InputError, StoreError
from outreach.events import (
    DeliveryEvent,
    DeliveryReport,
    InboundEvent,
    IngestReport,
    from_twilio_inbound,
    ingest_deliveries,
    read_sendgrid_batch,
    twilio_sid,
)
from outreach.events import ingest_events as _ingest_events
from outreach.group_commit import SendGridWriter
from outreach.http_server import serve
from outreach.inbound import mandrill
from outreach.inbound.intake import ingest_messages
from outreach.inbound.parse_webhook import ParseFormError, read_form, rebuild_message
from outreach.inbound.raw import RawMessage
from outreach.ratings import (
    PAGE_HEADERS,
    RATING_PATH,
    parse_score,
    record_rating,
    thank_you,
)
from outreach.ratings import page as rating_page
from outreach.settings import Settings
from outreach.store.schema import Touch

__all__ = [
    "GREENHOUSE_PATH",
    "HUBSPOT_PATH",
    "INBOUND_MAX_BODY_BYTES",
    "INBOUND_MESSAGE_LIMIT",
    "LEVER_PATH",
    "SENDGRID_INBOUND_PATH",
    "SENDGRID_PATH",
    "SENDGRID_SIGNATURE_HEADER",
    "SENDGRID_TIMESTAMP_HEADER",
    "SMS_BOUNCE_CODES",
    "TWILIO_INBOUND_PATH",
    "TWILIO_SIGNATURE_HEADER",
    "TWILIO_STATUS_PATH",
    "WebhookApp",
    "make_app",
    "serve",
]

log = logging.getLogger("outreach.serve")

SENDGRID_PATH = "/webhooks/sendgrid/events"
SENDGRID_INBOUND_PATH = "/webhooks/sendgrid/inbound"
TWILIO_INBOUND_PATH = "/webhooks/twilio/inbound"
#: the status callback path :class:`channels.sms.TwilioSMS` puts on every message
TWILIO_STATUS_PATH = "/webhooks/twilio/status"
HEALTH_PATH = "/healthz"
MAILCHIMP_PATH = "/webhooks/mailchimp"
GREENHOUSE_PATH = "/webhooks/greenhouse"
LEVER_PATH = "/webhooks/lever"
HUBSPOT_PATH = "/webhooks/hubspot"

SENDGRID_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE_HEADER = "X-Twilio-Signature"
_TWILIO_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"

#: how far a SendGrid timestamp may be from now before the batch counts as a replay
MAX_CLOCK_SKEW = timedelta(minutes=10)
#: largest request body accepted (SendGrid batches are far smaller)
MAX_BODY_BYTES = 10 * 1024 * 1024
#: SendGrid's total message size limit, the message and all its attachments (Inbound Email
#: Parse Webhook docs: 30MB, formerly 20MB)
INBOUND_MESSAGE_LIMIT = 30 * 1024 * 1024
#: largest Inbound Parse body: the message plus the form around it (the header block and
#: the decoded to/from/subject again, the spam report, part headers)
INBOUND_MAX_BODY_BYTES = INBOUND_MESSAGE_LIMIT + 4 * 1024 * 1024
#: an Inbound Parse body stays in memory up to this size, then spools to disk
INBOUND_SPOOL_BYTES = 2 * 1024 * 1024
#: a refused post this small is read to its end, so the client sees the answer
_DRAIN_BYTES = 1024 * 1024
_READ_CHUNK = 64 * 1024
#: unmatched or bad items of one request logged one by one; the rest are counted
_LOG_ITEMS = 50
#: Twilio error codes of an undelivered message that say the number cannot get SMS:
#: 30003 unreachable destination handset, 30005 unknown destination handset,
#: 30006 landline or unreachable carrier
SMS_BOUNCE_CODES = frozenset({"30003", "30005", "30006"})
_BOUNCE_STATUSES = frozenset({"undelivered", "failed"})

_NO_INBOUND_TOKEN = (
    "SENDGRID_INBOUND_TOKEN is not set: every Inbound Parse post is refused (403), since an "
    "open endpoint would let anyone inject replies; set it and add ?token=<it> to the "
    "Parse URL in SendGrid (Settings > Inbound Parse)"
)
_EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_touches = Touch.__table__


class _Request(Request):
    max_content_length = MAX_BODY_BYTES
    max_form_memory_size = MAX_BODY_BYTES


def _text(message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        message + "\n", status=status, headers=headers, content_type="text/plain; charset=utf-8"
    )


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


def _page(html: str, status: int) -> Response:
    return Response(
        html, status=status, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8"
    )


def _twiml() -> Response:
    return Response(_EMPTY_TWIML, status=200, content_type="text/xml")


@dataclass(frozen=True)
class _Signature:
    """The signed-webhook headers of a request: the base64 signature and its timestamp."""

    value: str
    stamp: str


def _read_signature(headers: Headers, now: datetime) -> _Signature | str:
    """The signature headers when present and fresh, else why the request is refused.

    Shared by the Event Webhook and Inbound Parse: SendGrid signs both alike.
    """
    signature = headers.get(SENDGRID_SIGNATURE_HEADER, "").strip()
    stamp = headers.get(SENDGRID_TIMESTAMP_HEADER, "").strip()
    if not signature or not stamp:
        return "unsigned request (no signature or timestamp header)"
    if not stamp.isdigit():
        return "the timestamp header is not a Unix time"
    try:
        sent = datetime.fromtimestamp(int(stamp), UTC)
    except (OverflowError, OSError, ValueError):
        return "the timestamp header is not a Unix time"
    if abs(now - sent) > MAX_CLOCK_SKEW:
        return "the timestamp is more than 10 minutes from now (a replay, or a wrong clock)"
    return _Signature(signature, stamp)


def _signature_matches(
    key: ec.EllipticCurvePublicKey, signature: _Signature, digest: bytes
) -> bool:
    """Whether ``signature`` is ECDSA P-256 over ``stamp + body``, given that text's SHA-256
    ``digest`` (hashed as the body streams in, so a large body need not be in memory)."""
    try:
        raw = base64.b64decode(signature.value, validate=True)
        key.verify(raw, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key: base64 DER as the console shows it, or PEM."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        der = base64.b64decode("".join(text.split()), validate=True)
        key = serialization.load_der_public_key(der)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic curve key")
    return key


class WebhookApp:
    """The WSGI application of ``outreach serve`` (build it with :func:`make_app`).

    :attr:`problems` lists the routes that will refuse every request for want of a
    setting (503, or 403 for Inbound Parse without its token), so the CLI can say so at
    startup.
    """

    #: largest Inbound Parse body accepted (413 past it)
    inbound_max_body_bytes: int = INBOUND_MAX_BODY_BYTES

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        config: CadenceConfig | None,
        clock: Clock,
        channels: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.config = config
        #: the live channels, to cancel at once what a reply or out-of-office stops
        self.channels = dict(channels or {})
        self.default_region = config.policy.default_region if config is not None else "US"
        self._sendgrid_writer = SendGridWriter(engine, self.default_region)
        self.public_url = (settings.public_url or "").rstrip("/") or None
        token = settings.twilio_auth_token
        self._twilio = RequestValidator(token.get_secret_value()) if token else None
        self._sendgrid_key: ec.EllipticCurvePublicKey | None = None
        self._sendgrid_problem: str | None = None
        secret = settings.sendgrid_webhook_public_key
        if secret is None:
            self._sendgrid_problem = (
                "SENDGRID_WEBHOOK_PUBLIC_KEY is not set: set it to the verification key of "
                "the signed Event Webhook (SendGrid: Settings > Mail Settings > Event Webhook)"
            )
        else:
            try:
                self._sendgrid_key = _load_public_key(secret.get_secret_value())
            except (ValueError, TypeError, binascii.Error):
                self._sendgrid_problem = (
                    "SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA public key: paste the "
                    "verification key as SendGrid shows it (base64)"
                )
        inbound_token = settings.sendgrid_inbound_token
        self._inbound_token = inbound_token.get_secret_value() if inbound_token else ""
        self._inbound_key: ec.EllipticCurvePublicKey | None = None
        self._inbound_key_problem: str | None = None
        inbound_key = settings.sendgrid_inbound_public_key
        if inbound_key is not None:
            try:
                self._inbound_key = _load_public_key(inbound_key.get_secret_value())
            except (ValueError, TypeError, binascii.Error):
                self._inbound_key_problem = (
                    "SENDGRID_INBOUND_PUBLIC_KEY is not an ECDSA public key: paste the "
                    "public_key of the Parse webhook's security policy as SendGrid shows it"
                )
        self.problems: list[str] = []
        if self._sendgrid_problem:
            self.problems.append(f"{SENDGRID_PATH}: {self._sendgrid_problem}")
        if not self._inbound_token:
            self.problems.append(f"{SENDGRID_INBOUND_PATH}: {_NO_INBOUND_TOKEN}")
        if self._inbound_key_problem:
            self.problems.append(f"{SENDGRID_INBOUND_PATH}: {self._inbound_key_problem}")
        mailchimp_key = settings.mailchimp_webhook_key
        self._mailchimp_key = mailchimp_key.get_secret_value() if mailchimp_key else ""
        if settings.email_provider == "mailchimp" and self._mailchimp_problem():
            self.problems.append(f"{MAILCHIMP_PATH}: {self._mailchimp_problem()}")
        self._greenhouse, self._lever, self._hubspot = build_hooks(settings, clock)
        for path, hook in (
            (GREENHOUSE_PATH, self._greenhouse),
            (LEVER_PATH, self._lever),
            (HUBSPOT_PATH, self._hubspot),
        ):
            if hook.problem:
                self.problems.append(f"{path}: {hook.problem}")
        twilio_problem = self._twilio_problem()
        if twilio_problem:
            self.problems.append(f"{TWILIO_INBOUND_PATH}, {TWILIO_STATUS_PATH}: {twilio_problem}")
        self._map = Map(
            [
                Rule(SENDGRID_PATH, endpoint="sendgrid_events", methods=["POST"]),
                Rule(SENDGRID_INBOUND_PATH, endpoint="sendgrid_inbound", methods=["POST"]),
                Rule(TWILIO_INBOUND_PATH, endpoint="twilio_inbound", methods=["POST"]),
                Rule(TWILIO_STATUS_PATH, endpoint="twilio_status", methods=["POST"]),
                Rule(GREENHOUSE_PATH, endpoint="greenhouse", methods=["POST"]),
                Rule(LEVER_PATH, endpoint="lever", methods=["POST"]),
                Rule(HUBSPOT_PATH, endpoint="hubspot", methods=["POST"]),
                Rule(HEALTH_PATH, endpoint="healthz", methods=["GET"]),
                Rule(MAILCHIMP_PATH, endpoint="mailchimp_events", methods=["POST", "HEAD"]),
                Rule(RATING_PATH, endpoint="rating", methods=["GET"]),
            ],
            strict_slashes=False,
            # A doubled slash (``/r/x%2F/3`` once decoded) is a 404, not a redirect to a
            # path the sender never asked for.
            merge_slashes=False,
        )

    # -- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = _Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        """Route ``request`` and answer it; never raises."""
        try:
            endpoint, values = self._map.bind_to_environ(request.environ).match()
        except MethodNotAllowed as exc:
            allow = ", ".join(sorted(exc.valid_methods or ()))
            return _text("method not allowed", 405, {"Allow": allow})
        except NotFound:
            return _text("not found", 404)
        except HTTPException as exc:  # BadHost: a Host header no URL can hold, such as "."
            return _text(exc.name.lower(), exc.code or 400)
        try:
            return getattr(self, endpoint)(request, **values)
        except HTTPException as exc:  # e.g. 413 from a body over the limit
            return _text(exc.name.lower(), exc.code or 400)
        except SQLAlchemyError as exc:
            # 5xx: SendGrid retries the batch later; dedupe keeps a retry from doubling it.
            log.error("%s: database error %s; answered 503", request.path, type(exc).__name__)
            return _text("database unavailable, try again later", 503)
        except Exception as exc:  # never a traceback: it may carry an address
            log.error("%s: %s; answered 500", request.path, type(exc).__name__)
            return _text("internal error", 500)

    # -- routes ----------------------------------------------------------------------------

    def healthz(self, request: Request) -> Response:
        """``GET /healthz``: 200 ``ok``."""
        return _text("ok", 200)

    def rating(self, request: Request, token: str, score: str) -> Response:
        """``GET /r/<token>/<score>``: record a one-click rating, answer a thank-you page."""
        value = parse_score(score)
        if value is None:
            return _page(
                rating_page(
                    title="Not a rating",
                    lines=["A rating is a whole number from 1 to 5; use a link from our email."],
                ),
                400,
            )
        write = request.method != "HEAD"
        outcome = record_rating(self.engine, token, value, self.clock.now(), write=write)
        if outcome is None:
            return _page(
                rating_page(
                    title="Link not found",
                    lines=["This rating link is not valid. Please use the link in our email."],
                ),
                404,
            )
        if write:
            log.info(
                "rating for touch %d (candidate %d): %d, %s",
                outcome.touch_id,
                outcome.person_id,
                outcome.score,
                outcome.result,
            )
        company = self.config.company.name if self.config is not None else None
        return _page(thank_you(outcome, company), 200)

    def sendgrid_events(self, request: Request) -> Response:
        """``POST /webhooks/sendgrid/events``: a signed Event Webhook batch."""
        if self._sendgrid_key is None:
            log.warning("sendgrid batch refused: %s", self._sendgrid_problem)
            return _text(str(self._sendgrid_problem), 503)
        body = request.get_data(cache=True)
        refused = self._check_sendgrid(request, body)
        if refused is not None:
            log.warning("sendgrid batch refused (403): %s", refused)
            return _text(f"forbidden: {refused}", 403)
        try:
            batch = read_sendgrid_batch(body, now=self.clock.now())
        except InputError as exc:
            log.warning("sendgrid batch (%d bytes) refused (400): %s", len(body), exc)
            return _text(f"bad request: {exc}; expected a JSON array of events", 400)
        # Stored together with the posts being answered at the same time (group commit).
        stored = self._sendgrid_writer.write(
            [(f"sendgrid batch {where}", item) for where, item in batch.events],
            [(f"sendgrid batch {where}", item) for where, item in batch.deliveries],
            self.clock.now(),
        )
        report, delivery = stored.events, stored.deliveries
        _log_ingest(report)
        _log_deliveries(delivery)
        log.info(
            "sendgrid batch: %d items, %d inbound events, %d delivery events, %d recorded, "
            "%d duplicates, %d unmatched, %d ignored, %d bad",
            batch.items,
            sum(1 for _, item in batch.events if not isinstance(item, str)),
            delivery.read,
            report.recorded + delivery.recorded,
            report.duplicates + delivery.duplicates,
            len(report.unmatched),
            len(delivery.ignored),
            len(report.bad) + len(delivery.bad),
        )
        return _json(
            {
                "recorded": report.recorded + delivery.recorded,
                "duplicates": report.duplicates + delivery.duplicates,
                "unmatched": len(report.unmatched),
                "ignored": len(delivery.ignored),
                "bad": len(report.bad) + len(delivery.bad),
            }
        )

    def sendgrid_inbound(self, request: Request) -> Response:
        """``POST /webhooks/sendgrid/inbound?token=…``: one Inbound Parse post."""
        token = request.args.get("token", "")
        if not self._inbound_token:
            log.warning("inbound parse post refused (403): SENDGRID_INBOUND_TOKEN is not set")
            _discard(request)
            return _text(f"forbidden: {_NO_INBOUND_TOKEN}", 403)
        if not hmac.compare_digest(token.encode(), self._inbound_token.encode()):
            log.warning("inbound parse post refused (403): %s token", "a wrong" if token else "no")
            _discard(request)
            return _text("forbidden: the token query parameter does not match", 403)
        if self._inbound_key_problem:
            log.warning("inbound parse post refused (503): %s", self._inbound_key_problem)
            _discard(request)
            return _text(self._inbound_key_problem, 503)
        signature: _Signature | None = None
        if self._inbound_key is not None:
            read = _read_signature(request.headers, self.clock.now())
            if isinstance(read, str):
                log.warning("inbound parse post refused (401): %s", read)
                _discard(request)
                return _text(f"unauthorized: {read}", 401)
            signature = read

        limit = self.inbound_max_body_bytes
        with tempfile.SpooledTemporaryFile(max_size=INBOUND_SPOOL_BYTES) as body:
            digest = hashlib.sha256(signature.stamp.encode() if signature else b"")
            size = _spool(request, body, digest, limit)
            if size is None:
                log.warning(
                    "inbound parse post refused (413): %s bytes declared, limit %d",
                    request.content_length if request.content_length is not None else "?",
                    limit,
                )
                return _too_large(limit)
            post = digest.hexdigest()[:12]
            if signature is not None:
                assert self._inbound_key is not None
                if not _signature_matches(self._inbound_key, signature, digest.digest()):
                    log.warning("inbound parse post %s refused (401): bad signature", post)
                    return _text(
                        "unauthorized: the signature does not match SENDGRID_INBOUND_PUBLIC_KEY",
                        401,
                    )
            body.seek(0)
            try:
                with read_form(body, request.headers.get("Content-Type")) as form:
                    rebuilt = rebuild_message(form.fields, form.files)
            except ParseFormError as exc:
                log.warning("inbound parse post %s (%d bytes) refused (400): %s", post, size, exc)
                return _text(f"bad request: {exc}", 400)

        now = self.clock.now()
        message = RawMessage(
            where="Inbound Parse", raw=rebuilt.raw, source="parse", received_at=now
        )
        try:
            report = ingest_messages(self.engine, [message], now=now, config=self.config)
        except StoreError as exc:
            log.error(
                "inbound parse post %s: store error %s; answered 503", post, type(exc).__name__
            )
            return _text("store unavailable, try again later", 503)
        for note in rebuilt.notes:
            log.info("inbound parse post %s: %s", post, note)
        if report.errors:
            log.warning(
                "inbound parse post %s (%d bytes, %s mode): not a readable message; answered 400",
                post,
                size,
                rebuilt.mode,
            )
            return _text("bad request: " + "; ".join(report.errors), 400)
        log.info(
            "inbound parse post %s: %d bytes, %s mode, %d attachments, message %d bytes; "
            "%d stored, %d duplicates, candidates %s",
            post,
            size,
            rebuilt.mode,
            rebuilt.attachments,
            len(rebuilt.raw),
            report.stored,
            report.duplicates,
            ",".join(str(p) for p in sorted(report.person_ids)) or "none",
        )
        self._act_now(report.person_ids, now, f"inbound parse post {post}")
        return _json({"stored": report.stored, "duplicates": report.duplicates})

    def greenhouse(self, request: Request) -> Response:
        """``POST /webhooks/greenhouse``: a signed Greenhouse web hook."""
        return self._crm(self._greenhouse, request)

    def lever(self, request: Request) -> Response:
        """``POST /webhooks/lever``: a signed Lever webhook."""
        return self._crm(self._lever, request)

    def hubspot(self, request: Request) -> Response:
        """``POST /webhooks/hubspot``: a v3-signed HubSpot webhook batch."""
        return self._crm(self._hubspot, request)

    def _crm(self, hook: Any, request: Request) -> Response:
        return receive_crm(
            hook,
            request,
            engine=self.engine,
            config=self.config,
            now=self.clock.now(),
            act_now=self._act_now,
        )

    def _act_now(self, person_ids: set[int], now: datetime, post: str) -> None:
        """Apply what just came in and recall what it stops, without waiting for the next
        run: a touch SendGrid holds for this afternoon must not reach someone who replied
        this morning. The message is stored already; a failure here is logged and the next
        ``outreach run`` does the same work."""
        if not person_ids or self.config is None:
            return
        from outreach.engine.enroll import process_events
        from outreach.engine.recall import recall_scheduled
        from outreach.engine.tick import engine_transactions

        transactions = engine_transactions(self.engine)
        try:
            process_events(transactions, self.config, now, person_ids=person_ids)
            recalled = recall_scheduled(
                transactions, self.channels, self.config, now, person_ids=person_ids
            )
        except Exception as exc:  # the answer is stored; the next run retries this
            log.warning(
                "%s: applying it now failed (%s); the next run will",
                post,
                type(exc).__name__,
            )
            return
        if recalled.requested or recalled.cancelled:
            log.info(
                "%s: %d held touches recalled, %d cancelled, %d to retry",
                post,
                recalled.requested,
                recalled.cancelled,
                recalled.retrying,
            )

    def twilio_inbound(self, request: Request) -> Response:
        """``POST /webhooks/twilio/inbound``: an incoming SMS; answers empty TwiML."""
        refused = self._check_twilio(request)
        if refused is not None:
            return refused
        try:
            event = from_twilio_inbound(request.form.to_dict(), at=self.clock.now())
        except ValueError:  # no sender, or a field out of bounds (ValidationError)
            return _text("not an incoming-message form (no valid From field)", 400)
        if event is None:
            log.info("twilio inbound: a keyword Twilio handles itself; nothing recorded")
            return _twiml()
        report = self._ingest([(f"twilio:{event.id or 'inbound'}", event)])
        log.info(
            "twilio inbound %s: %d recorded, %d duplicates, %d unmatched",
            event.type,
            report.recorded,
            report.duplicates,
            len(report.unmatched),
        )
        return _twiml()

    def twilio_status(self, request: Request) -> Response:
        """``POST /webhooks/twilio/status``: a message status callback."""
        refused = self._check_twilio(request)
        if refused is not None:
            return refused
        form = request.form
        status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
        code = (form.get("ErrorCode") or "").strip()
        sid = twilio_sid(form.get("MessageSid")) or twilio_sid(form.get("SmsSid")) or ""
        if status == "delivered":
            return self._twilio_delivered(sid)
        if status not in _BOUNCE_STATUSES or code not in SMS_BOUNCE_CODES:
            return _twiml()
        touch_id = self._touch_for(sid) if sid else None
        to = (form.get("To") or "").strip() or None
        if touch_id is None and to is None:
            log.warning("twilio status %s %s: names no touch and no number; ignored", status, code)
            return _twiml()
        try:
            event = InboundEvent(
                type="bounce",
                channel="sms",
                touch_id=touch_id,
                address=None if touch_id is not None else to,
                at=self.clock.now(),
                id=f"twilio-status:{sid}" if sid else None,
                detail=f"twilio {status} {code}",
            )
        except ValueError:  # a field out of bounds (ValidationError)
            return _text("not a message status form (a field is out of bounds)", 400)
        report = self._ingest([(f"twilio-status:{sid or 'unknown'}", event)])
        log.info(
            "twilio status %s %s for touch %s: %d recorded, %d duplicates, %d unmatched",
            status,
            code,
            touch_id if touch_id is not None else "(none; by number)",
            report.recorded,
            report.duplicates,
            len(report.unmatched),
        )
        return _twiml()

    def _twilio_delivered(self, sid: str) -> Response:
        """A ``delivered`` status: a ``delivered`` event of the touch that has the SID."""
        touch_id = self._touch_for(sid) if sid else None
        if touch_id is None:
            log.info("twilio status delivered: no touch has the message SID; ignored")
            return _twiml()
        event = DeliveryEvent(
            type="delivered",
            channel="sms",
            touch_id=touch_id,
            at=self.clock.now(),
            id=f"twilio-status:{sid}:delivered",
        )
        report = self._ingest_deliveries([(f"twilio-status:{sid}", event)])
        log.info(
            "twilio status delivered for touch %s: %d recorded, %d duplicates",
            touch_id,
            report.recorded,
            report.duplicates,
        )
        return _twiml()

    def mailchimp_events(self, request: Request) -> Response:
        """``POST /webhooks/mailchimp``: a signed Mandrill webhook batch (HEAD: 200)."""
        if request.method == "HEAD":
            return _text("ok", 200)
        problem = self._mailchimp_problem()
        if problem is not None:
            log.warning("mailchimp batch refused (503): %s", problem)
            _discard(request)
            return _text(problem, 503)
        limit = mandrill.MAX_BODY_BYTES
        if (request.content_length or 0) > limit:
            log.warning("mailchimp batch refused (413): over %d bytes", limit)
            return _text(f"content too large: at most {limit} bytes", 413)
        request.max_content_length = request.max_form_memory_size = limit
        signature = request.headers.get(mandrill.SIGNATURE_HEADER, "")
        if not signature:
            log.warning("mailchimp batch refused (401): no signature")
            _discard(request)
            return _text(f"unauthorized: no {mandrill.SIGNATURE_HEADER}", 401)
        assert self.public_url is not None
        params = list(request.form.items(multi=True))
        url = self.public_url + request.path
        if not mandrill.verify(self._mailchimp_key, url, params, signature):
            log.warning("mailchimp batch refused (403): bad signature")
            return _text("forbidden: the signature does not match MAILCHIMP_WEBHOOK_KEY", 403)
        try:
            batch = mandrill.read_mandrill_batch(request.form.get(mandrill.EVENTS_FIELD))
        except InputError as exc:
            log.warning("mailchimp batch refused (400): %s", exc)
            return _text(f"bad request: {exc}; expected mandrill_events, a JSON array", 400)
        report = self._ingest((f"mailchimp batch {where}", e) for where, e in batch.events)
        delivery = self._ingest_deliveries(
            (f"mailchimp batch {where}", e) for where, e in batch.deliveries
        )
        now = self.clock.now()
        messages = [
            RawMessage(where=f"Mandrill inbound {w}", raw=raw, source="parse", received_at=now)
            for w, raw in batch.inbound
        ]
        try:
            intake = ingest_messages(self.engine, messages, now=now, config=self.config)
        except StoreError as exc:
            log.error("mailchimp inbound: store error %s; answered 503", type(exc).__name__)
            return _text("store unavailable, try again later", 503)
        self._act_now(intake.person_ids, now, "mailchimp inbound")
        log.info(
            "mailchimp batch: %d items, %d recorded, %d duplicates, %d inbound stored, "
            "%d unmatched, %d bad, %d quiet",
            batch.items,
            report.recorded + delivery.recorded,
            report.duplicates + delivery.duplicates,
            intake.stored,
            len(report.unmatched),
            len(report.bad) + len(delivery.bad) + len(intake.errors),
            batch.quiet,
        )
        return _json(
            {
                "recorded": report.recorded + delivery.recorded,
                "duplicates": report.duplicates + delivery.duplicates + intake.duplicates,
                "inbound": intake.stored,
                "unmatched": len(report.unmatched),
                "bad": len(report.bad) + len(delivery.bad) + len(intake.errors),
            }
        )

    def _mailchimp_problem(self) -> str | None:
        missing = [
            name
            for name, value in (
                ("MAILCHIMP_WEBHOOK_KEY", self._mailchimp_key),
                ("OUTREACH_PUBLIC_URL", self.public_url),
            )
            if not value
        ]
        if not missing:
            return None
        return (
            " and ".join(missing)
            + (" is" if len(missing) == 1 else " are")
            + " not set: Mandrill webhooks are verified with the webhook's key over the URL "
            "it posts to, OUTREACH_PUBLIC_URL + the path"
        )

    # -- helpers ---------------------------------------------------------------------------

    def _ingest_deliveries(self, events: Iterable[tuple[str, DeliveryEvent]]) -> DeliveryReport:
        report = ingest_deliveries(self.engine, events, now=self.clock.now())
        _log_deliveries(report)
        return report

    def _ingest(self, events: Iterable[tuple[str, InboundEvent | str]]) -> IngestReport:
        report = _ingest_events(
            self.engine, events, now=self.clock.now(), default_region=self.default_region
        )
        _log_ingest(report)
        return report

    def _check_sendgrid(self, request: Request, body: bytes) -> str | None:
        """Why the batch is refused, or ``None`` when it is signed and fresh."""
        assert self._sendgrid_key is not None
        signature = _read_signature(request.headers, self.clock.now())
        if isinstance(signature, str):
            return signature
        digest = hashlib.sha256(signature.stamp.encode() + body).digest()
        if not _signature_matches(self._sendgrid_key, signature, digest):
            return "the signature does not match SENDGRID_WEBHOOK_PUBLIC_KEY"
        return None

    def _twilio_problem(self) -> str | None:
        missing = []
        if self._twilio is None:
            missing.append("TWILIO_AUTH_TOKEN")
        if self.public_url is None:
            missing.append("OUTREACH_PUBLIC_URL")
        if not missing:
            return None
        return (
            " and ".join(missing)
            + (" is" if len(missing) == 1 else " are")
            + " not set: Twilio webhooks are verified with TWILIO_AUTH_TOKEN over the URL "
            "Twilio posts to, OUTREACH_PUBLIC_URL + the path"
        )

    def _check_twilio(self, request: Request) -> Response | None:
        """``None`` when ``X-Twilio-Signature`` is good, else the 503 or 403 to answer."""
        problem = self._twilio_problem()
        if problem is not None:
            log.warning("twilio webhook refused: %s", problem)
            return _text(problem, 503)
        assert self._twilio is not None and self.public_url is not None
        url = self.public_url + request.path
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        signature = request.headers.get(TWILIO_SIGNATURE_HEADER, "")
        if signature and self._twilio.validate(url, request.form, signature):
            return None
        hint = ""
        if request.headers.get(_TWILIO_SETTINGS_HEADER):
            hint = " (signed with a webhook SharedKey; only the Auth Token is supported)"
        log.warning(
            "twilio webhook %s refused (403): %s%s",
            request.path,
            "bad signature" if signature else "no signature",
            hint,
        )
        return _text("forbidden: the X-Twilio-Signature does not match", 403)

    def _touch_for(self, sid: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(_touches.c.id)
                .where(_touches.c.provider_message_id == sid)
                .order_by(_touches.c.id)
                .limit(1)
            ).scalar()


def _log_deliveries(report: DeliveryReport) -> None:
    for message in report.ignored[:_LOG_ITEMS]:
        log.info("not recorded: %s", message)
    for message in report.bad[:_LOG_ITEMS]:
        log.warning("left out: %s", message)


def _log_ingest(report: IngestReport) -> None:
    # places and reasons, never an address; a flood of bad items is not a flood of lines
    for message in report.unmatched[:_LOG_ITEMS]:
        log.info("not recorded: %s", message)
    for message in report.bad[:_LOG_ITEMS]:
        log.warning("left out: %s", message)
    hidden = max(0, len(report.unmatched) - _LOG_ITEMS) + max(0, len(report.bad) - _LOG_ITEMS)
    if hidden:
        log.warning("%d more not recorded or left out (not listed)", hidden)


def _discard(request: Request) -> None:
    """Read a small refused body to its end, so the client reads the answer, not a reset."""
    length = request.content_length
    if length is None or length > _DRAIN_BYTES:
        return
    stream = request.stream
    while stream.read(_READ_CHUNK):
        pass


def _spool(request: Request, out: IO[bytes], digest: Any, limit: int) -> int | None:
    """Copy the body into ``out``, hashing it; its size, or None past ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        return None
    request.max_content_length = limit  # this route's limit, not the other routes' 10 MB
    size = 0
    try:
        stream = request.stream
        while chunk := stream.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                return None
            digest.update(chunk)
            out.write(chunk)
    except RequestEntityTooLarge:
        return None
    return size


def _too_large(limit: int) -> Response:
    response = _text(
        f"content too large: an Inbound Parse post may have at most {limit} bytes "
        f"(SendGrid's message limit is {INBOUND_MESSAGE_LIMIT // (1024 * 1024)} MB); "
        "nothing was stored",
        413,
    )
    response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


def make_app(
    engine: Engine,
    settings: Settings,
    config: CadenceConfig | None,
    clock: Clock,
    channels: Mapping[str, Any] | None = None,
) -> WebhookApp:
    """The webhook receiver as a WSGI app (see the module docstring for its routes).

    ``config`` gives ``policy.default_region`` for phone numbers without a country code
    (``US`` when ``None``); ``clock`` stamps events and checks SendGrid's timestamps.
    ``channels`` (the live email and SMS channels) let an incoming reply or out-of-office
    notice cancel at once what a provider holds for that person.
    """
    return WebhookApp(engine, settings, config, clock, channels)
