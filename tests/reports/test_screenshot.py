"""``python -m outreach.reports.screenshot``: a full-page PNG of the report by headless Chromium."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from headless import browser_or_skip
from sample_report import sample_report

from outreach.reports.render_html import write_html
from outreach.reports.screenshot import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first)."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_writes_a_png_of_the_whole_page(tmp_path: Path, capsys) -> None:
    browser_or_skip()
    page = tmp_path / "report.html"
    write_html(sample_report(), page)
    out = tmp_path / "report.png"
    assert main([str(page), str(out), "--width", "1000"]) == 0
    width, height = png_size(out.read_bytes())
    assert width == 1000
    assert height > 2500  # the whole page, far below the first 900-pixel screen
    assert "(6 charts)" in capsys.readouterr().out


def test_max_height_keeps_the_top_of_the_page(tmp_path: Path) -> None:
    browser_or_skip()
    page = tmp_path / "report.html"
    write_html(sample_report(), page)
    out = tmp_path / "top.png"
    assert main([str(page), str(out), "--width", "1000", "--max-height", "1200"]) == 0
    assert png_size(out.read_bytes()) == (1000, 1200)


def test_a_missing_report_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope.html"), str(tmp_path / "out.png")]) == 2
    assert "no HTML report at" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


def test_a_missing_output_folder_is_exit_2(tmp_path: Path, capsys) -> None:
    page = tmp_path / "report.html"
    page.write_text("<!DOCTYPE html><html></html>", encoding="utf-8")
    assert main([str(page), str(tmp_path / "missing" / "out.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_too_narrow_a_width_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "r.html"), str(tmp_path / "o.png"), "--width", "100"])
    assert exit_info.value.code == 2
