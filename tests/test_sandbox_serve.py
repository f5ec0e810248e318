"""``outreach sandbox serve``: the six fakes up, the variables printed, Ctrl-C or TERM stops them."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from test_entrypoint import outreach_script

EXPECTED = {
    "GREENHOUSE_BASE_URL",
    "LEVER_BASE_URL",
    "HUBSPOT_BASE_URL",
    "BULLHORN_AUTH_URL",
    "BULLHORN_REST_URL",
    "BULLHORN_TOKEN_FILE",
    "SENDGRID_BASE_URL",
    "TWILIO_BASE_URL",
    "SENDGRID_API_KEY",
    "TWILIO_AUTH_TOKEN",
    "MAILCHIMP_TRANSACTIONAL_BASE_URL",
    "MAILCHIMP_WEBHOOK_KEY",
}


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "term"])
def test_sandbox_serve_prints_the_environment_and_stops_cleanly(
    tmp_path: Path, stop_with: signal.Signals
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OLD=1\n")
    env_file.chmod(0o644)
    proc = subprocess.Popen(
        [outreach_script(), "sandbox", "serve", "--people", "40", "--env-file", str(env_file)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed: dict[str, str] = {}
        assert proc.stdout is not None
        while not set(printed) >= EXPECTED:
            line = proc.stdout.readline()
            assert line, f"serve ended early: {proc.stderr.read() if proc.stderr else ''}"
            name, _, value = line.removeprefix("export ").strip().partition("=")
            printed[name] = value
        from_file = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if line.strip()
        )
        assert from_file == printed
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600  # it holds the API keys
        # Each fake answers with its own auth: a real request per provider.
        lever = httpx.get(
            printed["LEVER_BASE_URL"] + "/opportunities",
            auth=(printed["LEVER_API_KEY"], ""),
            timeout=5,
        )
        assert lever.status_code == 200 and lever.json()["data"]
        hubspot = httpx.get(
            printed["HUBSPOT_BASE_URL"] + "/crm/v3/objects/contacts",
            headers={"Authorization": f"Bearer {printed['HUBSPOT_ACCESS_TOKEN']}"},
            timeout=5,
        )
        assert hubspot.status_code == 200 and hubspot.json()["results"]
        token = httpx.post(
            printed["BULLHORN_AUTH_URL"] + "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": printed["BULLHORN_REFRESH_TOKEN"],
                "client_id": printed["BULLHORN_CLIENT_ID"],
                "client_secret": printed["BULLHORN_CLIENT_SECRET"],
            },
            timeout=5,
        )
        assert token.status_code == 200
        login = httpx.post(
            printed["BULLHORN_REST_URL"] + "/login",
            params={"version": "*", "access_token": token.json()["access_token"]},
            timeout=5,
        )
        assert login.status_code == 200 and login.json()["restUrl"].endswith("/")
        # The rotating token lives in the sandbox's own private folder, not the cwd.
        assert not printed["BULLHORN_TOKEN_FILE"].startswith(str(tmp_path))
        refused = httpx.post(
            printed["SENDGRID_BASE_URL"] + "/v3/mail/send",
            headers={"Authorization": "Bearer SG.wrong"},
            json={},
            timeout=5,
        )
        assert refused.status_code == 401
        mailchimp = httpx.post(
            printed["MAILCHIMP_TRANSACTIONAL_BASE_URL"] + "/messages/list-scheduled.json",
            json={"key": "md-wrong"},
            timeout=5,
        )
        assert mailchimp.status_code == 500 and mailchimp.json()["name"] == "Invalid_Key"
    finally:
        proc.send_signal(stop_with)
        code = proc.wait(timeout=15)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    # Nothing is left listening.
    try:
        httpx.get(printed["LEVER_BASE_URL"] + "/opportunities", timeout=1)
    except httpx.TransportError:
        pass
    else:
        raise AssertionError("the Lever fake still answers after Ctrl-C")
