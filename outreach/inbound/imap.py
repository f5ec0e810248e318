"""Reply mail from an IMAP mailbox: new messages in UID order, resumable by a cursor.

``outreach replies poll`` opens the reply mailbox, reads what arrived since the last poll and
flags what it has handled::

    with ImapMailbox(host, 993, user, password) as box:
        for cursor, messages in box.batches(stored_cursor):
            intake(messages)          # store them first ...
            box.mark_processed([...])  # ... then flag them on the server
            save(cursor)              # the position after this batch

The cursor (UIDVALIDITY plus the highest UID handed over) lives with the caller, not on the
mailbox object. A changed UIDVALIDITY means the server renumbered the folder, so reading starts
again from the first message; intake dedupes by Message-ID and content, so that is safe.
``unmarked`` finds messages that were stored but not flagged (a crash in between).

imapclient, socket and TLS errors are translated here into :class:`MailboxError`, whose
message names host, port, user and folder but never the password.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from ssl import SSLContext
from types import TracebackType
from urllib.parse import quote

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from outreach.errors import OutreachError
from outreach.inbound.raw import RawMessage

__all__ = ["PROCESSED_KEYWORD", "ImapMailbox", "MailboxCursor", "MailboxError"]

PROCESSED_KEYWORD = "$OutreachProcessed"
"""The IMAP keyword set on every message the engine has stored."""

_SEEN = b"\\Seen"
_BODY = b"BODY[]"
_DATE = b"INTERNALDATE"
_SIZE = b"RFC822.SIZE"
# Everything a broken connection, refused login, bad certificate or timeout can raise.
_REMOTE_ERRORS = (IMAPClientError, OSError, socket.error, TimeoutError)


class MailboxError(OutreachError):
    """The mailbox cannot be used: no connection, login refused, folder missing, link lost.

    The message names host, port, user and folder (never the password), so the caller can
    report it and go on with the rest of the run. The parts are also attributes.
    """

    def __init__(
        self, message: str, *, host: str = "", port: int = 0, user: str = "", folder: str = ""
    ) -> None:
        self.host = host
        self.port = port
        self.user = user
        self.folder = folder
        super().__init__(message)


@dataclass(frozen=True)
class MailboxCursor:
    """How far a mailbox has been read.

    ``mailbox`` is the mailbox's stable key (:attr:`ImapMailbox.key`), ``uidvalidity`` the
    folder's UIDVALIDITY when it was read and ``last_uid`` the highest UID already handed over.
    """

    mailbox: str
    uidvalidity: int
    last_uid: int


class ImapMailbox:
    """One folder of an IMAP mailbox, opened as a context manager.

    Entering connects, logs in and selects the folder read-write; leaving logs out. Reading
    never sets ``\\Seen`` (``BODY.PEEK[]``); only :meth:`mark_processed` changes flags.

    Example::

        with ImapMailbox("imap.example.com", 993, "replies@example.com", pw) as box:
            for cursor, messages in box.batches(None, batch_size=200):
                ...
    """

    max_batch_bytes: int = 64 * 1024 * 1024
    """A batch is cut short before its bodies exceed this many bytes (one message at least)."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        folder: str = "INBOX",
        ssl: bool = True,
        *,
        timeout: float = 30.0,
        ssl_context: SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.user = user
        self.folder = folder
        self.ssl = ssl
        self.timeout = timeout
        self._password = password
        self._ssl_context = ssl_context
        self._client: IMAPClient | None = None
        self._uidvalidity = 0
        self._keywords = False

    def __repr__(self) -> str:
        return f"ImapMailbox({self.key!r}, ssl={self.ssl})"

    @property
    def key(self) -> str:
        """The mailbox's stable key, e.g. ``imap://replies%40example.com@host:993/INBOX``."""
        return (
            f"imap://{quote(self.user, safe='')}@{self.host}:{self.port}/"
            f"{quote(self.folder, safe='/')}"
        )

    # -- connection -----------------------------------------------------------------------

    def __enter__(self) -> ImapMailbox:
        """Connect, log in and select the folder read-write, or raise :class:`MailboxError`."""
        client: IMAPClient | None = None
        step = "cannot connect"
        try:
            client = IMAPClient(
                self.host,
                port=self.port,
                ssl=self.ssl,
                ssl_context=self._ssl_context,
                timeout=self.timeout,
            )
            client.normalise_times = False  # aware INTERNALDATE, converted to UTC below
            step = "cannot log in"
            client.login(self.user, self._password)
            step = "cannot select the folder"
            info = client.select_folder(self.folder, readonly=False)
        except _REMOTE_ERRORS as exc:
            if client is not None:
                _close_quietly(client)
            raise self._error(step, exc) from exc
        self._client = client
        self._uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        permanent = tuple(info.get(b"PERMANENTFLAGS", ()))
        self._keywords = b"\\*" in permanent or PROCESSED_KEYWORD.encode() in permanent
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Log out (or drop the connection), never raising over the error in flight."""
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)

    # -- reading --------------------------------------------------------------------------

    def batches(
        self, cursor: MailboxCursor | None, batch_size: int = 500
    ) -> Iterator[tuple[MailboxCursor, list[RawMessage]]]:
        """New messages in UID order after ``cursor.last_uid``, in batches.

        Each yielded cursor is the position after its batch; only non-empty batches are
        yielded. Without a cursor, or when the folder's UIDVALIDITY differs from the
        cursor's, reading starts from the first message. A batch holds at most
        ``batch_size`` messages and stops early before its bodies pass
        :attr:`max_batch_bytes` (sizes come from one ``RFC822.SIZE`` FETCH per
        ``batch_size`` UIDs). Each batch is one ``FETCH`` of ``BODY.PEEK[]`` and
        ``INTERNALDATE``; a message whose body the server does not return becomes a
        :class:`RawMessage` with ``raw=None`` and ``error`` set. A cursor of another
        mailbox (its ``mailbox`` is not :attr:`key`) is a ``ValueError``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if cursor is not None and cursor.mailbox != self.key:
            raise ValueError(f"cursor of {cursor.mailbox} used on {self.key}")
        client = self._connected()
        after = 0
        if cursor is not None and cursor.uidvalidity == self._uidvalidity:
            after = cursor.last_uid
        with self._translating("cannot list new messages"):
            # "n:*" always matches the highest UID, even one below n: filter.
            uids = sorted(u for u in client.search(["UID", f"{after + 1}:*"]) if u > after)
        for start in range(0, len(uids), batch_size):
            window = uids[start : start + batch_size]
            for group in self._by_size(client, window):
                messages = self._fetch(client, group)
                yield MailboxCursor(self.key, self._uidvalidity, group[-1]), messages

    def _by_size(self, client: IMAPClient, uids: list[int]) -> Iterator[list[int]]:
        with self._translating("cannot read message sizes"):
            sizes = client.fetch(uids, [_SIZE])
        group: list[int] = []
        total = 0
        for uid in uids:
            size = int(sizes.get(uid, {}).get(_SIZE, 0) or 0)
            if group and total + size > self.max_batch_bytes:
                yield group
                group, total = [], 0
            group.append(uid)
            total += size
        if group:
            yield group

    def _fetch(self, client: IMAPClient, uids: list[int]) -> list[RawMessage]:
        with self._translating("cannot fetch messages"):
            data = client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"])
        messages = []
        for uid in uids:
            item = data.get(uid) or {}
            where = f"{self.folder} uid {uid}"
            body = item.get(_BODY)
            if isinstance(body, bytes):
                messages.append(RawMessage(where, body, "imap", _utc(item.get(_DATE))))
            else:
                # No received_at: Dovecot reports the epoch for a message it cannot read.
                reason = (
                    "the server returned no body for this message"
                    if item
                    else "the server returned nothing for this message (deleted meanwhile?)"
                )
                messages.append(RawMessage(where, None, "imap", error=reason))
        return messages

    # -- flags ----------------------------------------------------------------------------

    def mark_processed(self, uids: Sequence[int]) -> None:
        """Flag messages as handled: ``\\Seen`` plus ``$OutreachProcessed``, in one STORE.

        The keyword is set only where the folder's PERMANENTFLAGS allow keywords; elsewhere
        only ``\\Seen`` is stored (and :meth:`unmarked` then goes by ``\\Seen``).
        """
        wanted = sorted({int(u) for u in uids})
        if not wanted:
            return
        client = self._connected()
        flags = [_SEEN, PROCESSED_KEYWORD.encode()] if self._keywords else [_SEEN]
        with self._translating("cannot flag messages"):
            client.add_flags(_sequence_set(wanted), flags, silent=True)

    def unmarked(self, up_to_uid: int) -> list[int]:
        """UIDs up to ``up_to_uid`` that do not carry ``$OutreachProcessed`` yet, ascending.

        A crash between storing messages and flagging them leaves such messages; the caller
        flags them at the next poll. Where keywords are not allowed, unseen messages count.
        """
        if up_to_uid < 1:
            return []
        client = self._connected()
        criteria: list[str] = ["UNKEYWORD", PROCESSED_KEYWORD] if self._keywords else ["UNSEEN"]
        with self._translating("cannot search for unflagged messages"):
            found = client.search([*criteria, "UID", f"1:{up_to_uid}"])
        return sorted(u for u in found if u <= up_to_uid)

    # -- helpers --------------------------------------------------------------------------

    def _connected(self) -> IMAPClient:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open: use it in a 'with' block")
        return self._client

    def _error(self, step: str, exc: BaseException) -> MailboxError:
        reason = str(exc) or type(exc).__name__
        if reason[:2] in ("b'", 'b"') and reason[-1:] == reason[1]:
            reason = reason[2:-1]  # imaplib hands the server's words over as a bytes repr
        if isinstance(exc, LoginError):
            reason = f"login refused ({reason})"
        elif isinstance(exc, TimeoutError):
            reason = f"timed out after {self.timeout:g} s ({reason})"
        if self._password:
            reason = reason.replace(self._password, "***")
        message = (
            f"IMAP mailbox {self.folder!r} of user {self.user!r} at {self.host}:{self.port}: "
            f"{step}: {reason}"
        )
        return MailboxError(
            message, host=self.host, port=self.port, user=self.user, folder=self.folder
        )

    @contextmanager
    def _translating(self, step: str) -> Iterator[None]:
        """Turn imapclient, socket and TLS errors inside the block into MailboxError."""
        try:
            yield
        except _REMOTE_ERRORS as exc:
            raise self._error(step, exc) from exc


def _close_quietly(client: IMAPClient) -> None:
    """Log out, or at least drop the socket; never raise (an original error may be on its way)."""
    try:
        client.logout()
    except Exception:
        with suppress(Exception):
            client.shutdown()


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _sequence_set(uids: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` → ``"1:3,7,9:10"`` (sorted, distinct UIDs), to keep STORE short."""
    parts: list[str] = []
    start = prev = uids[0]
    for uid in uids[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev > start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev > start else str(start))
    return ",".join(parts)
