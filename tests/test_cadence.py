"""The cadence file: the shipped defaults load, and every malformed file is explained."""

from __future__ import annotations

import textwrap
from datetime import time, timedelta
from pathlib import Path

import pytest

from outreach.cadence import (
    CANONICAL_STAGES,
    format_duration,
    load_cadence_file,
    parse_duration,
    parse_rate,
)
from outreach.errors import ConfigError
from outreach.paths import default_config_dir

GOOD = """\
policy:
  default_timezone: America/New_York
  default_region: US
  send_window: {start: "08:00", end: "19:00", days: [mon, tue, wed, thu, fri]}
  holidays: US
  max_touches: {count: 2, per: 7d}
  min_gap: 48h
  channel_order: [email, sms, linkedin]
  sms_requires_consent: true
  rate_limits: {email: 50/s, sms: 1/s, linkedin: 40/d, call: 25/d}
stage_map:
  greenhouse: {"Application Review": applied, "Face to Face": interview}
cadences:
  - id: follow-up
    trigger: {stage: interview}
    stop_on: [reply, stage_change, opt_out]
    steps:
      - id: thank-you
        after: 2h
        within: 24h
        on_late: send
        channel: email
        template: t
        variants: [{template: t, weight: 50}]
      - id: check-in
        after: 7d
        from: previous
        channel: auto
        template: t
"""


def write(tmp_path: Path, text: str, templates: tuple[str, ...] = ("t",)) -> Path:
    """Write a cadence file and complete templates for ``templates`` beside it."""
    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    for name in templates:
        (folder / f"{name}.email.j2").write_text("Subject: Hello {{ candidate.first_name }}\n\nHi")
        (folder / f"{name}.sms.j2").write_text("Hi {{ candidate.first_name }}")
        (folder / f"{name}.task.j2").write_text("Title: Connect\n\nSay hi")
    path = tmp_path / "cadences.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_defaults_load_and_cover_the_guidance() -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    triggers = {c.trigger.stage for c in config.cadences}
    assert triggers == set(CANONICAL_STAGES)
    ack = config.cadence("application-follow-up").steps[0]
    assert ack.within == timedelta(hours=48) and ack.transactional and ack.on_late == "skip"
    thanks = config.cadence("interview-follow-up").steps[0]
    assert thanks.after == timedelta(hours=2) and thanks.on_late == "skip"
    assert thanks.within == timedelta(hours=24) and thanks.transactional
    # The answers to an event keep their deadline over weekends and holidays.
    for step in (ack, thanks):
        assert step.send_window is not None and not step.send_window.holidays
        assert step.send_window.weekday_numbers == frozenset(range(7))
    status = config.cadence("interview-follow-up").steps[2]
    assert status.repeat is not None and status.repeat.every == timedelta(days=14)
    final = config.cadence("interview-follow-up").steps[3]
    assert final.after == timedelta(days=30)
    nurture = config.cadence("passive-nurture")
    assert [s.channel for s in nurture.steps][:2] == ["email", "linkedin"]


def test_a_good_file_parses_every_field(tmp_path: Path) -> None:
    config = load_cadence_file(write(tmp_path, GOOD))
    policy = config.policy
    assert policy.send_window.start == time(8) and policy.send_window.end == time(19)
    assert policy.send_window.weekday_numbers == frozenset({0, 1, 2, 3, 4})
    assert policy.max_touches.per == timedelta(days=7)
    assert policy.rate_limits["linkedin"].count == 40
    assert policy.rate_limits["linkedin"].seconds == 86400
    assert policy.holidays == "US"
    step = config.cadences[0].steps[1]
    assert step.anchor == "previous" and config.cadences[0].step_anchor(0) == "trigger"
    assert config.canonical_stage("greenhouse", "face to face") == "interview"
    assert config.canonical_stage("greenhouse", "Unknown") is None
    assert config.canonical_stage("anything", "Offer") == "offer"
    assert config.channels_for(step) == ["email", "sms", "linkedin"]


def test_clock_times_and_country_codes_are_not_yaml_1_1_numbers(tmp_path: Path) -> None:
    text = GOOD.replace('start: "08:00"', "start: 9:30").replace("holidays: US", "holidays: no")
    config = load_cadence_file(write(tmp_path, text))
    assert config.policy.send_window.start == time(9, 30)
    assert config.policy.holidays == "NO"


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("30m", timedelta(minutes=30)),
        ("48h", timedelta(hours=48)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("0m", timedelta(0)),
    ],
)
def test_durations(text: str, unit: timedelta) -> None:
    assert parse_duration(text) == unit


def test_duration_round_trip() -> None:
    for text in ("30m", "48h", "7d", "2w", "90m"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(parse_duration("48h")) == "2d"


def test_rates() -> None:
    assert parse_rate("50/s").per_second == 50
    assert str(parse_rate("40/d")) == "40/d"


# Each case: (replace this, with that) in GOOD, the path the message must name, the value
# it must quote.
MALFORMED = [
    ("after: 2h", "after: 2 hours", "cadences[0].steps[0].after", "2 hours"),
    ("after: 7d", "after: 7", "cadences[0].steps[1].after", "7"),
    (
        "within: 24h",
        "within: 1h",
        "cadences[0].steps[0]",
        "within (1h) must be at least after (2h)",
    ),
    ("on_late: send", "on_late: later", "cadences[0].steps[0].on_late", "later"),
    ("channel: email", "channel: fax", "cadences[0].steps[0].channel", "fax"),
    ("from: previous", "from: yesterday", "cadences[0].steps[1].from", "yesterday"),
    (
        "trigger: {stage: interview}",
        "trigger: {stage: onsite}",
        "cadences[0].trigger.stage",
        "onsite",
    ),
    (
        "stop_on: [reply, stage_change, opt_out]",
        "stop_on: [reply, bored]",
        "cadences[0].stop_on[1]",
        "bored",
    ),
    ("min_gap: 48h", "min_gap: two days", "policy.min_gap", "two days"),
    (
        "max_touches: {count: 2, per: 7d}",
        "max_touches: {count: 0, per: 7d}",
        "policy.max_touches.count",
        "0",
    ),
    (
        "max_touches: {count: 2, per: 7d}",
        "max_touches: {count: 2, per: 7x}",
        "policy.max_touches.per",
        "7x",
    ),
    ('start: "08:00"', 'start: "25:00"', "policy.send_window.start", "25:00"),
    (
        'end: "19:00"',
        'end: "07:00"',
        "policy.send_window",
        "end 07:00 must be later than start 08:00",
    ),
    (
        "days: [mon, tue, wed, thu, fri]",
        "days: [mon, funday]",
        "policy.send_window.days[1]",
        "funday",
    ),
    (
        "default_timezone: America/New_York",
        "default_timezone: Mars/Olympus",
        "policy.default_timezone",
        "Mars/Olympus",
    ),
    ("default_region: US", "default_region: XX", "policy.default_region", "XX"),
    ("holidays: US", "holidays: ZZ", "policy.holidays", "ZZ"),
    ("email: 50/s", "email: fast", "policy.rate_limits.email", "fast"),
    ("sms: 1/s", "sms: 0/s", "policy.rate_limits.sms", "0/s"),
    (
        "channel_order: [email, sms, linkedin]",
        "channel_order: [email, pigeon]",
        "policy.channel_order[1]",
        "pigeon",
    ),
    (
        "channel_order: [email, sms, linkedin]",
        "channel_order: [email, email]",
        "policy.channel_order",
        "email",
    ),
    (
        '"Face to Face": interview',
        '"Face to Face": interviewing',
        "stage_map.greenhouse.Face to Face",
        "interviewing",
    ),
    (
        "sms_requires_consent: true",
        "sms_requires_consent: maybe",
        "policy.sms_requires_consent",
        "maybe",
    ),
    ("weight: 50", "weight: 100", "cadences[0].steps[0].variants[0].weight", "100"),
    ("id: check-in", "id: thank-you", "cadences[0]", "thank-you"),
    ("id: follow-up", "id: Follow Up!", "cadences[0].id", "Follow Up!"),
    (
        "channel: email",
        "channel: email\n        fallback: email",
        "cadences[0].steps[0]",
        "fallback must differ",
    ),
    (
        "channel: auto",
        "channel: auto\n        fallback: sms",
        "cadences[0].steps[1]",
        "fallback is only for a fixed channel",
    ),
    ("min_gap: 48h", "min_gap: 48h\n  quiet: true", "policy.quiet", "unknown key 'quiet'"),
    (
        "on_late: send",
        "on_late: send\n        delay: 2h",
        "cadences[0].steps[0].delay",
        "allowed here:",
    ),
    (
        "      - id: thank-you\n",
        "      - id: thank-you\n        template_: x\n",
        "cadences[0].steps[0].template_",
        "unknown key",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "path", "value"), MALFORMED, ids=[c[2] + ":" + c[3][:20] for c in MALFORMED]
)
def test_malformed_cadence_file_exits_2_naming_path_and_value(
    cli, tmp_path: Path, old: str, new: str, path: str, value: str
) -> None:
    assert old in GOOD
    file = write(tmp_path, GOOD.replace(old, new, 1))
    result = cli("config", "check", str(file))
    assert result.exit_code == 2, result.output
    assert str(file) in result.stderr
    assert path in result.stderr, result.stderr
    assert value in result.stderr, result.stderr


def test_every_problem_is_reported_at_once_with_its_line(cli, tmp_path: Path) -> None:
    text = GOOD.replace("after: 2h", "after: soon").replace("channel: auto", "channel: owl")
    file = write(tmp_path, text)
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "2 problem(s)" in result.stderr
    after_line = text.splitlines().index("        after: soon") + 1
    assert f"{file}:{after_line}: cadences[0].steps[0].after" in result.stderr
    assert "cadences[0].steps[1].channel" in result.stderr


def test_yaml_syntax_error_gives_line_and_column(cli, tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("min_gap: 48h", "min_gap: [48h"))
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "YAML syntax error" in result.stderr
    assert f"{file}:" in result.stderr
    line_col = result.stderr.split(f"{file}:")[1].split(":")[:2]
    assert all(part.isdigit() for part in line_col)


def test_missing_template_files_are_named(cli, tmp_path: Path) -> None:
    file = write(
        tmp_path, GOOD.replace("template: t\n        variants", "template: nope\n        variants")
    )
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "cadences[0].steps[0].template" in result.stderr
    assert "nope.email.j2" in result.stderr


def test_duplicate_cadence_ids(cli, tmp_path: Path) -> None:
    second = GOOD.split("cadences:\n", 1)[1]
    file = write(tmp_path, GOOD + second)
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "cadences[1].id" in result.stderr and "'follow-up'" in result.stderr


def test_first_step_cannot_follow_a_previous_touch(cli, tmp_path: Path) -> None:
    file = write(tmp_path, GOOD.replace("after: 2h", "after: 2h\n        from: previous"))
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "cadences[0]" in result.stderr and "from: trigger" in result.stderr


def test_not_a_mapping(cli, tmp_path: Path) -> None:
    file = write(tmp_path, "- just\n- a list\n")
    result = cli("config", "check", str(file))
    assert result.exit_code == 2 and "must be a mapping" in result.stderr


def test_missing_required_key(cli, tmp_path: Path) -> None:
    file = write(
        tmp_path, GOOD.replace("        template: t\n        variants", "        variants")
    )
    result = cli("config", "check", str(file))
    assert result.exit_code == 2
    assert "cadences[0].steps[0]: missing required key 'template'" in result.stderr


def test_missing_file(cli, tmp_path: Path) -> None:
    result = cli("config", "check", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 2 and "not found" in result.stderr


def test_config_check_passes_on_the_defaults(cli) -> None:
    result = cli("config", "check")
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout


def test_config_error_lists_problems() -> None:
    error = ConfigError("head", ["one", "two"])
    assert str(error) == "head\n  - one\n  - two"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-02-30", "cannot read this timestamp value"),  # a date that does not exist
        ("!!int abc", "cannot read this int value"),
        ("!!bool maybe", "cannot read this bool value"),
        ("!!timestamp soon", "cannot read this timestamp value"),
        ("[" * 5000 + "]" * 5000, "nested more than 50 levels deep"),
    ],
)
def test_a_value_yaml_cannot_build_is_a_config_error_at_its_line(
    tmp_path: Path, value: str, message: str
) -> None:
    """PyYAML raised ValueError, KeyError, AttributeError or RecursionError for these."""
    path = write(tmp_path, GOOD.replace("min_gap: 48h", f"min_gap: {value}"))
    with pytest.raises(ConfigError) as caught:
        load_cadence_file(path)
    assert f"{path}:7:" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("min_gap: 48h", "min_gap: 99999999999999999999d", "policy.min_gap", "too long"),
        ("after: 2h", "after: 9999999999999w", "cadences[0].steps[0].after", "too long"),
        ("America/New_York", "A" * 5000, "policy.default_timezone", "IANA time zone"),
        ("template: t\n", f"template: {'t' * 300}\n", "cadences[0].steps[0].template", "100"),
        ("id: check-in", f"id: {'c' * 65}", "cadences[0].steps[1].id", "64"),
    ],
)
def test_values_past_the_limits_are_config_errors_naming_the_path(
    tmp_path: Path, old: str, new: str, where: str, message: str
) -> None:
    """These escaped as OverflowError or OSError (a file name too long) before."""
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_cadence_file(path)
    text = str(caught.value)
    assert str(path) in text and where in text and message in text


STEP_WINDOW = """\
policy: {default_timezone: UTC}
cadences:
  - id: c
    trigger: {stage: interview}
    steps:
      - id: thanks
        after: 2h
        within: 24h
        template: t
        transactional: %s
        send_window: {days: [mon, tue, wed, thu, fri, sat, sun], holidays: false}
"""


def test_a_transactional_step_may_have_its_own_send_window(tmp_path: Path) -> None:
    path = tmp_path / "cadences.yaml"
    path.write_text(STEP_WINDOW % "true")
    step = load_cadence_file(path, check_templates=False).cadence("c").steps[0]
    assert step.send_window is not None
    assert step.send_window.weekday_numbers == frozenset(range(7))
    assert step.send_window.start == time(8) and not step.send_window.holidays


def test_a_send_window_on_a_step_that_is_not_transactional_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cadences.yaml"
    path.write_text(STEP_WINDOW % "false")
    with pytest.raises(ConfigError) as caught:
        load_cadence_file(path, check_templates=False)
    message = str(caught.value)
    assert "cadences[0].steps[0]" in message
    assert "only for transactional steps" in message and "transactional: true" in message
    path.write_text(
        (STEP_WINDOW % "true").replace("holidays: false", "holidays: false, start: '20:00'")
    )
    with pytest.raises(ConfigError, match=r"cadences\[0\]\.steps\[0\]\.send_window"):
        load_cadence_file(path, check_templates=False)
