"""SendGrid Inbound Parse posts, turned back into the raw message intake reads.

SendGrid posts each message it receives for the parse hostname as ``multipart/form-data``
in one of two shapes (twilio.com/docs/sendgrid/for-developers/parsing-email/
setting-up-the-inbound-parse-webhook, "Default Parameters" and "Raw Parameters"):

raw ("Send Raw" checked)
    the whole MIME message in the ``email`` field, with ``to``, ``from``, ``cc``,
    ``subject``, ``envelope``, ``charsets``, ``dkim``, ``SPF``, ``sender_ip`` and, with
    spam check on, ``spam_score`` and ``spam_report``.
parsed (the default)
    ``headers`` (the message's raw header block), ``text`` and ``html`` bodies, each in the
    character set ``charsets`` names for it (``{"text": "iso-8859-1", ...}``; SendGrid
    decodes ``to``, ``from``, ``cc`` and ``subject`` to UTF-8), ``attachments`` (a count),
    ``attachment-info`` (``{"attachment1": {"filename", "name", "type", "content-id"}}``),
    ``content-ids`` (``{"<cid>": "attachment1"}``) and one file part per attachment,
    ``attachment1`` .. ``attachmentN``.

:func:`read_form` streams such a body into fields (kept as bytes, never decoded with a
guessed charset) and spooled file parts; :func:`raw_message_from_form` turns the fields
into one RFC 5322 message: in raw mode the posted bytes, in parsed mode a faithful rebuild
(the original header block with Message-ID, In-Reply-To, References, Auto-Submitted and
the rest; the bodies re-encoded as UTF-8 ``multipart/alternative``; the attachments
re-attached, streamed from their spooled files). Either way an ``X-Envelope-To`` header
carries the SMTP recipients of ``envelope`` when the message does not already name them,
so a reply to the per-touch plus address (``replies+<token>@domain``) is matched even when
its To header does not show it::

    with read_form(body, request.content_type) as form:
        raw = raw_message_from_form(form.fields, form.files)
    ingest_messages(engine, [RawMessage("Inbound Parse", raw, "parse")], now=now)

A malformed ``envelope``, ``charsets``, ``attachment-info`` or ``content-ids`` field does
not lose the message: the field is ignored and an ``X-Inbound-Parse-Note`` header in the
rebuilt message says so (:attr:`RebuiltMessage.notes` lists the same lines). Only a form
with neither ``email`` nor ``headers`` is refused, with :class:`ParseFormError`.
"""

from __future__ import annotations

import base64
import io
import json
import quopri
import re
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import Header
from email.utils import encode_rfc2231, formataddr, getaddresses
from typing import IO, Any, Literal, Protocol

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

__all__ = [
    "FIELD_MEMORY_BYTES",
    "MAX_PARTS",
    "NOTE_HEADER",
    "FormValue",
    "InboundForm",
    "ParseFormError",
    "RebuiltMessage",
    "raw_message_from_form",
    "read_form",
    "rebuild_message",
]

#: a part larger than this is spooled to a temporary file instead of kept in memory
FIELD_MEMORY_BYTES = 1024 * 1024
#: parts accepted in one post (SendGrid sends about 15 fields plus one per attachment)
MAX_PARTS = 1000
#: the header that records a field the rebuild had to ignore
NOTE_HEADER = "X-Inbound-Parse-Note"
ENVELOPE_HEADER = "X-Envelope-To"

_CHUNK = 64 * 1024
#: base64 input per write: a multiple of 57 bytes, so every encoded line is 76 characters
_B64_CHUNK = 57 * 16 * 1024
_RAW_HEAD_BYTES = 1024 * 1024
#: top-level fields that describe the original body, which the rebuild replaces
_REPLACED = frozenset(
    {b"content-type", b"content-transfer-encoding", b"content-disposition", b"content-length"}
)
_FIELD_LINE = re.compile(rb"^[!-9;-~]+[ \t]*:")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*$")
_CONTENT_ID = re.compile(r"^[!-;=?-~]{1,250}$")  # visible ASCII without "<" and ">"
_ATTACHMENT = re.compile(r"^attachment(\d{1,6})$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_NEWLINES = re.compile(r"\r\n|\r")


class ParseFormError(ValueError):
    """The body is not a usable Inbound Parse post; the message names the field or the fault.

    The route answers 400 with it: SendGrid would otherwise retry a hopeless post for
    three days.
    """


class _Upload(Protocol):
    """What a file part offers (:class:`werkzeug.datastructures.FileStorage` does)."""

    filename: str | None
    content_type: str | None
    stream: IO[bytes]


#: a form value: bytes as posted, text some caller already decoded, or a spooled part
FormValue = bytes | str | _Upload


@dataclass
class InboundForm:
    """A parsed multipart body: ``fields`` (bytes, or a spooled :class:`FileStorage` when
    larger than :data:`FIELD_MEMORY_BYTES`) and ``files`` (the parts with a filename).

    Close it (or use it as a context manager) to remove the spooled files.
    """

    fields: dict[str, bytes | FileStorage] = field(default_factory=dict)
    files: dict[str, FileStorage] = field(default_factory=dict)
    #: parts with the same name as an earlier one, or without a name (ignored)
    ignored: int = 0
    _open: list[IO[bytes]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        """Remove every spooled part."""
        for handle in self._open:
            handle.close()
        self._open.clear()

    def __enter__(self) -> InboundForm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RebuiltMessage:
    """The message an Inbound Parse post carried.

    ``mode`` is ``raw`` or ``parsed``; ``attachments`` counts the re-attached files;
    ``notes`` say which malformed fields were ignored (no addresses, no content).
    """

    raw: bytes
    mode: Literal["raw", "parsed"]
    attachments: int = 0
    notes: tuple[str, ...] = ()


# -- reading the body --------------------------------------------------------------------


def read_form(
    stream: IO[bytes],
    content_type: str | None,
    *,
    max_parts: int = MAX_PARTS,
    memory_bytes: int = FIELD_MEMORY_BYTES,
) -> InboundForm:
    """Stream a ``multipart/form-data`` body into an :class:`InboundForm`.

    Field values stay bytes: werkzeug's form parser would decode them as UTF-8 and replace
    what is not, while SendGrid sends ``text`` and ``html`` in the message's own charset and
    says which only in ``charsets``. Parts over ``memory_bytes`` (an attachment, a raw
    ``email``) go to temporary files, so no part is held in memory whole. Raises
    :class:`ParseFormError` when the body is not multipart/form-data or is malformed.
    """
    mimetype, options = parse_options_header(content_type or "")
    if mimetype != "multipart/form-data":
        got = mimetype or "no Content-Type"
        raise ParseFormError(
            f"expected multipart/form-data (SendGrid Inbound Parse posts one), got {got}"
        )
    boundary = options.get("boundary", "")
    if not boundary or len(boundary) > 200 or not boundary.isascii():
        raise ParseFormError("the multipart/form-data Content-Type names no usable boundary")
    decoder = MultipartDecoder(boundary.encode("ascii"), max_parts=max_parts)
    form = InboundForm()
    part: Field | File | None = None
    spool: IO[bytes] | None = None
    done = False
    try:
        while not done:
            chunk = stream.read(_CHUNK)
            decoder.receive_data(chunk or None)
            event = decoder.next_event()
            while not isinstance(event, NeedData):
                if isinstance(event, Epilogue):
                    done = True
                    break
                if isinstance(event, Field | File):
                    part = event
                    # Closed by form.close(), or by _keep once read back into memory.
                    spool = tempfile.SpooledTemporaryFile(max_size=memory_bytes)  # noqa: SIM115
                    form._open.append(spool)
                elif isinstance(event, Data) and spool is not None and part is not None:
                    spool.write(event.data)
                    if not event.more_data:
                        _keep(form, part, spool, memory_bytes)
                        part, spool = None, None
                event = decoder.next_event()
            if not chunk and not done:
                raise ValueError("the body ended inside the form")
    except RequestEntityTooLarge:
        form.close()
        raise ParseFormError(f"the form has more than {max_parts} parts") from None
    except ValueError as exc:  # the decoder's "Invalid form-data ...", bad part headers
        form.close()
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ParseFormError(
            f"the body is not well-formed multipart/form-data ({reason})"
        ) from None
    except BaseException:
        form.close()
        raise
    return form


def _keep(form: InboundForm, part: Field | File, spool: IO[bytes], memory_bytes: int) -> None:
    name = part.name
    if not name or name in form.fields or name in form.files:
        form.ignored += 1
        spool.close()
        form._open.remove(spool)
        return
    content_type = part.headers.get("content-type")
    spool.seek(0)
    if isinstance(part, File):
        form.files[name] = FileStorage(
            spool, part.filename, name, content_type=content_type, headers=part.headers
        )
        return
    size = spool.seek(0, io.SEEK_END)
    spool.seek(0)
    if size <= memory_bytes:
        form.fields[name] = spool.read()
        spool.close()
        form._open.remove(spool)
    else:
        form.fields[name] = FileStorage(spool, None, name, content_type=content_type)


# -- the message -------------------------------------------------------------------------


def raw_message_from_form(
    form: Mapping[str, FormValue], files: Mapping[str, _Upload] | None = None
) -> bytes:
    """The raw RFC 5322 message of an Inbound Parse post (see :func:`rebuild_message`)."""
    return rebuild_message(form, files).raw


def rebuild_message(
    form: Mapping[str, FormValue], files: Mapping[str, _Upload] | None = None
) -> RebuiltMessage:
    """Rebuild the message of an Inbound Parse post from its ``form`` fields and ``files``.

    Values may be bytes as posted (decoded here with ``charsets``), already decoded text,
    or file-like parts. An ``email`` field (raw mode) wins over ``headers`` (parsed mode);
    a form with neither raises :class:`ParseFormError`. Example::

        raw = raw_message_from_form({"headers": b"Subject: hi\\n", "text": b"hello"}, {})
    """
    files = files or {}
    notes: list[str] = []
    charsets = _json_object(form, "charsets", notes)
    envelope = _json_object(form, "envelope", notes)
    recipients = _envelope_to(envelope, notes)
    email = form.get("email", files.get("email"))
    if email is not None:
        return _raw_mode(email, recipients, notes)
    if "headers" in form:
        return _parsed_mode(form, files, charsets, recipients, notes)
    raise ParseFormError(
        "not an Inbound Parse post: the form has neither an 'email' field (raw mode) nor "
        "a 'headers' field (parsed mode)"
    )


def _raw_mode(value: FormValue, recipients: list[str], notes: list[str]) -> RebuiltMessage:
    source = _stream(value)
    head = source.read(_RAW_HEAD_BYTES)
    newline = b"\r\n" if b"\r\n" in head[:4096] else b"\n"
    end = _header_end(head)
    fields, _ = _header_fields(head[:end])
    prefix = _trace_headers(fields, recipients, notes, newline)
    if not prefix and isinstance(value, bytes):
        return RebuiltMessage(value, "raw", notes=tuple(notes))
    with _output() as out:
        out.write(prefix)
        out.write(head)
        shutil.copyfileobj(source, out, _CHUNK)
        raw = _contents(out)
    return RebuiltMessage(raw, "raw", notes=tuple(notes))


def _parsed_mode(
    form: Mapping[str, FormValue],
    files: Mapping[str, _Upload],
    charsets: dict[str, Any],
    recipients: list[str],
    notes: list[str],
) -> RebuiltMessage:
    with _output() as out:
        attachments = _write_parsed(out, form, files, charsets, recipients, notes)
        raw = _contents(out)
    return RebuiltMessage(raw, "parsed", attachments, tuple(notes))


def _write_parsed(
    out: IO[bytes],
    form: Mapping[str, FormValue],
    files: Mapping[str, _Upload],
    charsets: dict[str, Any],
    recipients: list[str],
    notes: list[str],
) -> int:
    """Write the rebuilt message to ``out``; the number of attachments."""
    block = _bytes(form["headers"])
    newline = b"\r\n" if b"\r\n" in block else b"\n"
    fields, dropped = _header_fields(block)
    if dropped:
        notes.append(f"headers: {dropped} line(s) that are not header fields were dropped")
    names = {_name(f) for f in fields}
    for lines in fields:
        if _name(lines) not in _REPLACED:
            out.write(newline.join(lines) + newline)
    if b"mime-version" not in names:
        out.write(b"MIME-Version: 1.0" + newline)
    for header, key in (("Subject", "subject"), ("From", "from"), ("To", "to"), ("Cc", "cc")):
        if header.lower().encode() not in names and form.get(key):
            value = _clean(_text(form[key], charsets.get(key), key, notes))
            if value:
                out.write(_header_line(header, value) + newline)

    bodies: list[tuple[str, str]] = []
    for key in ("text", "html"):
        if form.get(key) is not None:
            subtype = "html" if key == "html" else "plain"
            bodies.append((subtype, _text(form[key], charsets.get(key), key, notes)))
    attachments = _attachments(form, files, notes)
    out.write(_trace_headers(fields, recipients, notes, newline))

    if attachments:
        mixed = _boundary()
        out.write(_multipart_header("mixed", mixed) + newline + newline)
        out.write(b"--" + mixed + newline)
        _write_bodies(out, bodies, newline)
        for attachment in attachments:
            out.write(newline + b"--" + mixed + newline)
            attachment.write(out, newline)
        out.write(newline + b"--" + mixed + b"--" + newline)
    else:
        _write_bodies(out, bodies, newline)
    return len(attachments)


def _output() -> IO[bytes]:
    """Where a message is written: memory while small, then a temporary file, read back
    once at the end into bytes of exactly its size (a growing buffer would over-allocate
    by an eighth of a large message)."""
    return tempfile.SpooledTemporaryFile(max_size=FIELD_MEMORY_BYTES)


def _contents(out: IO[bytes]) -> bytes:
    out.seek(0)
    return out.read()


def _write_bodies(out: IO[bytes], bodies: list[tuple[str, str]], newline: bytes) -> None:
    """The text and HTML bodies: one part, or a ``multipart/alternative`` of both."""
    if not bodies:
        bodies = [("plain", "")]
    if len(bodies) == 1:
        _write_text(out, *bodies[0], newline)
        return
    alternative = _boundary()
    out.write(_multipart_header("alternative", alternative) + newline + newline)
    for subtype, text in bodies:
        out.write(b"--" + alternative + newline)
        _write_text(out, subtype, text, newline)
        out.write(newline)
    out.write(b"--" + alternative + b"--" + newline)


def _write_text(out: IO[bytes], subtype: str, text: str, newline: bytes) -> None:
    encoded = quopri.encodestring(_NEWLINES.sub("\n", text).encode("utf-8"))
    if newline != b"\n":
        encoded = encoded.replace(b"\n", newline)
    out.write(f'Content-Type: text/{subtype}; charset="utf-8"'.encode() + newline)
    out.write(b"Content-Transfer-Encoding: quoted-printable" + newline + newline)
    out.write(encoded)


@dataclass(frozen=True)
class _Attachment:
    upload: _Upload
    filename: str
    content_type: str
    content_id: str | None

    def write(self, out: IO[bytes], newline: bytes) -> None:
        """Headers, then the content base64-encoded chunk by chunk from its spooled file."""
        params = _filename_param("name", self.filename)
        disposition = "inline" if self.content_id else "attachment"
        out.write(f"Content-Type: {self.content_type}{params}".encode() + newline)
        filename = _filename_param("filename", self.filename)
        out.write(f"Content-Disposition: {disposition}{filename}".encode() + newline)
        if self.content_id:
            out.write(f"Content-ID: <{self.content_id}>".encode() + newline)
        out.write(b"Content-Transfer-Encoding: base64" + newline + newline)
        source = _stream(self.upload)
        while chunk := _read_full(source, _B64_CHUNK):
            encoded = base64.encodebytes(chunk)
            out.write(encoded if newline == b"\n" else encoded.replace(b"\n", newline))


def _attachments(
    form: Mapping[str, FormValue], files: Mapping[str, _Upload], notes: list[str]
) -> list[_Attachment]:
    info = _json_object(form, "attachment-info", notes)
    content_ids = _json_object(form, "content-ids", notes)
    cid_of = {v: k for k, v in content_ids.items() if isinstance(v, str)}
    numbered = sorted(
        (int(m.group(1)), name, upload)
        for name, upload in files.items()
        if (m := _ATTACHMENT.match(name))
    )
    result = []
    for _, name, upload in numbered:
        meta = info.get(name) if isinstance(info.get(name), dict) else {}
        filename = _clean(str(meta.get("filename") or meta.get("name") or upload.filename or name))
        content_type = next(
            (
                t.strip().lower()
                for t in (meta.get("type"), upload.content_type)
                if isinstance(t, str) and _MEDIA_TYPE.match(t.strip())
            ),
            "application/octet-stream",
        )
        cid = meta.get("content-id") or cid_of.get(name)
        cid = cid.strip().strip("<>") if isinstance(cid, str) else None
        cid = cid if cid and _CONTENT_ID.match(cid) else None
        result.append(_Attachment(upload, filename, content_type, cid))
    declared = _bytes(form["attachments"]).strip() if form.get("attachments") else b""
    if declared.isdigit() and int(declared) != len(result):
        notes.append(f"attachments says {int(declared)}, {len(result)} file part(s) arrived")
    return result


# -- header helpers ----------------------------------------------------------------------


def _header_fields(block: bytes) -> tuple[list[list[bytes]], int]:
    """The header fields of ``block`` as lists of lines (continuations kept), and how many
    lines were neither a field nor a continuation (dropped)."""
    fields: list[list[bytes]] = []
    dropped = 0
    for line in re.split(rb"\r\n|\n|\r", block):
        if not line.strip(b" \t"):
            continue
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1].append(line)
            else:
                dropped += 1
        elif _FIELD_LINE.match(line):
            fields.append([line])
        else:
            dropped += 1
    return fields, dropped


def _name(lines: list[bytes]) -> bytes:
    return lines[0].split(b":", 1)[0].strip().lower()


def _trace_headers(
    fields: list[list[bytes]], recipients: list[str], notes: list[str], newline: bytes
) -> bytes:
    """``X-Envelope-To`` (when no such header names the recipients) and the notes."""
    lines = []
    if recipients:
        values = [
            b" ".join(field_lines).split(b":", 1)[1].decode("utf-8", "replace")
            for field_lines in fields
            if _name(field_lines) == ENVELOPE_HEADER.lower().encode()
        ]
        present = {address.lower() for _, address in getaddresses(values)}
        if not all(r.lower() in present for r in recipients):
            lines.append(f"{ENVELOPE_HEADER}: {', '.join(recipients)}".encode())
    lines.extend(f"{NOTE_HEADER}: {_clean(note)}".encode() for note in notes)
    return b"".join(line + newline for line in lines)


def _header_line(name: str, value: str) -> bytes:
    """``Name: value`` as ASCII: RFC 2047 encoded words for non-ASCII text."""
    if value.isascii():
        return f"{name}: {value}".encode()
    if name == "Subject":
        return f"{name}: {Header(value, 'utf-8').encode()}".encode()
    # Display names as encoded words; a non-ASCII address itself (SMTPUTF8) stays UTF-8.
    pairs = getaddresses([value])
    encoded = ", ".join(_address(pair) for pair in pairs if pair[1])
    return f"{name}: {encoded or value}".encode()


def _address(pair: tuple[str, str]) -> str:
    try:
        return formataddr(pair, charset="utf-8")
    except UnicodeEncodeError:  # formataddr refuses a non-ASCII address; keep it as UTF-8
        display, address = pair
        return f"{Header(display, 'utf-8').encode()} <{address}>" if display else address


def _filename_param(param: str, filename: str) -> str:
    if filename.isascii() and not any(c in filename for c in '"\\'):
        return f'; {param}="{filename}"'
    return f"; {param}*={encode_rfc2231(filename, 'utf-8')}"


def _multipart_header(subtype: str, boundary: bytes) -> bytes:
    return f'Content-Type: multipart/{subtype}; boundary="{boundary.decode()}"'.encode()


def _boundary() -> bytes:
    # "=_" cannot occur in base64 or quoted-printable output, so no part can contain it.
    return f"=_outreach_{secrets.token_hex(12)}".encode()


def _header_end(data: bytes) -> int:
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    return min(ends) if ends else len(data)


def _clean(text: str) -> str:
    """One line, no control characters (a value from the form must not start a header)."""
    return _CONTROL.sub(" ", text).strip()


# -- field helpers -----------------------------------------------------------------------


def _stream(value: FormValue) -> IO[bytes]:
    if isinstance(value, bytes):
        return io.BytesIO(value)
    if isinstance(value, str):
        return io.BytesIO(value.encode("utf-8", "surrogateescape"))
    stream = value.stream
    if stream.seekable():
        stream.seek(0)
    return stream


def _bytes(value: FormValue) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return _stream(value).read()


def _read_full(stream: IO[bytes], size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a short read would break base64 lines)."""
    data = stream.read(size)
    if not data or len(data) == size:
        return data
    pieces = [data]
    have = len(data)
    while have < size and (more := stream.read(size - have)):
        pieces.append(more)
        have += len(more)
    return b"".join(pieces)


def _text(value: FormValue, charset: Any, name: str, notes: list[str]) -> str:
    """A text field decoded with the charset ``charsets`` names for it (UTF-8 if none)."""
    if isinstance(value, str):
        return value
    data = _bytes(value)
    if isinstance(charset, str) and charset.strip():
        try:
            return data.decode(charset.strip(), "replace")
        except (LookupError, ValueError):
            shown = _CONTROL.sub("", charset)[:40]
            notes.append(f"charsets names an unknown charset {shown!r} for {name}; read as UTF-8")
    return data.decode("utf-8", "replace")


def _json_object(form: Mapping[str, FormValue], name: str, notes: list[str]) -> dict[str, Any]:
    value = form.get(name)
    if value is None:
        return {}
    data = _bytes(value)
    if not data.strip():
        return {}
    try:
        parsed = json.loads(data.decode("utf-8", "replace"))
        # A JSON escape can still name half a surrogate pair ("\ud800"), which no header
        # can carry: round-trip once more with such characters replaced.
        text = json.dumps(parsed, ensure_ascii=False)
        if not text.isascii():
            parsed = json.loads(text.encode("utf-8", "replace").decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        notes.append(f"{name} is not JSON; ignored")
        return {}
    if not isinstance(parsed, dict):
        notes.append(f"{name} is not a JSON object; ignored")
        return {}
    return parsed


def _envelope_to(envelope: Mapping[str, Any], notes: list[str]) -> list[str]:
    to = envelope.get("to")
    if to is None:
        return []
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(a, str) for a in to):
        notes.append("envelope.to is not a list of addresses; ignored")
        return []
    return [clean for a in to if (clean := _clean(a).replace(",", " "))]
