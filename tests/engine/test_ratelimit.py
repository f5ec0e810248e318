"""The rate limiter and the tick's pacing of channels, on a fake clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from engine_world import World

from channels.base import Channel, SendResult
from outreach.clock import ManualTimer
from outreach.engine.ratelimit import RateLimiter

FakeTime = ManualTimer


def test_bucket_allows_the_burst_then_paces() -> None:
    fake = FakeTime()
    limiter = RateLimiter(2.0, monotonic=fake.monotonic, sleep=fake.sleep)
    for _ in range(2):
        assert limiter.acquire() == 0
    assert limiter.acquire() == pytest.approx(0.5)
    assert limiter.acquire(4) == pytest.approx(2.0)
    assert fake.now == pytest.approx(2.5)


def test_refills_with_time() -> None:
    fake = FakeTime()
    limiter = RateLimiter(1.0, monotonic=fake.monotonic, sleep=fake.sleep)
    limiter.acquire()
    fake.now += 10
    assert limiter.acquire() == 0


def test_rejects_a_zero_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


class PacedSms(Channel):
    name = "sms"
    max_batch = 1
    max_schedule_ahead = timedelta(days=35)

    def __init__(self) -> None:
        self.sent = []

    def send(self, batch):
        self.sent.extend(batch)
        return [SendResult.sent(m, "SM1") for m in batch]


def test_tick_paces_sms_to_the_policy_rate(world: World) -> None:
    fake = FakeTime()
    world.sms = PacedSms()  # type: ignore[assignment]
    people = [
        {
            "external_id": f"s{i}",
            "phone": f"+1 212 555 01{i:02d}",
            "sms_consent": "true",
            "preferred_channel": "sms",
            "stage": "applied",
            "timezone": "America/New_York",
        }
        for i in range(5)
    ]
    world.add(*people)
    # application-follow-up's acknowledgement is email with an SMS fallback: these people
    # have no email, so all five go by SMS, paced to policy.rate_limits.sms = 1/s.
    world.tick(
        datetime(2026, 11, 3, 9, 0, tzinfo=ZoneInfo("America/New_York")),
        sleep=fake.sleep,
        monotonic=fake.monotonic,
    )
    assert len(world.sms.sent) == 5
    assert sum(fake.slept) == pytest.approx(4.0)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.1, 1000),
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=40),
    gaps=st.lists(st.floats(0, 5), min_size=40, max_size=40),
)
def test_limiter_never_exceeds_rate_plus_burst(
    rate: float, sizes: list[int], gaps: list[float]
) -> None:
    fake = FakeTime()
    limiter = RateLimiter(rate, monotonic=fake.monotonic, sleep=fake.sleep)
    sent = 0.0
    for size, gap in zip(sizes, gaps, strict=False):
        fake.now += gap
        limiter.acquire(size)
        sent += size
        assert sent <= limiter.burst + rate * fake.now + 1e-6
