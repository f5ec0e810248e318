"""The shipped feedback and post-hire templates carry one-click rating links."""

from __future__ import annotations

import re

import pytest

from outreach.cadence import load_cadence_file
from outreach.paths import default_config_dir
from outreach.templates import TemplateRenderError, TemplateStore, check_templates, sample_context

PUBLIC = "https://hooks.example.org/outreach"
LINK = re.compile(r"https://hooks\.example\.org/outreach/r/S{22}/([1-5])")


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture(scope="module")
def store(config) -> TemplateStore:
    return TemplateStore(config.template_dir)


@pytest.mark.parametrize("name", ["feedback_request", "onboarding_info"])
def test_feedback_and_post_hire_mail_carry_five_links(store, name) -> None:
    message = store.render(name, "email", sample_context("Acme", PUBLIC))
    assert LINK.findall(message.body) == ["1", "2", "3", "4", "5"]
    assert "{{" not in message.body and "}}" not in message.body


def test_the_feedback_request_is_not_rendered_without_a_public_url(store) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        store.render("feedback_request", "email", sample_context("Acme", None))
    assert "touch.rating_urls" in str(caught.value)
    assert "OUTREACH_PUBLIC_URL" in str(caught.value)


def test_the_welcome_mail_goes_out_without_links_when_no_public_url(store) -> None:
    """Onboarding is transactional: it is not held back for want of a survey link."""
    message = store.render("onboarding_info", "email", sample_context("Acme", None))
    assert "/r/" not in message.body and "rate" not in message.body.lower()
    assert message.body.rstrip().endswith("+12125550187")


def test_the_feedback_step_uses_a_template_with_links(config) -> None:
    steps = {(c.id, s.id): s for c in config.cadences for s in c.steps}
    assert "feedback_request" in steps["hired-onboarding", "feedback"].templates
    assert "onboarding_info" in steps["hired-onboarding", "onboarding"].templates


def test_config_check_warns_which_steps_need_the_public_url(config) -> None:
    report = check_templates(config, None)
    assert report.errors == []
    (warning,) = [w for w in report.warnings if "rating_urls" in w]
    assert "feedback_request.email.j2" in warning and "OUTREACH_PUBLIC_URL" in warning
    assert "hired-onboarding.feedback" in warning
    assert not any("onboarding_info" in w for w in report.warnings)
    with_url = check_templates(config, PUBLIC)
    assert with_url.errors == [] and not any("rating_urls" in w for w in with_url.warnings)


def test_config_check_reports_a_misspelt_rating_variable(tmp_path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "rate.email.j2").write_text("Subject: Hi\n\n{{ touch.rating_url[0] }}")
    (tmp_path / "cadences.yaml").write_text(
        "cadences:\n  - id: c\n    trigger: {stage: hired}\n    steps:\n"
        "      - {id: s, after: 0m, channel: email, template: rate}\n"
    )
    report = check_templates(load_cadence_file(tmp_path / "cadences.yaml"), PUBLIC)
    assert len(report.errors) == 1 and "touch.rating_url'" in report.errors[0]


def test_cli_config_check_names_the_missing_public_url(cli) -> None:
    config = str(default_config_dir() / "cadences.yaml")
    without = cli("config", "check", config)
    assert without.exit_code == 0, without.output
    assert "OUTREACH_PUBLIC_URL" in without.output and "hired-onboarding.feedback" in without.output
    with_url = cli("config", "check", config, env={"OUTREACH_PUBLIC_URL": PUBLIC})
    assert with_url.exit_code == 0 and "rating_urls" not in with_url.output


def test_cli_run_names_the_steps_it_skips_without_a_public_url(cli) -> None:
    without = cli("run", "--dry-run", "--now", "2026-11-25T15:00:00Z")
    assert without.exit_code == 0, without.output
    assert "hired-onboarding.feedback use touch.rating_urls" in without.output
    assert "OUTREACH_PUBLIC_URL is not set" in without.output
    with_url = cli(
        "run", "--dry-run", "--now", "2026-11-25T15:00:00Z", env={"OUTREACH_PUBLIC_URL": PUBLIC}
    )
    assert with_url.exit_code == 0 and "rating_urls" not in with_url.output
