"""The installed ``outreach`` script, as a user runs it: help, config check, import, list."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests_data import TEN_ROWS_TWO_BAD


def outreach_script() -> str:
    candidate = Path(sys.executable).with_name("outreach")
    found = str(candidate) if candidate.exists() else shutil.which("outreach")
    if not found:
        pytest.fail("the outreach console script is not installed next to this Python")
    return found


def test_the_installed_script_runs_the_acceptance_walkthrough(
    tmp_path: Path, database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    env["OUTREACH_DATABASE_URL"] = database_url

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [outreach_script(), *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("--help").returncode == 0
    check = run("config", "check")
    assert check.returncode == 0, check.stderr
    csv = tmp_path / "ten.csv"
    csv.write_text(TEN_ROWS_TWO_BAD)
    imported = run("import", str(csv))
    assert imported.returncode == 1
    assert "10 rows, 8 loaded" in imported.stdout
    assert "line 4" in imported.stderr and "line 7" in imported.stderr
    listed = run("candidates", "--format", "json")
    assert listed.returncode == 0
    assert len(json.loads(listed.stdout)) == 8
