"""``when:`` on a cadence step: what the file may say, and every bad condition explained."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from outreach.cadence import load_cadence_file
from outreach.cadence_when import Engagement, When
from outreach.errors import ConfigError

FILE = """\
policy:
  channel_order: [email, sms]
cadences:
  - id: nurture
    trigger: {stage: applied}
    stop_on: [stage_change, opt_out]
    steps:
      - id: hello
        after: 0m
        channel: email
        template: t
      - id: check-in
        after: 3d
        from: previous
        channel: auto
        template: t
        when: WHEN
"""


def load(tmp_path: Path, when: str, text: str = FILE):
    path = tmp_path / "cadences.yaml"
    path.write_text(textwrap.dedent(text).replace("WHEN", when))
    return path, load_cadence_file(path, check_templates=False)


def problems(tmp_path: Path, when: str, text: str = FILE) -> tuple[Path, str]:
    path = tmp_path / "cadences.yaml"
    path.write_text(text.replace("WHEN", when))
    with pytest.raises(ConfigError) as caught:
        load_cadence_file(path, check_templates=False)
    return path, str(caught.value)


@pytest.mark.parametrize(
    ("written", "event", "no"),
    [
        ("{no: reply}", [], ["replied"]),
        ("{event: opened, no: reply}", ["opened"], ["replied"]),
        ("{event: [open, click]}", ["opened", "clicked"], []),
        ("{event: Clicked, no: [replied]}", ["clicked"], ["replied"]),
        ("{event: delivered, no: [opened, clicked]}", ["delivered"], ["opened", "clicked"]),
    ],
)
def test_conditions_parse_with_aliases_and_lists(tmp_path, written, event, no) -> None:
    _, config = load(tmp_path, written)
    when = config.cadence("nurture").steps[1].when
    assert when is not None and when.event == event and when.no == no
    assert config.when_steps == frozenset({("nurture", 1)})


def test_a_file_without_when_has_no_when_steps(tmp_path) -> None:
    _, config = load(tmp_path, "{no: reply}", FILE.replace("        when: WHEN\n", ""))
    assert config.when_steps == frozenset()
    assert config.cadence("nurture").steps[1].when is None


def test_describe_reads_as_the_condition() -> None:
    assert When.model_validate({"event": "opened", "no": "reply"}).describe() == (
        "opened and no reply"
    )
    assert When.model_validate({"event": ["opened", "clicked"]}).describe() == "opened or clicked"


@pytest.mark.parametrize(
    ("when", "fragment"),
    [
        ("{evnet: opened}", "unknown key 'evnet'; allowed here: event, no"),
        (
            "{event: bounced}",
            "'bounced' is not a signal; use delivered, opened, clicked or replied",
        ),
        ("{no: [reply, 3]}", "write a signal name or a list of them"),
        ("{}", "when needs event (what the candidate did), no (what they did not do)"),
        ("{event: opened, no: open}", "opened is in both event and no"),
        ("{event: [opened, opened]}", "event names a signal twice"),
        ("{event: clicked, no: opened}", "event clicked implies opened, which no forbids"),
        ("{event: replied, no: delivered}", "event replied implies delivered"),
        ("opened", "Input should be a valid dictionary"),
    ],
)
def test_bad_conditions_name_cadence_step_and_line(tmp_path, when, fragment) -> None:
    path, message = problems(tmp_path, when)
    line = FILE.splitlines().index("        when: WHEN") + 1
    assert f"{path}:{line}: cadences[0].steps[1].when" in message, message
    assert fragment in message, message


def test_when_on_the_first_step_is_refused(tmp_path) -> None:
    text = FILE.replace(
        "        template: t\n      - id: check-in",
        "        template: t\n        when: {no: reply}\n      - id: check-in",
        1,
    )
    path, message = problems(tmp_path, "{no: reply}", text)
    line = text.splitlines().index("        when: {no: reply}") + 1
    assert f"{path}:{line}: cadences[0].steps[0].when" in message
    assert "the first step has no earlier touch" in message


def test_event_replied_with_stop_on_reply_can_never_hold(tmp_path) -> None:
    text = FILE.replace("stop_on: [stage_change, opt_out]", "stop_on: [reply, opt_out]")
    _, message = problems(tmp_path, "{event: replied}", text)
    assert "cadences[0].steps[1].when" in message
    assert "stop_on reply ends the cadence at the reply" in message
    # No reply with stop_on reply only says again what stop_on does: allowed.
    load(tmp_path, "{no: reply}", text)


def test_opens_need_an_earlier_step_that_may_email(tmp_path) -> None:
    text = FILE.replace("        channel: email\n", "        channel: sms\n", 1)
    _, message = problems(tmp_path, "{event: opened}", text)
    assert "opened can never be known: no earlier step of this cadence may go by email" in message
    assert "earlier channels: sms" in message
    # A delivery report comes from SMS too; a reply from any channel.
    load(tmp_path, "{event: delivered, no: reply}", text)
    linkedin = FILE.replace("        channel: email\n", "        channel: linkedin\n", 1)
    _, message = problems(tmp_path, "{no: delivered}", linkedin)
    assert "delivered can never be known" in message and "email or sms" in message


def test_a_transactional_step_cannot_depend_on_engagement(tmp_path) -> None:
    text = FILE.replace("        when: WHEN\n", "        when: WHEN\n        transactional: true\n")
    _, message = problems(tmp_path, "{no: reply}", text)
    assert "cadences[0].steps[1]" in message and "remove when or transactional" in message


def test_config_check_reports_a_bad_when_and_exits_2(cli, tmp_path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "t.email.j2").write_text("Subject: Hi\n\nHello")
    (folder / "t.sms.j2").write_text("Hello")
    path = tmp_path / "cadences.yaml"
    path.write_text(FILE.replace("WHEN", "{event: opend}"))
    result = cli("config", "check", str(path))
    assert result.exit_code == 2
    assert "cadences[0].steps[1].when.event" in result.stderr
    assert "'opend' is not a signal" in result.stderr
    path.write_text(FILE.replace("WHEN", "{event: opened, no: reply}"))
    assert cli("config", "check", str(path)).exit_code == 0


# -- the condition itself --------------------------------------------------------------------


def engaged(*signals: str, channels: tuple[str, ...] = ("email",)) -> Engagement:
    engagement = Engagement(channels=set(channels))
    engagement.add_all(signals)
    return engagement


@pytest.mark.parametrize(
    ("condition", "signals", "channels", "verdict"),
    [
        ({"no": "reply"}, (), ("email",), None),
        ({"no": "reply"}, ("replied",), ("email",), "replied"),
        ({"no": "reply"}, (), (), None),  # nothing sent: nothing answered either
        ({"event": "opened"}, ("opened",), ("email",), None),
        ({"event": "opened"}, (), ("email",), "not opened"),
        ({"event": "opened"}, ("clicked",), ("email",), None),  # a click implies an open
        ({"event": "opened"}, ("delivered",), ("email",), "not opened"),
        ({"event": "opened"}, (), ("sms",), "cannot tell whether opened: no email touch"),
        ({"no": "opened"}, (), ("sms",), "cannot tell whether opened"),
        ({"no": "opened"}, (), ("email",), None),
        ({"event": "opened", "no": "reply"}, ("opened",), ("email",), None),
        ({"event": "opened", "no": "reply"}, ("opened", "replied"), ("email",), "replied"),
        ({"event": "opened", "no": "reply"}, (), ("email",), "not opened"),
        ({"event": "clicked"}, ("opened",), ("email",), "not clicked"),
        ({"event": ["opened", "clicked"]}, ("clicked",), ("email",), None),
        ({"event": "delivered"}, ("opened",), ("email",), None),
        ({"event": "delivered"}, (), ("sms",), "not delivered"),
        ({"event": "delivered"}, (), (), "cannot tell whether delivered: no email or sms"),
        ({"no": "delivered"}, (), ("email",), None),
    ],
)
def test_each_condition_against_what_was_seen(condition, signals, channels, verdict) -> None:
    found = When.model_validate(condition).check(engaged(*signals, channels=channels))
    if verdict is None:
        assert found is None
    else:
        assert found is not None and found.startswith(verdict), found
