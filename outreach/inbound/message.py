"""Raw mail to :class:`Mail`: headers, readable text, and what a delivery report says.

:func:`parse_mail` tolerates what real mail gets wrong (unknown or wrongly declared charsets,
8-bit headers, missing ``Content-Type``, broken MIME boundaries) and records each problem in
``Mail.defects``; it raises :class:`MailError` only when the bytes are not mail at all.

The MIME walk is a small byte-level one rather than ``email.parser``: the stdlib parser with
``policy.default`` needs about 1.5 ms for a 5 KB reply (0.13 ms with ``compat32``) and copies
every attachment line by line, where intake needs thousands of messages a second. Here a part
is a pair of offsets into the raw bytes: only ``text/plain`` and ``text/html`` body parts, the
``message/delivery-status`` report and the returned message's header block are ever sliced and
decoded, and an attachment costs one ``bytes.find`` for the boundary after it. Addresses and
dates still go through ``email.utils``.

Example::

    mail = parse_mail(raw)
    mail.from_address, mail.subject, mail.text
    [(d.recipient, d.status) for d in mail.delivery_status]   # a bounce's failed recipients
"""

from __future__ import annotations

import binascii
import codecs
import html as _html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime
from functools import lru_cache
from types import MappingProxyType

__all__ = ["DeliveryStatus", "Mail", "MailError", "parse_mail"]


class MailError(ValueError):
    """The bytes cannot be used as mail at all (empty, binary, JSON, no header block).

    ``str()`` says why in words a mailbox owner understands; it never quotes addresses.
    """


@dataclass(frozen=True)
class DeliveryStatus:
    """One per-recipient block of an RFC 3464 ``message/delivery-status`` part.

    ``recipient`` is the Final-Recipient (else Original-Recipient) as a lowercase bare address,
    ``action`` one of failed, delayed, delivered, relayed, expanded; ``status`` the enhanced
    code alone ("5.1.1"), taken from Status, else from the Diagnostic-Code, else "".
    """

    recipient: str
    action: str
    status: str
    diagnostic: str | None


@dataclass(frozen=True)
class Mail:
    """A parsed message: decoded headers, the text to read, and any delivery report.

    ``text`` is the ``text/plain`` body (several inline text parts joined), or text extracted
    from the HTML when there is no plain part, with ``\\n`` newlines; quoted history is still
    in it (:mod:`outreach.inbound.classify` cuts it). ``returned_*`` describe the original
    message a bounce returns, so the bounce can be matched to the touch that caused it.
    """

    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_address: str | None
    from_name: str | None
    recipients: tuple[str, ...]
    subject: str
    date: datetime | None
    headers: Mapping[str, tuple[str, ...]]
    text: str
    html: str | None
    delivery_status: tuple[DeliveryStatus, ...]
    returned_message_id: str | None
    returned_headers: Mapping[str, tuple[str, ...]]
    defects: tuple[str, ...]
    size: int

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), decoded; None when absent."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


# ---------------------------------------------------------------------------- header block

_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)(?:\n|\Z)")
_BLANK_LINE = re.compile(rb"\n[ \t]*\r?\n")
_MAIL_HEADERS = frozenset(
    {
        "from", "to", "cc", "subject", "date", "message-id", "received", "return-path",
        "delivered-to", "mime-version", "content-type", "sender", "reply-to", "in-reply-to",
        "references", "x-original-to", "envelope-to", "x-failed-recipients",
    }
)  # fmt: skip
_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to", "cc")
_MAX_DEPTH = 16
#: how much of an encoded returned message is decoded to read its header block
_RETURNED_PREFIX = 256 * 1024

_Fields = list[tuple[str, bytes]]


def _read_fields(raw: bytes, start: int, end: int) -> tuple[_Fields, int, bool]:
    """The header fields from ``start``: ``[(lowercase name, unfolded value)]``, where the body
    starts, and whether the block ended cleanly (a blank line or the end of the range).

    A line that is neither a field nor a continuation ends the block early, as in the stdlib
    parser; the caller records that as a defect when fields came before it.
    """
    first_nl = raw.find(b"\n", start, end)
    if not raw[start : end if first_nl < 0 else first_nl].strip(b" \t\r"):
        return [], end if first_nl < 0 else first_nl + 1, True
    blank = _BLANK_LINE.search(raw, start, end)
    block_end, body = (blank.start() + 1, blank.end()) if blank else (end, end)
    fields: _Fields = []
    pos = start
    while pos < block_end:
        match = _FIELD.match(raw, pos, block_end)
        if match is None:
            # An indented first line is no header block; any other stray line starts the body.
            return fields, pos, raw[pos : pos + 1] in (b" ", b"\t") and not fields
        value = match.group(2)
        if b"\n" in value:  # unfold: drop the line breaks, a folding tab reads as a space
            value = value.replace(b"\r\n", b"\n").replace(b"\n\t", b" ").replace(b"\n", b"")
        fields.append((match.group(1).lower().decode("ascii"), value.strip()))
        pos = match.end()
    return fields, body, True


def _header_text(value: bytes, name: str, defects: list[str]) -> str:
    """A raw header value as str: ASCII, else UTF-8 (RFC 6532), else cp1252 with a defect."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text, used = _fallback(value)
    defects.append(f"8-bit header '{name}' is not UTF-8, decoded as {used}")
    return text


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _decode_words(value: str, defects: list[str]) -> str:
    """Decode RFC 2047 encoded words; whitespace between adjacent words is dropped and bytes of
    adjacent words in one charset are joined before decoding (a character may span two)."""
    if "=?" not in value:
        return value
    out: list[str] = []
    pending = bytearray()
    charset: str | None = None
    last = 0

    def flush() -> None:
        nonlocal charset
        if charset is not None:
            out.append(_decode(bytes(pending), charset, defects, "header"))
            pending.clear()
            charset = None

    for match in _ENCODED_WORD.finditer(value):
        gap = value[last : match.start()]
        if gap and (charset is None or gap.strip()):
            flush()
            out.append(gap)
        word_charset = match.group(1).split("*", 1)[0].lower()
        data = match.group(3)
        try:
            if match.group(2) in "bB":
                decoded = binascii.a2b_base64(data + "=" * (-len(data) % 4))
            else:
                decoded = binascii.a2b_qp(data.encode("utf-8"), header=True)
        except (binascii.Error, ValueError):
            flush()
            out.append(match.group(0))
            last = match.end()
            continue
        if charset is not None and word_charset != charset:
            flush()
        pending += decoded
        charset = word_charset
        last = match.end()
    flush()
    out.append(value[last:])
    return "".join(out)


# ----------------------------------------------------------------------------- charsets

_CHARSET_ALIASES = {
    "unicode-1-1-utf-8": "utf-8",
    "utf8mb4": "utf-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso8859_8",
}
#: declared single-byte charsets that UTF-8 text is often mislabelled as
_UTF8_SUSPECTS = frozenset({"ascii", "iso8859-1", "iso8859-15", "cp1252"})


@lru_cache(maxsize=256)
def _codec(charset: str) -> tuple[str | None, bool]:
    """Python's codec for a MIME charset name (None if unknown) and whether pure ASCII bytes
    decode to themselves in it (false for UTF-16, UTF-7, ISO-2022-*, EBCDIC)."""
    name = charset.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None, False
    if not getattr(info, "_is_text_encoding", True):
        return None, False
    try:
        ascii_safe = b"Az09:<>@.\n".decode(info.name) == "Az09:<>@.\n"
    except UnicodeDecodeError:
        ascii_safe = False
    if info.name.startswith(("iso2022", "utf-7", "hz")):
        ascii_safe = False
    return info.name, ascii_safe


def _fallback(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _decode(data: bytes, charset: str | None, defects: list[str], where: str = "") -> str:
    """Bytes of a text part to str: the declared charset, then UTF-8, then cp1252/latin-1,
    recording a defect whenever the declaration was not usable as it stood."""
    prefix = f"{where}: " if where and where != "body" else ""
    codec, ascii_safe = _codec(charset) if charset else ("ascii", True)
    if data.isascii() and (ascii_safe or codec is None):
        if codec is None:
            defects.append(f"{prefix}charset '{charset}' unknown, decoded as us-ascii")
        return data.decode("ascii")
    if codec is not None:
        if codec in _UTF8_SUSPECTS and charset:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                if codec != "ascii":
                    defects.append(f"{prefix}declared charset '{charset}' but the text is UTF-8")
                    return text
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    try:
        text, used = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, used = _fallback(data)
    if codec is None:
        defects.append(f"{prefix}charset '{charset}' unknown, decoded as {used}")
    elif not charset:
        defects.append(f"{prefix}8-bit text without a charset, decoded as {used}")
    else:
        defects.append(f"{prefix}text is not valid '{charset}', decoded as {used}")
    return text


# ------------------------------------------------------------------------------- params

_MAIN_VALUE = re.compile(r"\s*([^\s;]*)")
_PARAM = re.compile(r'[;\s]\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _params(value: str | None) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b`` (or ``attachment; filename=x``) as ``("type/subtype", {a: b})``;
    a missing ``;`` before the parameters is tolerated."""
    if not value:
        return "", {}
    head = _MAIN_VALUE.match(value)
    main = head.group(1).lower() if head else ""
    if "=" in main:
        main = ""
    params: dict[str, str] = {}
    if "=" in value:
        for match in _PARAM.finditer(value, head.end() if head else 0):
            name = match.group(1).lower()
            raw = match.group(2).strip()
            if raw.startswith('"'):
                raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            if name.endswith("*") and raw.count("'") >= 2:  # RFC 2231: charset'lang'%xx
                name = name[:-1]
                raw = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), raw)
                raw = raw.split("'", 2)[2]
            params.setdefault(name.split("*", 1)[0], raw)
    return main, params


# ---------------------------------------------------------------------------- MIME walk


class _Walk:
    """What the walk collects while visiting parts."""

    __slots__ = ("defects", "dsn", "htmls", "raw", "report", "returned", "texts")

    def __init__(self, raw: bytes, report: bool, defects: list[str]) -> None:
        self.raw = raw
        self.report = report
        self.defects = defects
        self.texts: list[str] = []
        self.htmls: list[str] = []
        self.dsn: list[DeliveryStatus] = []
        self.returned: _Fields | None = None


def _visit(
    walk: _Walk,
    fields: _Fields,
    start: int,
    end: int,
    depth: int,
    want_text: bool = True,
    want_html: bool = True,
) -> None:
    heads = {name: value for name, value in reversed(fields)}
    ctype, params = _params(_ascii(heads.get("content-type")))
    if "/" not in ctype:
        ctype = "text/plain"
    if ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            walk.defects.append("multipart part without a boundary, read as text")
            ctype, params = "text/plain", {"charset": params.get("charset", "")}
        else:
            parts, closed = _split(walk.raw, start, end, boundary.encode("utf-8", "replace"))
            if not parts:
                walk.defects.append("MIME boundary not found, body read as text")
                ctype, params = "text/plain", {}
            else:
                if not closed:
                    walk.defects.append("missing closing MIME boundary")
                if depth >= _MAX_DEPTH:
                    walk.defects.append(f"MIME nested over {_MAX_DEPTH} levels deep, rest skipped")
                    return
                alternative = ctype == "multipart/alternative"
                for part_start, part_end in parts:
                    part_fields, body, _clean = _read_fields(walk.raw, part_start, part_end)
                    texts, htmls = len(walk.texts), len(walk.htmls)
                    _visit(walk, part_fields, body, part_end, depth + 1, want_text, want_html)
                    if alternative:
                        want_text = want_text and len(walk.texts) == texts
                        want_html = want_html and len(walk.htmls) == htmls
                return
    cte = _ascii(heads.get("content-transfer-encoding")).strip().lower()
    disposition, dparams = _params(_ascii(heads.get("content-disposition")))
    attachment = disposition == "attachment" or "filename" in dparams or "name" in params
    if ctype in ("text/plain", "text/html") and not attachment:
        if not (want_text if ctype == "text/plain" else want_html):
            return
        data = _transfer_decode(walk.raw[start:end], cte, walk.defects)
        text = _newlines(_decode(data, params.get("charset"), walk.defects, "body"))
        if ctype == "text/html":
            walk.htmls.append(text)
        else:
            if params.get("format", "").lower() == "flowed":
                text = _unflow(text, params.get("delsp", "").lower() == "yes")
            walk.texts.append(text)
    elif ctype in ("message/delivery-status", "message/global-delivery-status"):
        data = _transfer_decode(walk.raw[start:end], cte, walk.defects)
        walk.dsn.extend(_delivery_status(data))
    elif walk.report and walk.returned is None and ctype in _RETURNED_TYPES:
        if cte in ("base64", "quoted-printable"):
            data = _transfer_decode(walk.raw[start : min(end, start + _RETURNED_PREFIX)], cte, [])
            walk.returned, _body, _clean = _read_fields(data, 0, len(data))
        else:
            walk.returned, _body, _clean = _read_fields(walk.raw, start, end)


_RETURNED_TYPES = frozenset(
    {"message/rfc822", "message/global", "text/rfc822-headers", "message/rfc822-headers"}
)


def _ascii(value: bytes | None) -> str:
    return value.decode("ascii", "replace") if value else ""


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> tuple[list[tuple[int, int]], bool]:
    """The body ranges between ``--boundary`` lines of a multipart body, and whether the closing
    ``--boundary--`` was there. Offsets only: part contents are not copied."""
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while True:
        found = raw.find(delimiter, pos, end)
        if found < 0:
            break
        after = found + len(delimiter)
        if found > start and raw[found - 1] != 10:  # not at the start of a line
            pos = after
            continue
        closing = raw.startswith(b"--", after, end)
        nl = raw.find(b"\n", after, end)
        line_end = end if nl < 0 else nl
        if raw[after + 2 if closing else after : line_end].strip(b" \t\r"):
            pos = after  # a longer boundary that starts with ours
            continue
        if part_start is not None:
            part_end = found - 1 if found > part_start else part_start
            if part_end > part_start and raw[part_end - 1] == 13:
                part_end -= 1
            parts.append((part_start, part_end))
        if closing:
            return parts, True
        part_start = pos = end if nl < 0 else nl + 1
    if part_start is not None:
        parts.append((part_start, end))
    return parts, False


def _transfer_decode(data: bytes, cte: str, defects: list[str]) -> bytes:
    if cte in ("", "7bit", "8bit", "binary"):
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte == "base64":
        try:
            return binascii.a2b_base64(data)
        except binascii.Error:
            clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
            defects.append("invalid base64 in a text part, decoded what was readable")
            return binascii.a2b_base64(clean[: len(clean) - len(clean) % 4])
    defects.append(f"unknown Content-Transfer-Encoding '{cte[:40]}', read as is")
    return data


def _newlines(text: str) -> str:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _unflow(text: str, delsp: bool) -> str:
    """Join the soft line breaks of ``format=flowed`` text (RFC 3676)."""
    out: list[str] = []
    buffer: str | None = None
    buffer_depth = 0
    for line in text.split("\n"):
        stripped = line.lstrip(">")
        depth = len(line) - len(stripped)
        if stripped.startswith(" "):
            stripped = stripped[1:]
        flowed = stripped.endswith(" ") and stripped != "-- "
        if flowed and delsp:
            stripped = stripped[:-1]
        if buffer is not None and depth != buffer_depth:
            out.append(_quote(buffer_depth) + buffer)
            buffer = None
        buffer = stripped if buffer is None else buffer + stripped
        buffer_depth = depth
        if not flowed:
            out.append(_quote(depth) + buffer)
            buffer = None
    if buffer is not None:
        out.append(_quote(buffer_depth) + buffer)
    return "\n".join(out)


def _quote(depth: int) -> str:
    return ">" * depth + " " if depth else ""


# ------------------------------------------------------------------------ delivery status

_RECORD_FIELDS = frozenset({"final-recipient", "original-recipient", "action", "status"})
_STATUS_CODE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")


def _delivery_status(data: bytes) -> list[DeliveryStatus]:
    """The per-recipient blocks of a ``message/delivery-status`` body."""
    records: list[dict[str, str]] = []
    pos, end = 0, len(data)
    while pos < end:
        fields, nxt, _clean = _read_fields(data, pos, end)
        if nxt <= pos:  # a line that is no field: skip it
            nl = data.find(b"\n", pos)
            nxt = end if nl < 0 else nl + 1
        pos = nxt
        current: dict[str, str] | None = None
        for name, value in fields:
            starts_record = current is None or name in current
            if starts_record and name in _RECORD_FIELDS:
                current = {}
                records.append(current)
            if current is not None and name not in current:
                current[name] = value.decode("utf-8", "replace")
    out: list[DeliveryStatus] = []
    for record in records:
        recipient = record.get("final-recipient") or record.get("original-recipient") or ""
        recipient = recipient.rsplit(";", 1)[-1].strip().strip("<>").strip().lower()
        if not recipient:
            continue
        diagnostic = re.sub(r"\s+", " ", record.get("diagnostic-code", "")).strip()
        diagnostic = re.sub(r"^[\w.-]+\s*;\s*", "", diagnostic) or None
        found = _STATUS_CODE.search(record.get("status", "")) or (
            _STATUS_CODE.search(diagnostic) if diagnostic else None
        )
        action = record.get("action", "").strip().split(" ", 1)[0].lower()
        out.append(DeliveryStatus(recipient, action, found.group(1) if found else "", diagnostic))
    return out


# ----------------------------------------------------------------------------- HTML text

_TAG = re.compile(
    r"<!--.*?(?:-->|\Z)|<!\[CDATA\[.*?\]\]>|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)\b[^>]*>|<[!?][^>]*>",
    re.S,
)
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "tr", "li", "ul", "ol", "dl", "dd", "dt", "h1", "h2", "h3", "h4", "h5",
        "h6", "table", "thead", "tbody", "tfoot", "pre", "hr", "section", "article", "header",
        "footer", "address", "center", "form", "fieldset", "figure", "main", "nav", "aside",
    }
)  # fmt: skip
_SKIP_TAGS = frozenset({"style", "script", "title", "xml", "noscript", "template", "head"})
_SPACES = re.compile(r"[ \t\r\n\f\xa0]+")


def _html_text(markup: str) -> str:
    """Readable text of an HTML body: no style/script, a line per ``<br>``/block element,
    ``> `` before lines inside ``<blockquote>``, entities unescaped."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    depth = line_depth = 0
    skip: str | None = None
    pre = 0

    def newline() -> None:
        line = "".join(current).strip()
        lines.append((line_depth if line else depth, line))
        current.clear()

    def add(chunk: str) -> None:
        nonlocal line_depth
        if "&" in chunk:
            chunk = _html.unescape(chunk)
        if not pre:
            chunk = _SPACES.sub(" ", chunk)
            if not current:
                line_depth = depth
            current.append(chunk)
            return
        for i, piece in enumerate(chunk.replace("\xa0", " ").split("\n")):
            if i:
                newline()
            if not current:
                line_depth = depth
            current.append(piece)

    last = 0
    for match in _TAG.finditer(markup):
        if skip is None and match.start() > last:
            add(markup[last : match.start()])
        last = match.end()
        name = match.group(2)
        if not name:
            continue
        name = name.lower()
        closing = bool(match.group(1))
        if skip is not None:
            if (name == skip and closing) or (skip == "head" and name == "body"):
                skip = None
            continue
        if name in _SKIP_TAGS:
            if not closing and not match.group(0).endswith("/>"):
                skip = name
        elif name == "br":
            newline()
        elif name == "blockquote":
            newline()
            depth = max(0, depth - 1) if closing else depth + 1
        elif name in _BLOCK_TAGS:
            newline()
            if name == "pre":
                pre = max(0, pre - 1) if closing else pre + 1
        elif name in ("td", "th") and not closing and current:
            current.append(" ")
    if skip is None:
        add(markup[last:])
    newline()
    out: list[str] = []
    for level, line in lines:
        if not line and (not out or not out[-1].strip("> ")):
            continue
        out.append((_quote(level) + line).rstrip() if line else ">" * level)
    return "\n".join(out).strip()


# ------------------------------------------------------------------------------ addresses

_BARE = re.compile(r"\s*<?([^\s<>@,;:\"()\[\]]+@[^\s<>@,;:\"()\[\]]+)>?\s*")
_NAMED = re.compile(r'\s*"?([^"<>,@]*?)"?\s*<([^\s<>@,;:"()]+@[^\s<>@,;:"()]+)>\s*')
_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def _addresses(value: str, defects: list[str]) -> list[tuple[str, str]]:
    """``[(display name, lowercase address)]`` of an address header (raw, undecoded value)."""
    match = _BARE.fullmatch(value) or _NAMED.fullmatch(value)
    if match is not None:
        pairs = [(match.group(1), match.group(2))] if match.re is _NAMED else [("", match.group(1))]
    else:
        pairs = getaddresses([value])
    out = []
    for name, address in pairs:
        address = address.strip().lower()
        if "@" in address and " " not in address:
            out.append((_decode_words(name, defects).strip().strip('"').strip(), address))
    return out


def _ids(value: str) -> list[str]:
    found = _MESSAGE_ID.findall(value)
    if found:
        return found
    return [token for token in re.split(r"[\s,]+", value) if "@" in token]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None or not 1970 <= parsed.year <= 2200:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------- inline copy

#: lines after which an old-style (non-MIME) bounce quotes the returned message
_COPY_MARKER = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:This is a copy of (?:the|your) message|Below this line is a copy"
    r"|Original message|Undelivered message|The original message)[^\n]*\n",
    re.I | re.M,
)
_BOUNCE_SENDER = re.compile(r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster)@", re.I)


def _inline_copy(text: str) -> _Fields | None:
    """The header block an old-style bounce quotes after a "copy of the message" line."""
    marker = _COPY_MARKER.search(text)
    if marker is None:
        return None
    data = text[marker.end() : marker.end() + 64 * 1024].lstrip("\n").encode("utf-8")
    fields, _body, _clean = _read_fields(data, 0, len(data))
    names = {name for name, _value in fields}
    if "message-id" in names or {"from", "to"} <= names:
        return fields
    return None


# ---------------------------------------------------------------------------------- parse


def _check_mail(raw: bytes, start: int, fields: _Fields, body: int) -> None:
    head = raw[start : start + 512].lstrip()
    if head[:1] in (b"{", b"["):
        raise MailError("not an email: the data looks like JSON, not a header block")
    if not fields:
        if b"\x00" in head or not head[:64].isascii():
            raise MailError("not an email: binary data where the header block should be")
        raise MailError("not an email: no header block (the first line is not 'Name: value')")
    if b"\x00" in raw[start:body]:
        raise MailError("not an email: binary data in the header block")
    if not any(name in _MAIL_HEADERS for name, _value in fields):
        raise MailError("not an email: no From, To, Subject, Date or Message-ID header")


def parse_mail(raw: bytes) -> Mail:
    """Parse one message; raises :class:`MailError` when there is nothing usable.

    Only text body parts, the delivery report and the returned message's headers are decoded;
    attachments are skipped by offset. See the module docstring for what is tolerated.
    """
    if not raw or raw.isspace():  # not raw.strip(): that would copy a 30 MB message
        raise MailError("empty message")
    start = 0
    if raw.startswith(b"From "):  # mbox separator line
        nl = raw.find(b"\n")
        start = len(raw) if nl < 0 else nl + 1
    fields, body, clean = _read_fields(raw, start, len(raw))
    _check_mail(raw, start, fields, body)
    defects: list[str] = []
    if not clean:
        defects.append("missing blank line after the headers")

    headers: dict[str, list[str]] = {}
    raw_text: dict[str, list[str]] = {}
    for name, value in fields:
        text = _header_text(value, name, defects)
        raw_text.setdefault(name, []).append(text)
        headers.setdefault(name, []).append(_decode_words(text, defects))

    def first(name: str) -> str | None:
        values = raw_text.get(name)
        return values[0] if values else None

    sender = []
    for name in ("from", "sender"):
        if first(name):
            sender = _addresses(first(name) or "", defects)
            if sender:
                break
    from_name, from_address = sender[0] if sender else (None, None)

    recipients: dict[str, None] = {}
    for name in _RECIPIENT_HEADERS:
        for value in raw_text.get(name, ()):
            for _name, address in _addresses(value, defects):
                recipients.setdefault(address)

    report_like = (
        _params(first("content-type"))[0] == "multipart/report"
        or "x-failed-recipients" in headers
        or bool(from_address and _BOUNCE_SENDER.match(from_address))
    )
    walk = _Walk(raw, report_like, defects)
    _visit(walk, fields, body, len(raw), 0)
    text = "\n".join(walk.texts)
    html = walk.htmls[0] if walk.htmls else None
    if not text.strip() and html is not None:
        text = _html_text(html)
    returned = walk.returned
    if returned is None and report_like and text:
        returned = _inline_copy(text)
    returned_headers: dict[str, list[str]] = {}
    for name, value in returned or ():
        decoded = _decode_words(_header_text(value, name, []), [])
        returned_headers.setdefault(name, []).append(decoded)
    returned_ids = _ids(returned_headers.get("message-id", [""])[0])

    message_ids = _ids(first("message-id") or "")
    return Mail(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=tuple(i for value in raw_text.get("in-reply-to", ()) for i in _ids(value)),
        references=tuple(i for value in raw_text.get("references", ()) for i in _ids(value)),
        from_address=from_address,
        from_name=from_name or None,
        recipients=tuple(recipients),
        subject=(headers.get("subject") or [""])[0].strip(),
        date=_date(first("date")),
        headers=MappingProxyType({name: tuple(values) for name, values in headers.items()}),
        text=text,
        html=html,
        delivery_status=tuple(walk.dsn),
        returned_message_id=returned_ids[0] if returned_ids else None,
        returned_headers=MappingProxyType(
            {name: tuple(values) for name, values in returned_headers.items()}
        ),
        defects=tuple(dict.fromkeys(defects)),
        size=len(raw),
    )
