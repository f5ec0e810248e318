"""Fixtures for the inbound tests: one real Dovecot per session, a fresh account per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from dovecot import Account, Dovecot, DovecotError

from outreach.inbound.imap import ImapMailbox


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A Dovecot IMAP server (plain and TLS listeners) on loopback, for the whole session.

    Fails (never skips) when Dovecot is not installed: CI installs ``dovecot-imapd``.
    """
    try:
        server = Dovecot().start()
    except DovecotError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def account(dovecot: Dovecot) -> Account:
    """A new, empty mailbox account of its own, so tests do not see each other's mail."""
    return dovecot.add_user()


@pytest.fixture
def open_mailbox(dovecot: Dovecot, account: Account) -> Callable[..., ImapMailbox]:
    """Make an :class:`ImapMailbox` on the test account (plain IMAP unless told otherwise)."""

    def make(folder: str = "INBOX", **options: object) -> ImapMailbox:
        settings: dict = {"ssl": False, "timeout": 5.0, "port": dovecot.port}
        settings.update(options)
        port = settings.pop("port")
        password = settings.pop("password", account.password)
        return ImapMailbox(dovecot.host, port, account.user, password, folder, **settings)

    return make
