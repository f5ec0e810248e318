"""Reply mail from files: an ``.eml`` file, an mbox file, a Maildir or a folder of ``.eml``.

``outreach replies import PATH`` reads a mailbox export or a local MTA's delivery::

    for message in read_messages(Path("replies.mbox")):
        ...  # RawMessage(where="replies.mbox #1", raw=b"...", source="file")

What ``PATH`` is gets decided by its shape, not its name:

- a directory with ``cur/`` and ``new/``: a Maildir; ``new/`` then ``cur/``, each in name
  order, ``received_at`` from the file's modification time (subfolders are not read);
- another directory: its ``*.eml`` files in name order;
- a file whose first line starts with ``From ``: an mbox, read message by message;
- a file that starts with a header line: one message.

A missing path or a file of none of these shapes raises :class:`~outreach.errors.InputError`
naming the path, before anything is read. Inside a mailbox, one unreadable or malformed
message becomes a :class:`RawMessage` with ``raw=None`` and ``error`` set, and the rest goes on.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from outreach.errors import InputError
from outreach.inbound.raw import RawMessage

__all__ = ["read_messages"]

_SOURCE = "file"
# The first line of a message is a header field: printable ASCII name (no colon), then ":".
_HEADER_LINE = re.compile(rb"\A[\x21-\x39\x3b-\x7e]+:")
# mboxrd quoting: a body line ">From ", ">>From " ... had one ">" added when it was stored.
_QUOTED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_SNIFF_BYTES = 1024


def read_messages(path: Path) -> Iterator[RawMessage]:
    """The messages stored at ``path``, one :class:`RawMessage` each, in file order.

    Raises :class:`InputError` at once (not on the first ``next``) when ``path`` is missing,
    unreadable, or neither a message, an mbox, a Maildir nor a folder of ``.eml`` files.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            return _maildir(path)
        try:
            emls = sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
        except OSError as exc:
            raise InputError(f"{path}: {_reason(exc)}") from exc
        if not emls:
            raise InputError(
                f"{path}: a folder with neither .eml files nor a Maildir (cur/ and new/); "
                "give an .eml file, an mbox file, a Maildir or a folder of .eml files"
            )
        return _eml_folder(path, emls)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    try:
        with path.open("rb") as stream:
            head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        raise InputError(f"{path}: {_reason(exc)}") from exc
    if head.startswith(b"From "):
        return _mbox(path)
    if _HEADER_LINE.match(head):
        return _single(path)
    shape = "is empty" if not head else "starts with neither a header line nor 'From '"
    raise InputError(f"{path}: not an email message, mbox or Maildir (the file {shape})")


def _single(path: Path) -> Iterator[RawMessage]:
    yield _from_file(path.name, path, received_at=None)


def _eml_folder(root: Path, files: list[Path]) -> Iterator[RawMessage]:
    for file in files:
        yield _from_file(f"{root.name}/{file.name}", file, received_at=None)


def _maildir(root: Path) -> Iterator[RawMessage]:
    for sub in ("new", "cur"):
        try:
            names = sorted(p.name for p in (root / sub).iterdir() if not p.name.startswith("."))
        except OSError as exc:
            yield RawMessage(f"{root.name}/{sub}", None, _SOURCE, error=_reason(exc))
            continue
        for name in names:
            file = root / sub / name
            where = f"{root.name}/{sub}/{name}"
            if not file.is_file():
                continue
            try:
                mtime = datetime.fromtimestamp(file.stat().st_mtime, tz=UTC)
            except OSError as exc:  # moved from new/ to cur/ by a mail client meanwhile
                yield RawMessage(where, None, _SOURCE, error=_reason(exc))
                continue
            yield _from_file(where, file, received_at=mtime)


def _mbox(path: Path) -> Iterator[RawMessage]:
    try:
        box = mailbox.mbox(path, create=False)
        keys = box.keys()  # scans for "From " lines; keeps offsets, not messages
    except (OSError, mailbox.Error) as exc:
        raise InputError(f"{path}: {_reason(exc)} (as an mbox)") from exc
    try:
        for n, key in enumerate(keys, start=1):
            where = f"{path.name} #{n}"
            try:
                data = box.get_bytes(key)
            except (OSError, mailbox.Error, KeyError) as exc:
                yield RawMessage(where, None, _SOURCE, error=_reason(exc))
                continue
            yield _checked(where, _QUOTED_FROM.sub(rb"\1", data), received_at=None)
    finally:
        box.close()


def _from_file(where: str, file: Path, received_at: datetime | None) -> RawMessage:
    try:
        data = file.read_bytes()
    except OSError as exc:
        return RawMessage(where, None, _SOURCE, received_at, error=_reason(exc))
    return _checked(where, data, received_at)


def _checked(where: str, data: bytes, received_at: datetime | None) -> RawMessage:
    """The message, or an error when the bytes cannot be an email message."""
    if not data.strip():
        return RawMessage(where, None, _SOURCE, received_at, error="empty message")
    if not _HEADER_LINE.match(data):
        return RawMessage(
            where, None, _SOURCE, received_at,
            error="not an email message (it does not start with a header line)",
        )  # fmt: skip
    return RawMessage(where, data, _SOURCE, received_at)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    return f"cannot read: {exc or type(exc).__name__}"
