"""``outreach replies poll|import|list`` and ``run`` polling first, against a real Dovecot.

The reply mailbox is a real IMAP server on loopback (tests/inbound/dovecot.py); the store
is the test database. A poll killed with SIGKILL in the middle, or crashing between
storing and flagging, loses nothing and counts nothing twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from test_intake import NOW, seed

from outreach.cadence import load_cadence_file
from outreach.inbound.imap import PROCESSED_KEYWORD, ImapMailbox
from outreach.inbound.poll import poll_mailbox
from outreach.paths import default_config_dir
from outreach.sandbox.answers import bounce_for, human_reply, out_of_office
from outreach.store.schema import Enrollment, Event, InboundMessage, MailboxState, Task

REPO = Path(__file__).resolve().parents[2]


def imap_env(dovecot, account, **extra: str) -> dict[str, str]:
    return {
        "OUTREACH_IMAP_HOST": dovecot.host,
        "OUTREACH_IMAP_PORT": str(dovecot.port),
        "OUTREACH_IMAP_USER": account.user,
        "OUTREACH_IMAP_PASSWORD": account.password,
        "OUTREACH_IMAP_SSL": "false",
        **extra,
    }


def flagged(dovecot, account) -> list[int]:
    with dovecot.client(account.user) as imap:
        imap.select_folder("INBOX", readonly=True)
        return sorted(imap.search(["KEYWORD", PROCESSED_KEYWORD]))


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_poll_stores_classifies_and_flags_each_message_once(cli, engine, dovecot, account) -> None:
    originals = [seed(engine, i) for i in (1, 2, 3)]
    uids = dovecot.deliver_all(
        account.user,
        [
            human_reply(originals[0], NOW - timedelta(hours=3)),
            out_of_office(originals[1], NOW - timedelta(hours=2), NOW + timedelta(days=6)),
            bounce_for(originals[2], NOW - timedelta(hours=1)),
            b"this is not an email at all",
        ],
    )
    env = imap_env(dovecot, account)
    first = cli("replies", "poll", "--now", NOW.isoformat(), env=env)
    assert first.exit_code == 1, first.output  # the unreadable one is reported
    assert "4 messages, 4 new" in first.output
    assert "1 replies, 1 auto-replies (1 out of office), 1 bounces" in first.output
    assert f"INBOX uid {uids[3]}" in first.output
    assert flagged(dovecot, account) == uids
    again = cli("replies", "poll", "--now", (NOW + timedelta(hours=1)).isoformat(), env=env)
    assert again.exit_code == 0, again.output
    assert "0 messages" in again.output
    assert count(engine, InboundMessage) == 4 and count(engine, Event) == 3
    with engine.connect() as conn:
        (state,) = conn.execute(select(MailboxState)).all()
    assert state.last_uid == uids[-1]

    listed = cli("replies", "list", "--format", "json")
    assert listed.exit_code == 0, listed.output
    kinds = sorted(row["kind"] for row in json.loads(listed.output))
    assert kinds == ["auto", "bounce", "human", "invalid"]
    auto = json.loads(cli("replies", "list", "--kind", "auto", "--format", "json").output)
    assert [(r["out_of_office"], r["returns_on"]) for r in auto] == [
        (True, (NOW + timedelta(days=6)).date().isoformat())
    ]
    csv_out = cli("replies", "list", "--format", "csv", "--since", NOW.isoformat()).output
    assert csv_out.splitlines()[0].startswith("id,received_at,kind")
    table = cli("replies", "list", "--kind", "human").output
    assert "token" in table and "1 message(s)" in table


def test_poll_over_tls_verifies_the_server_certificate(
    cli, engine, dovecot, account, monkeypatch
) -> None:
    original = seed(engine, 1)
    dovecot.deliver(account.user, human_reply(original, NOW - timedelta(hours=1)))
    env = imap_env(
        dovecot, account, OUTREACH_IMAP_PORT=str(dovecot.ssl_port), OUTREACH_IMAP_SSL="true"
    )
    untrusted = cli("replies", "poll", "--now", NOW.isoformat(), env=env)
    assert untrusted.exit_code == 1 and "certificate" in untrusted.output.lower()
    monkeypatch.setenv("SSL_CERT_FILE", str(dovecot.cert_path))
    trusted = cli("replies", "poll", "--now", NOW.isoformat(), env=env)
    assert trusted.exit_code == 0, trusted.output
    assert "1 replies" in trusted.output


def test_poll_without_a_mailbox_or_with_a_wrong_password_says_so(cli, dovecot, account) -> None:
    missing = cli("replies", "poll")
    assert missing.exit_code == 2 and "OUTREACH_IMAP_HOST" in missing.output
    wrong = cli(
        "replies", "poll", env=imap_env(dovecot, account, OUTREACH_IMAP_PASSWORD="not-it-xyz")
    )
    assert wrong.exit_code == 1
    assert "log in" in wrong.output and "not-it-xyz" not in wrong.output


def test_run_polls_first_so_a_reply_stops_the_cadence_before_planning(
    cli, engine, dovecot, account
) -> None:
    original = seed(engine, 1)
    with engine.begin() as conn:
        conn.execute(
            update(Enrollment.__table__).values(
                next_due_at=NOW - timedelta(minutes=5), step_due_at=NOW - timedelta(minutes=5)
            )
        )
    dovecot.deliver(account.user, human_reply(original, NOW - timedelta(hours=1)))
    result = cli("run", "--now", NOW.isoformat(), env=imap_env(dovecot, account))
    assert "1 replies" in result.output, result.output
    assert result.output.index("1 replies") < result.output.index("tick at")
    with engine.connect() as conn:
        (enrollment,) = conn.execute(select(Enrollment)).all()
    assert enrollment.status == "stopped" and enrollment.stop_reason.startswith("reply")


def test_import_reads_eml_mbox_and_maildir_and_twice_records_nothing_new(
    cli, engine, tmp_path
) -> None:
    import mailbox

    originals = [seed(engine, i) for i in (1, 2, 3)]
    eml = tmp_path / "one.eml"
    eml.write_bytes(human_reply(originals[0], NOW - timedelta(hours=2)))
    box = mailbox.mbox(tmp_path / "replies.mbox")
    box.add(human_reply(originals[1], NOW - timedelta(hours=2)))
    box.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    maildir.add(bounce_for(originals[2], NOW - timedelta(hours=1)))
    for path in (eml, tmp_path / "replies.mbox", tmp_path / "Maildir"):
        result = cli("replies", "import", str(path), "--now", NOW.isoformat())
        assert result.exit_code == 0, result.output
        assert "1 new" in result.output
    again = cli("replies", "import", str(eml), "--now", NOW.isoformat())
    assert "0 new, 1 seen before" in again.output
    assert count(engine, InboundMessage) == 3
    missing = cli("replies", "import", str(tmp_path / "nope.mbox"))
    assert missing.exit_code == 2 and "nope.mbox" in missing.output


# -- crashes -----------------------------------------------------------------------------

MESSAGES = 120


def _fill(engine, dovecot, account) -> int:
    """``MESSAGES`` messages: every third an out-of-office notice, the rest replies."""
    raws, replies = [], 0
    for i in range(1, MESSAGES + 1):
        original = seed(engine, i)
        if i % 3 == 0:
            raws.append(out_of_office(original, NOW - timedelta(hours=2), NOW + timedelta(days=4)))
        else:
            raws.append(human_reply(original, NOW - timedelta(hours=2), choice=i))
            replies += 1
    dovecot.deliver_all(account.user, raws)
    return replies


def _assert_once(engine, dovecot, account, replies: int) -> None:
    assert count(engine, InboundMessage) == MESSAGES
    with engine.connect() as conn:
        types = dict(conn.execute(select(Event.type, func.count()).group_by(Event.type)).all())
    assert types == {"reply": replies, "auto_reply": MESSAGES - replies}
    assert count(engine, Task) == replies
    assert len(flagged(dovecot, account)) == MESSAGES


def test_a_poll_killed_midway_loses_nothing_and_counts_nothing_twice(
    engine, database_url, dovecot, account
) -> None:
    replies = _fill(engine, dovecot, account)
    child = textwrap.dedent(
        f"""
        import sys
        from datetime import datetime
        from outreach.cadence import load_cadence_file
        from outreach.inbound.imap import ImapMailbox
        from outreach.inbound.poll import poll_mailbox
        from outreach.paths import default_config_dir
        from outreach.store import make_engine
        engine = make_engine({database_url!r})
        box = ImapMailbox({dovecot.host!r}, {dovecot.port}, {account.user!r},
                          {account.password!r}, ssl=False)
        config = load_cadence_file(default_config_dir() / "cadences.yaml")
        poll_mailbox(engine, box, now=datetime.fromisoformat({NOW.isoformat()!r}),
                     config=config, batch_size=10,
                     progress=lambda n: print("batch", n, flush=True))
        print("done", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.startswith(b"batch"):
            seen += 1
        if seen == 4:  # in the middle of the fifth batch
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
    partial = count(engine, InboundMessage)
    assert 40 <= partial < MESSAGES
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    box = ImapMailbox(dovecot.host, dovecot.port, account.user, account.password, ssl=False)
    report = poll_mailbox(engine, box, now=NOW, config=config)
    assert report.intake.stored == MESSAGES - partial
    _assert_once(engine, dovecot, account, replies)


class _Crash(Exception):
    pass


def test_a_crash_between_storing_and_flagging_is_finished_by_the_next_poll(
    engine, dovecot, account, monkeypatch
) -> None:
    replies = _fill(engine, dovecot, account)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    box = ImapMailbox(dovecot.host, dovecot.port, account.user, account.password, ssl=False)
    calls = {"n": 0}
    real = ImapMailbox.mark_processed

    def flaky(self, uids):
        calls["n"] += 1
        if calls["n"] == 3:
            raise _Crash("killed after the third batch committed")
        return real(self, uids)

    monkeypatch.setattr(ImapMailbox, "mark_processed", flaky)
    with pytest.raises(_Crash):
        poll_mailbox(engine, box, now=NOW, config=config, batch_size=25)
    assert count(engine, InboundMessage) == 75  # three batches committed, the third unflagged
    assert len(flagged(dovecot, account)) == 50
    monkeypatch.setattr(ImapMailbox, "mark_processed", real)
    report = poll_mailbox(engine, box, now=NOW, config=config, batch_size=25)
    assert report.intake.duplicates == 0 and report.intake.stored == MESSAGES - 75
    _assert_once(engine, dovecot, account, replies)


def test_a_store_failure_mid_batch_rolls_back_that_batch_and_its_cursor(
    engine, dovecot, account, monkeypatch
) -> None:
    replies = _fill(engine, dovecot, account)
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    box = ImapMailbox(dovecot.host, dovecot.port, account.user, account.password, ssl=False)
    import outreach.inbound.poll as poll

    real = poll._save_cursor
    calls = {"n": 0}

    def failing(conn, cursor, now):
        calls["n"] += 1
        real(conn, cursor, now)
        if calls["n"] == 2:
            raise _Crash("the database went away before the commit")

    monkeypatch.setattr(poll, "_save_cursor", failing)
    with pytest.raises(_Crash):
        poll_mailbox(engine, box, now=NOW, config=config, batch_size=30)
    assert count(engine, InboundMessage) == 30
    assert len(flagged(dovecot, account)) == 30
    monkeypatch.setattr(poll, "_save_cursor", real)
    poll_mailbox(engine, box, now=NOW, config=config, batch_size=30)
    _assert_once(engine, dovecot, account, replies)
