"""``replies poll``: new mail from the reply mailbox, once each, across crashes.

The folder's position (UIDVALIDITY, last UID handed over) lives in ``mailbox_state`` and
moves in the same transaction as the batch of messages it covers, so a crash either
loses the whole batch's work (it is fetched again) or none of it; a message stored
twice is impossible because intake dedupes by Message-ID or content. Messages are
flagged (``\\Seen`` and ``$OutreachProcessed``) only after their batch committed; a crash
between the two leaves them unflagged and the next poll flags them first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from outreach.cadence import CadenceConfig
from outreach.inbound.imap import ImapMailbox, MailboxCursor
from outreach.inbound.intake import IntakeReport, ingest_batch
from outreach.store.bulk import bulk_write
from outreach.store.schema import MailboxState

__all__ = ["PollReport", "mailbox_from_settings", "poll_mailbox"]

_state = MailboxState.__table__


@dataclass
class PollReport:
    """What one poll fetched and what intake made of it."""

    mailbox: str
    intake: IntakeReport = field(default_factory=IntakeReport)
    batches: int = 0
    flagged: int = 0
    restarted: bool = False


def mailbox_from_settings(settings) -> ImapMailbox | None:
    """The reply mailbox ``OUTREACH_IMAP_*`` describes, or None when it is not set."""
    if not settings.imap_host:
        return None
    password = settings.imap_password.get_secret_value() if settings.imap_password else ""
    return ImapMailbox(
        settings.imap_host,
        settings.imap_port,
        settings.imap_user or "",
        password,
        settings.imap_folder,
        ssl=settings.imap_ssl,
    )


def poll_mailbox(
    engine: Engine,
    mailbox: ImapMailbox,
    *,
    now: datetime,
    config: CadenceConfig | None = None,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> PollReport:
    """Fetch, store and flag every message after the stored cursor. Raises
    :class:`~outreach.inbound.imap.MailboxError` when the mailbox cannot be read."""
    zone = config.policy.zone if config is not None else None
    with mailbox:
        report = PollReport(mailbox.key)
        cursor = load_cursor(engine, mailbox.key)
        if cursor is not None:
            leftover = mailbox.unmarked(cursor.last_uid)
            if leftover:
                mailbox.mark_processed(leftover)
                report.flagged += len(leftover)
        for position, messages in mailbox.batches(cursor, batch_size):
            if cursor is not None and position.uidvalidity != cursor.uidvalidity:
                report.restarted = True

            def save(conn: Connection, position: MailboxCursor = position) -> None:
                _save_cursor(conn, position, now)

            report.intake.merge(ingest_batch(engine, messages, now=now, zone=zone, also=save))
            report.batches += 1
            done = mailbox.unmarked(position.last_uid)
            if done:
                mailbox.mark_processed(done)
                report.flagged += len(done)
            if progress is not None:
                progress(len(messages))
    return report


def load_cursor(engine: Engine, key: str) -> MailboxCursor | None:
    """The stored position in mailbox ``key``, if any."""
    with engine.connect() as conn:
        row = conn.execute(select(_state).where(_state.c.mailbox == key)).first()
    if row is None:
        return None
    return MailboxCursor(row.mailbox, int(row.uidvalidity), int(row.last_uid))


def _save_cursor(conn: Connection, cursor: MailboxCursor, now: datetime) -> None:
    bulk_write(
        conn,
        _state,
        [
            {
                "mailbox": cursor.mailbox,
                "uidvalidity": cursor.uidvalidity,
                "last_uid": cursor.last_uid,
                "updated_at": now,
            }
        ],
        conflict=("mailbox",),
        update={
            "uidvalidity": "excluded.uidvalidity",
            "last_uid": "excluded.last_uid",
            "updated_at": "excluded.updated_at",
        },
    )
