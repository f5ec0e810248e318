"""The seed timings of the default cadences, on a fake clock, with a nightly tick."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from engine_world import World

from outreach.engine.route import choose_variant

NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")


def ny(*args: int) -> datetime:
    return datetime(*args, tzinfo=NY)


def applicant(**extra) -> dict:
    return {
        "external_id": "a1",
        "first_name": "Ann",
        "email": "ann@example.com",
        "job_title": "Data Engineer",
        "recruiter_name": "Jo Smith",
        "timezone": "America/New_York",
        **extra,
    }


def test_friday_evening_application_is_acknowledged_on_saturday_morning(world: World) -> None:
    world.add(applicant(stage="applied", stage_entered_at="2026-11-20T17:00:00-05:00"))
    world.nightly(ny(2026, 11, 21, 2, 0), 3)  # Saturday, Sunday, Monday at 02:00
    (ack,) = world.touches(step_id="acknowledge")
    assert ack.status == "sent" and ack.channel == "email"
    # The step's own window has weekends: 08:00 Saturday, 15 h after the application
    # (the policy's Monday-to-Friday window would have made it 63 h, past the 48 h).
    assert ack.planned_at.astimezone(NY) == ny(2026, 11, 21, 8, 0)
    assert "late" not in ack.reason
    assert [s.total("sent") for s in world.summaries] == [1, 0, 0]


def test_an_evening_interview_before_a_holiday_is_thanked_on_the_holiday(
    world: World,
) -> None:
    # Thanksgiving (a US holiday) is Thursday 26 November 2026.
    world.add(applicant(stage="interview", stage_entered_at="2026-11-25T18:30:00-05:00"))
    world.tick(ny(2026, 11, 26, 2, 0))
    (thanks,) = world.touches(step_id="thank-you")
    assert thanks.status == "sent"
    assert thanks.planned_at.astimezone(NY) == ny(2026, 11, 26, 8, 0)
    # A check-in (no window of its own) still keeps the policy's days and holidays.
    check_in = world.config.cadence("interview-follow-up").steps[1]
    assert check_in.send_window is None


def test_application_inside_the_window_is_acknowledged_at_once(world: World) -> None:
    world.add(applicant(stage="applied", stage_entered_at="2026-11-20T17:00:00-05:00"))
    world.tick(ny(2026, 11, 20, 17, 5))
    (ack,) = world.touches(step_id="acknowledge")
    assert ack.planned_at.astimezone(NY) == ny(2026, 11, 20, 17, 5)
    assert ack.reason == "fixed: email"
    assert world.email.sent[0].subject and "{{" not in world.email.sent[0].body


def test_a_backlog_imported_with_old_stage_dates_gets_no_stale_acknowledgement(
    world: World,
) -> None:
    world.add(applicant(stage="applied", stage_entered_at="2026-09-01T10:00:00-04:00"))
    world.tick(ny(2026, 11, 3, 2, 0))
    (ack,) = world.touches(step_id="acknowledge")
    assert ack.status == "skipped" and ack.reason.startswith("late")
    assert not world.email.sent


def test_interview_thanks_within_24_hours(world: World) -> None:
    world.add(applicant(stage="interview", stage_entered_at="2026-11-17T14:00:00-05:00"))
    world.tick(ny(2026, 11, 18, 2, 0))
    (thanks,) = world.touches(step_id="thank-you")
    assert thanks.planned_at.astimezone(NY) == ny(2026, 11, 18, 8, 0)
    assert thanks.planned_at - ny(2026, 11, 17, 14, 0) <= timedelta(hours=24)
    # The variant the person's stable hash picks, with that variant's template.
    step = world.config.cadence("interview-follow-up").steps[0]
    assert step.id == "thank-you"
    assert (thanks.variant, thanks.template) == choose_variant(
        thanks.person_id, "interview-follow-up", step
    )
    assert thanks.template == {"a": "interview_thanks", "b": "interview_thanks_b"}[thanks.variant]


def test_check_in_a_week_after_the_last_touch_and_final_at_a_month(world: World) -> None:
    world.add(applicant(stage="applied", stage_entered_at="2026-11-02T10:00:00-05:00"))
    world.nightly(ny(2026, 11, 2, 11, 0), 40)
    steps = {t.step_id: t for t in world.touches(cadence_id="application-follow-up")}
    ack, check_in = steps["acknowledge"], steps["check-in"]
    assert ack.planned_at.astimezone(NY) == ny(2026, 11, 2, 11, 0)
    assert check_in.planned_at - ack.planned_at == timedelta(days=7)
    status = steps["status-update"]
    assert status.planned_at - check_in.planned_at == timedelta(days=14)
    final = steps["final"]
    # 30 days after the application is Wednesday 2 December, 10:00.
    assert final.planned_at.astimezone(NY) == ny(2026, 12, 2, 10, 0)
    assert final.status == "sent"


def test_status_updates_every_14_days_until_the_stage_changes(world: World) -> None:
    world.add(applicant(stage="interview", stage_entered_at="2026-11-02T09:00:00-05:00"))
    world.nightly(ny(2026, 11, 2, 9, 30), 38)  # through 9 December
    updates = world.touches(step_id="status-update")
    assert [u.occurrence for u in updates] == [0, 1]
    assert updates[1].planned_at - updates[0].planned_at == timedelta(days=14)
    # An offer ends the interview cadence: no third update.
    world.add(applicant(stage="offer", stage_entered_at="2026-12-10T09:00:00-05:00"))
    world.nightly(ny(2026, 12, 10, 9, 30), 30)
    assert [u.occurrence for u in world.touches(step_id="status-update")] == [0, 1]
    assert world.touches(cadence_id="offer-follow-up")


def test_nothing_goes_out_on_a_holiday(world: World) -> None:
    # Acknowledged Thursday 19 November; the check-in a week later falls on Thanksgiving.
    world.add(applicant(stage="applied", stage_entered_at="2026-11-18T20:00:00-05:00"))
    world.nightly(ny(2026, 11, 19, 2, 0), 10)
    steps = {t.step_id: t for t in world.touches()}
    assert steps["acknowledge"].planned_at.astimezone(NY) == ny(2026, 11, 19, 8, 0)
    assert steps["check-in"].planned_at.astimezone(NY) == ny(2026, 11, 27, 8, 0)
    assert any(s.total_reasons("deferred").get("holiday") for s in world.summaries)


def test_local_time_is_right_across_the_dst_change(world: World) -> None:
    # Daylight saving time ends on Sunday 1 November 2026 in New York.
    world.add(applicant(stage="applied", stage_entered_at="2026-10-29T20:00:00-04:00"))
    world.nightly(ny(2026, 10, 30, 2, 0), 9)
    steps = {t.step_id: t for t in world.touches()}
    ack, check_in = steps["acknowledge"], steps["check-in"]
    assert ack.planned_at.astimezone(NY).hour == 8 and check_in.planned_at.astimezone(NY).hour == 8
    assert ack.planned_at.astimezone(UTC).hour == 12  # EDT
    assert check_in.planned_at.astimezone(UTC).hour == 13  # EST


def test_zone_from_the_phone_number_when_the_record_has_none(world: World) -> None:
    # A Seattle number and no zone on the record: 08:00 Pacific.
    world.add(
        applicant(
            stage="applied",
            timezone="",
            phone="+1 206 555 0100",
            stage_entered_at="2026-11-19T20:00:00-08:00",
        )
    )
    world.tick(ny(2026, 11, 20, 2, 0))
    (ack,) = world.touches(step_id="acknowledge")
    assert ack.planned_at.astimezone(ZoneInfo("America/Los_Angeles")).hour == 8
