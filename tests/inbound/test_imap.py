"""ImapMailbox against a real Dovecot: batches, cursors, UIDVALIDITY, flags, errors, TLS."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta, timezone

import pytest
from dovecot import Account, Dovecot

from outreach.errors import OutreachError
from outreach.inbound.imap import (
    PROCESSED_KEYWORD,
    ImapMailbox,
    MailboxCursor,
    MailboxError,
    _sequence_set,
)

ARRIVED = datetime(2026, 11, 24, 8, 30, tzinfo=timezone(timedelta(hours=2)))


def message(n: int, body: bytes = b"Thanks, I am interested.") -> bytes:
    """A small reply, CRLF line endings (what IMAP hands back)."""
    return (
        (
            b"From: Cand %d <cand%d@example.org>\r\n"
            b"To: replies+tok%d@example.com\r\n"
            b"Subject: Re: Your application\r\n"
            b"Message-ID: <reply-%d@example.org>\r\n"
            b"\r\n" % (n, n, n, n)
        )
        + body
        + b"\r\n"
    )


def read_all(box: ImapMailbox, cursor: MailboxCursor | None = None, batch_size: int = 500):
    return list(box.batches(cursor, batch_size=batch_size))


def flags_of(dovecot: Dovecot, account: Account, folder: str = "INBOX") -> dict[int, set[bytes]]:
    with dovecot.client(account.user) as imap:
        imap.select_folder(folder, readonly=True)
        return {uid: set(flags) for uid, flags in imap.get_flags(imap.search("ALL")).items()}


@pytest.mark.parametrize("batch_size", [1, 2, 3, 7, 500])
def test_batches_hand_over_every_message_in_uid_order(dovecot, account, open_mailbox, batch_size):
    raws = [message(n) for n in range(1, 8)]
    uids = dovecot.deliver_all(account.user, raws, when=ARRIVED)

    with open_mailbox() as box:
        batches = read_all(box, None, batch_size)

    sizes = [len(messages) for _, messages in batches]
    assert sizes == [min(batch_size, 7 - i) for i in range(0, 7, batch_size)]
    got = [m for _, messages in batches for m in messages]
    assert [m.raw for m in got] == raws
    assert [m.where for m in got] == [f"INBOX uid {uid}" for uid in uids]
    assert {m.source for m in got} == {"imap"}
    assert {m.error for m in got} == {None}
    assert {m.received_at for m in got} == {datetime(2026, 11, 24, 6, 30, tzinfo=UTC)}
    assert all(m.received_at.tzinfo is UTC for m in got)
    ends = [int(messages[-1].where.rsplit(" ", 1)[1]) for _, messages in batches]
    assert [cursor.last_uid for cursor, _ in batches] == ends
    assert {cursor.mailbox for cursor, _ in batches} == {box.key}


def test_reading_leaves_messages_unseen(dovecot, account, open_mailbox):
    dovecot.deliver_all(account.user, [message(1), message(2)])
    with open_mailbox() as box:
        assert len(read_all(box)) == 1
    assert flags_of(dovecot, account) == {1: set(), 2: set()}


def test_empty_folder_yields_nothing(open_mailbox):
    with open_mailbox() as box:
        assert read_all(box) == []


def test_second_poll_returns_only_new_messages(dovecot, account, open_mailbox):
    dovecot.deliver_all(account.user, [message(n) for n in (1, 2, 3)])
    with open_mailbox() as box:
        ((cursor, first),) = read_all(box)
    assert [m.where for m in first] == ["INBOX uid 1", "INBOX uid 2", "INBOX uid 3"]
    assert cursor.last_uid == 3

    dovecot.deliver_all(account.user, [message(4), message(5)])
    with open_mailbox() as box:
        ((cursor, second),) = read_all(box, cursor)
        # Nothing new: "4:*"-style searches match the highest UID even below the start.
        assert read_all(box, cursor) == []
    assert [m.raw for m in second] == [message(4), message(5)]
    assert cursor.last_uid == 5


def test_a_cursor_past_the_end_yields_nothing(dovecot, account, open_mailbox):
    dovecot.deliver(account.user, message(1))
    with open_mailbox() as box:
        ((cursor, _),) = read_all(box)
        ahead = MailboxCursor(box.key, cursor.uidvalidity, 40)
        assert read_all(box, ahead) == []


def test_new_uidvalidity_starts_from_the_beginning(dovecot, account, open_mailbox):
    dovecot.deliver_all(account.user, [message(1), message(2), message(3)], folder="Replies")
    with open_mailbox("Replies") as box:
        ((cursor, _),) = read_all(box)
    with dovecot.client(account.user) as imap:
        imap.delete_folder("Replies")
        imap.create_folder("Replies")
    dovecot.deliver(account.user, message(9), folder="Replies")

    with open_mailbox("Replies") as box:
        ((after, messages),) = read_all(box, cursor)
    assert after.uidvalidity != cursor.uidvalidity
    assert [(m.where, m.raw) for m in messages] == [("Replies uid 1", message(9))]
    assert after == MailboxCursor(box.key, after.uidvalidity, 1)


def test_cursor_of_another_mailbox_is_refused(open_mailbox):
    with open_mailbox() as box, pytest.raises(ValueError, match="cursor of imap://other"):
        read_all(box, MailboxCursor("imap://other@host:993/INBOX", 1, 1))


def test_mark_processed_flags_seen_and_keyword_and_unmarked_finds_the_rest(
    dovecot, account, open_mailbox
):
    dovecot.deliver_all(account.user, [message(n) for n in range(1, 7)])
    with open_mailbox() as box:
        assert box.unmarked(6) == [1, 2, 3, 4, 5, 6]
        box.mark_processed([1, 2, 3, 5])
        box.mark_processed([])
        assert box.unmarked(6) == [4, 6]
        assert box.unmarked(3) == []
        assert box.unmarked(4) == [4]
        assert box.unmarked(0) == []
        box.mark_processed([6, 4])
        assert box.unmarked(100) == []

    done = {b"\\Seen", PROCESSED_KEYWORD.encode()}
    assert flags_of(dovecot, account) == dict.fromkeys(range(1, 7), done)


def test_unmarked_goes_by_seen_where_keywords_are_not_allowed(dovecot, account, open_mailbox):
    dovecot.deliver_all(account.user, [message(1), message(2)])
    dovecot.deliver(account.user, message(3), flags=[b"\\Seen"])
    with open_mailbox() as box:
        box._keywords = False  # as after a SELECT whose PERMANENTFLAGS lack \*
        assert box.unmarked(3) == [1, 2]
        box.mark_processed([1])
        assert box.unmarked(3) == [2]
    assert flags_of(dovecot, account) == {1: {b"\\Seen"}, 2: set(), 3: {b"\\Seen"}}


def test_sequence_sets_are_compact():
    assert _sequence_set([1, 2, 3, 7, 9, 10]) == "1:3,7,9:10"
    assert _sequence_set([5]) == "5"


def assert_names_the_mailbox(err: MailboxError, dovecot: Dovecot, user: str, folder: str):
    text = str(err)
    assert dovecot.host in text
    assert str(err.port) in text
    assert user in text
    assert folder in text
    assert (err.host, err.user, err.folder) == (dovecot.host, user, folder)
    assert isinstance(err, OutreachError)


def test_wrong_password_is_a_mailbox_error_without_the_password(dovecot, account, open_mailbox):
    secret = "Sup3r-Secret-Passw0rd"
    with pytest.raises(MailboxError) as caught, open_mailbox(password=secret):
        pass
    assert_names_the_mailbox(caught.value, dovecot, account.user, "INBOX")
    assert "cannot log in: login refused ([AUTHENTICATIONFAILED]" in str(caught.value)
    assert secret not in str(caught.value)
    assert account.password not in str(caught.value)


def test_unreachable_port_is_a_mailbox_error(dovecot, account, open_mailbox):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(MailboxError) as caught, open_mailbox(port=closed):
            pass
    assert_names_the_mailbox(caught.value, dovecot, account.user, "INBOX")
    assert f"{dovecot.host}:{closed}" in str(caught.value)
    assert "connect" in str(caught.value)
    assert account.password not in str(caught.value)


def test_missing_folder_is_a_mailbox_error(dovecot, account, open_mailbox):
    with pytest.raises(MailboxError) as caught, open_mailbox("NoSuchFolder"):
        pass
    assert_names_the_mailbox(caught.value, dovecot, account.user, "NoSuchFolder")
    assert "select" in str(caught.value)
    assert account.password not in str(caught.value)


def test_a_dropped_connection_is_a_mailbox_error(dovecot, account, open_mailbox):
    dovecot.deliver(account.user, message(1))
    with pytest.raises(MailboxError) as caught, open_mailbox() as box:
        dovecot.kick(account.user)
        read_all(box)
    assert_names_the_mailbox(caught.value, dovecot, account.user, "INBOX")
    assert account.password not in str(caught.value)


def test_using_a_closed_mailbox_is_a_programming_error(open_mailbox):
    box = open_mailbox()
    with pytest.raises(RuntimeError, match="with"):
        read_all(box)
    with box:
        pass
    with pytest.raises(RuntimeError):
        box.unmarked(1)


def test_key_and_repr_name_the_mailbox_but_not_the_password(open_mailbox, account, dovecot):
    box = ImapMailbox("imap.example.com", 993, "replies@example.com", "hunter22", "Replies/2026")
    assert box.key == "imap://replies%40example.com@imap.example.com:993/Replies/2026"
    assert "hunter22" not in repr(box)


def test_a_large_message_arrives_whole(dovecot, account, open_mailbox):
    attachment = b"".join(b"%075d\r\n" % n for n in range(5 * 1024 * 1024 // 77))
    big = message(1, b"Resume attached.\r\n\r\n" + attachment)
    assert len(big) > 5_000_000
    dovecot.deliver_all(account.user, [big, message(2)])
    with open_mailbox() as box:
        got = [m.raw for _, messages in read_all(box) for m in messages]
    assert got == [big, message(2)]


def test_a_batch_stops_before_its_byte_budget(dovecot, account, open_mailbox):
    raws = [message(n, b"x" * 600) for n in range(1, 6)]
    dovecot.deliver_all(account.user, raws)
    with open_mailbox() as box:
        box.max_batch_bytes = 1500  # two of these messages fit, three do not
        batches = read_all(box, None, batch_size=4)
    assert [len(messages) for _, messages in batches] == [2, 2, 1]
    assert [cursor.last_uid for cursor, _ in batches] == [2, 4, 5]
    assert [m.raw for _, messages in batches for m in messages] == raws


def test_eight_bit_content_arrives_byte_for_byte(dovecot, account, open_mailbox):
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\n"
        b"Subject: Re: Stelle\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Gr\xfc\xdfe, gern \xe0 bient\xf4t \xff\xfe\x80\x81\r\n"
        b"UTF-8 too: \xe2\x82\xac \xf0\x9f\x91\x8b\r\n"
    )
    dovecot.deliver(account.user, raw)
    with open_mailbox() as box:
        ((_, [got]),) = read_all(box)
    assert got.raw == raw


def test_a_body_the_server_cannot_read_becomes_an_error_item(dovecot, account, open_mailbox):
    dovecot.deliver_all(account.user, [message(1), message(2), message(3)])
    with open_mailbox() as box:
        # The message file vanishes on disk after the folder was opened.
        files = [
            p for sub in ("cur", "new") for p in (dovecot.maildir(account.user) / sub).iterdir()
        ]
        (lost,) = [p for p in files if b"<reply-2@" in p.read_bytes()]
        lost.unlink()
        ((cursor, messages),) = read_all(box)
    assert [m.where for m in messages] == ["INBOX uid 1", "INBOX uid 2", "INBOX uid 3"]
    assert [m.raw for m in messages] == [message(1), None, message(3)]
    assert messages[1].error
    assert messages[1].received_at is None
    assert cursor.last_uid == 3


def test_tls_with_a_trusted_certificate(dovecot, account, open_mailbox):
    dovecot.deliver(account.user, message(1))
    tls = open_mailbox(port=dovecot.ssl_port, ssl=True, ssl_context=dovecot.ssl_context())
    with tls as box:
        ((_, [got]),) = read_all(box)
        box.mark_processed([1])
        assert box.unmarked(1) == []
    assert got.raw == message(1)


def test_tls_with_an_untrusted_certificate_is_a_mailbox_error(dovecot, account, open_mailbox):
    untrusted = open_mailbox(port=dovecot.ssl_port, ssl=True)
    with pytest.raises(MailboxError, match="certificate") as caught, untrusted:
        pass
    assert_names_the_mailbox(caught.value, dovecot, account.user, "INBOX")


def test_a_missing_dovecot_names_the_package_to_install(monkeypatch):
    import dovecot as helper

    monkeypatch.setattr(helper.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(helper.DovecotError, match="dovecot-imapd"):
        helper.Dovecot()
