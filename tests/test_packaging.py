"""Packaging: the wheel carries all three packages and the default config; README and CI agree."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from outreach.paths import default_config_dir

REPO = Path(__file__).resolve().parent.parent


def test_default_config_is_found() -> None:
    folder = default_config_dir()
    assert (folder / "cadences.yaml").is_file()
    assert any((folder / "templates").glob("*.email.j2"))


def test_wheel_ships_packages_config_and_migrations(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.fail(f"pip wheel failed: {result.stderr[-2000:]}")
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "outreach/_config/cadences.yaml" in names
    assert "outreach/_config/templates/interview_thanks.email.j2" in names
    assert "outreach/_config/examples/candidates.csv" in names
    assert "outreach/migrations/env.py" in names
    assert "outreach/reports/schema/report.schema.json" in names
    assert any(n.startswith("outreach/migrations/versions/0001") for n in names)
    assert "connectors/__init__.py" in names and "channels/__init__.py" in names
    assert not any(n.endswith((".db", ".pyc")) for n in names)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", readme, re.S)
    assert len(blocks) >= 2
    first, second = blocks[0].strip(), blocks[1].strip()
    assert "outreach " in first
    assert "pytest" in second
    ci = (REPO / ".ci" / "run").read_text()
    assert f'TEST_COMMAND="{second}"' in ci
