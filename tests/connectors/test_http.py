"""The shared HTTP layer: retries, Retry-After, pacing from headers, error translation."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
import respx

from connectors.http import ApiClient, HeaderPacer, retry_after_seconds
from outreach.clock import ManualTimer
from outreach.errors import ConfigError, PermanentError, RetryableError

BASE = "https://api.example.test/v1"


FakeTime = ManualTimer


def client(fake: FakeTime, **kwargs) -> ApiClient:
    return ApiClient(
        "lever",
        BASE,
        credential="LEVER_API_KEY",
        auth=("secret-key", ""),
        monotonic=fake.monotonic,
        sleep=fake.sleep,
        **kwargs,
    )


@respx.mock
def test_429_waits_for_retry_after_then_succeeds() -> None:
    fake = FakeTime()
    route = respx.get(f"{BASE}/opportunities").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"message": "slow down"}),
            httpx.Response(200, json={"data": []}),
        ]
    )
    response = client(fake).get("/opportunities")
    assert response.json() == {"data": []}
    assert route.call_count == 2
    assert sum(fake.slept) == pytest.approx(7, abs=0.01)


@respx.mock
def test_5xx_on_reads_is_retried_with_backoff_and_gives_up() -> None:
    fake = FakeTime()
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(503, text="busy"))
    api = client(fake, attempts=3)
    with pytest.raises(RetryableError, match="HTTP 503"):
        api.get("/x")
    assert api.retries == 2 and fake.slept == [0.5, 1.0]


@respx.mock
def test_5xx_on_a_write_is_not_retried() -> None:
    fake = FakeTime()
    route = respx.post(f"{BASE}/notes").mock(
        return_value=httpx.Response(500, json={"error": "boom"})
    )
    with pytest.raises(PermanentError, match="HTTP 500"):
        client(fake).post("/notes", json={})
    assert route.call_count == 1


@respx.mock
def test_connection_errors_are_retried() -> None:
    fake = FakeTime()
    route = respx.get(f"{BASE}/x").mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, json={})]
    )
    assert client(fake).get("/x").status_code == 200
    assert route.call_count == 2


@respx.mock
@pytest.mark.parametrize(("status", "words"), [(401, "is rejected"), (403, "lacks the permission")])
def test_auth_failures_name_the_credential_not_its_value(status: int, words: str) -> None:
    fake = FakeTime()
    respx.get(f"{BASE}/x").mock(return_value=httpx.Response(status, json={"message": "no"}))
    with pytest.raises(ConfigError) as info:
        client(fake).get("/x")
    assert "LEVER_API_KEY" in str(info.value) and words in str(info.value)
    assert "secret-key" not in str(info.value)


@respx.mock
def test_other_4xx_are_permanent() -> None:
    fake = FakeTime()
    respx.get(f"{BASE}/x").mock(
        return_value=httpx.Response(422, json={"errors": [{"message": "bad"}]})
    )
    with pytest.raises(PermanentError, match="HTTP 422"):
        client(fake).get("/x")


@respx.mock
def test_a_read_timeout_is_retried_but_a_write_timeout_is_not() -> None:
    fake = FakeTime()
    respx.get(f"{BASE}/x").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(200, json={})]
    )
    assert client(fake).get("/x").status_code == 200
    respx.post(f"{BASE}/y").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(PermanentError, match="may have been processed"):
        client(fake).post("/y", json={})


def test_pacer_holds_when_the_provider_says_nothing_is_left() -> None:
    fake = FakeTime()
    pacer = HeaderPacer(None, monotonic=fake.monotonic, sleep=fake.sleep)
    pacer.observe({"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0"})
    pacer.wait()
    assert fake.slept == [10.0]
    pacer.observe(
        {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    )
    pacer.wait()
    assert fake.slept[-1] == 10.0
    pacer.observe({"X-HubSpot-RateLimit-Remaining": "5"})
    pacer.wait()
    assert len(fake.slept) == 2


def test_pacer_keeps_a_steady_rate() -> None:
    fake = FakeTime()
    pacer = HeaderPacer(10.0, monotonic=fake.monotonic, sleep=fake.sleep)
    for _ in range(30):
        pacer.wait()
    # No opening burst: 30 requests at 10/s span 2.9 s, so a provider window of exactly
    # 10 per second never sees an eleventh.
    assert fake.now == pytest.approx(2.9)


def test_retry_after_forms() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("Wed, 25 Nov 2026 12:00:30 GMT", now=now) == 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


@respx.mock
def test_a_used_up_daily_quota_ends_the_call_without_waiting_for_midnight() -> None:
    import json
    from pathlib import Path

    body = json.loads(
        (
            Path(__file__).resolve().parent.parent / "fixtures" / "hubspot" / "error_429.json"
        ).read_text()
    )
    fake = FakeTime()
    route = respx.get(f"{BASE}/contacts").mock(return_value=httpx.Response(429, json=body))
    api = client(fake)
    with pytest.raises(RetryableError, match="daily API limit is used up") as caught:
        api.get("/contacts")
    assert route.call_count == 1 and fake.slept == []
    assert caught.value.retry_after and caught.value.retry_after > api.max_wait
    # Other calls of the run (a write-back to another CRM record) are not held for hours.
    respx.get(f"{BASE}/ping").mock(return_value=httpx.Response(200, json={}))
    api.get("/ping")
    assert sum(fake.slept) < 1.0


@respx.mock
def test_a_retry_after_longer_than_a_run_should_wait_is_not_slept() -> None:
    fake = FakeTime()
    route = respx.get(f"{BASE}/x").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "900"}, json={})
    )
    with pytest.raises(RetryableError) as caught:
        client(fake).get("/x")
    assert route.call_count == 1 and fake.slept == [] and caught.value.retry_after == 900
