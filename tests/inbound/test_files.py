"""read_messages: .eml files, mbox, Maildir and folders of .eml, and what it refuses."""

from __future__ import annotations

import mailbox
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach.errors import InputError
from outreach.inbound.files import read_messages


def message(n: int, body: bytes = b"Happy to talk next week.\n") -> bytes:
    return (
        b"From: Cand %d <cand%d@example.org>\n"
        b"To: replies+tok%d@example.com\n"
        b"Subject: Re: Your application\n"
        b"Message-ID: <file-%d@example.org>\n"
        b"\n" % (n, n, n, n)
    ) + body


def test_one_eml_file(tmp_path: Path):
    raw = message(1).replace(b"\n", b"\r\n") + b"Gr\xfc\xdfe \xe2\x82\xac\r\n"
    (tmp_path / "reply.eml").write_bytes(raw)
    (got,) = read_messages(tmp_path / "reply.eml")
    assert got.raw == raw
    assert (got.where, got.source, got.received_at, got.error) == ("reply.eml", "file", None, None)


def test_a_message_file_without_the_eml_suffix_is_read_too(tmp_path: Path):
    (tmp_path / "reply.txt").write_bytes(b"Received: from mx\n" + message(1))
    assert [m.where for m in read_messages(tmp_path / "reply.txt")] == ["reply.txt"]


def test_mbox_with_escaped_from_lines(tmp_path: Path):
    path = tmp_path / "replies.mbox"
    path.write_bytes(
        b"From cand1@example.org Tue Nov 24 08:30:00 2026\n"
        + message(1, b"Hi,\n>From now on I am available.\n>>From quoted text\n")
        + b"\n"
        + b"From cand2@example.org Tue Nov 24 09:00:00 2026\n"
        + message(2)
        + b"\n"
        + b"From cand3@example.org Tue Nov 24 09:30:00 2026\n"
        + message(3)
    )
    got = list(read_messages(path))
    assert [m.where for m in got] == ["replies.mbox #1", "replies.mbox #2", "replies.mbox #3"]
    assert {(m.source, m.received_at, m.error) for m in got} == {("file", None, None)}
    # The escaped "From " line stays inside message 1, with one ">" taken off (mboxrd).
    assert got[0].raw == message(1, b"Hi,\nFrom now on I am available.\n>From quoted text\n")
    assert got[1].raw == message(2)  # the blank line before the next "From " is the separator
    assert got[2].raw == message(3)


def test_mbox_written_by_the_standard_library_round_trips(tmp_path: Path):
    path = tmp_path / "export.mbox"
    originals = [message(1, b"From the team: thanks!\nbye\n"), message(2)]
    box = mailbox.mbox(path)
    for raw in originals:
        box.add(raw)
    box.close()
    got = [m.raw for m in read_messages(path)]
    assert got == originals


def test_a_broken_message_inside_an_mbox_does_not_stop_the_rest(tmp_path: Path):
    path = tmp_path / "replies.mbox"
    path.write_bytes(
        b"From a Tue Nov 24 08:30:00 2026\n"
        + message(1)
        + b"From b Tue Nov 24 08:31:00 2026\n"
        + b"\x00\x01 not a message\n"
        + b"From c Tue Nov 24 08:32:00 2026\n"
        + message(3)
    )
    got = list(read_messages(path))
    assert [m.raw for m in got] == [message(1), None, message(3)]
    assert "not an email message" in got[1].error
    assert got[1].where == "replies.mbox #2"


def test_maildir_reads_new_then_cur_with_modification_times(tmp_path: Path):
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    files = {
        "new/1700000002.M1P1.host": message(2),
        "new/1700000001.M1P1.host": message(1),
        "cur/1700000000.M1P1.host:2,S": message(0),
        "tmp/1700000009.M1P1.host": message(9),  # still being delivered: not read
        "cur/.hidden": message(8),
    }
    for name, raw in files.items():
        (root / name).write_bytes(raw)
        os.utime(root / name, (1_764_000_000, 1_764_000_000))
    got = list(read_messages(root))
    assert [m.where for m in got] == [
        "Maildir/new/1700000001.M1P1.host",
        "Maildir/new/1700000002.M1P1.host",
        "Maildir/cur/1700000000.M1P1.host:2,S",
    ]
    assert [m.raw for m in got] == [message(1), message(2), message(0)]
    assert {m.received_at for m in got} == {datetime.fromtimestamp(1_764_000_000, UTC)}
    assert all(m.received_at.tzinfo is UTC and m.source == "file" for m in got)


def test_an_empty_maildir_has_no_messages(tmp_path: Path):
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "box" / sub).mkdir(parents=True)
    assert list(read_messages(tmp_path / "box")) == []


def test_a_folder_of_eml_files_in_name_order(tmp_path: Path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "b.eml").write_bytes(message(2))
    (folder / "a.EML").write_bytes(message(1))
    (folder / "c.eml").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "d.eml").write_bytes(b"")
    (folder / "notes.txt").write_bytes(b"not mail")
    (folder / "sub.eml").mkdir()
    got = list(read_messages(folder))
    assert [m.where for m in got] == [
        "export/a.EML",
        "export/b.eml",
        "export/c.eml",
        "export/d.eml",
    ]
    assert [m.raw for m in got] == [message(1), message(2), None, None]
    assert "not an email message" in got[2].error
    assert got[3].error == "empty message"


def test_a_missing_path_is_an_input_error_at_once(tmp_path: Path):
    missing = tmp_path / "nope.mbox"
    with pytest.raises(InputError, match=r"nope\.mbox: no such file"):
        read_messages(missing)  # raised by the call, before iterating


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\x00\x00binary", b"just some words\nand more\n", b"", b" leading: space\n"],
    ids=["binary", "text", "empty", "indented"],
)
def test_a_file_of_no_known_shape_is_an_input_error(tmp_path: Path, content: bytes):
    path = tmp_path / "garbage.eml"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_messages(path)
    assert str(path) in str(caught.value)
    assert "not an email message, mbox or Maildir" in str(caught.value)


def test_a_folder_without_mail_is_an_input_error(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match=r"neither \.eml files nor a Maildir"):
        read_messages(tmp_path)
