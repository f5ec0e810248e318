"""Templates: strict rendering that names the missing variable; CRM values stay data."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.cadence import load_cadence_file
from outreach.paths import default_config_dir
from outreach.segments import count_segments
from outreach.templates import (
    TemplateRenderError,
    TemplateStore,
    Vars,
    check_templates,
    sample_context,
)


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    (tmp_path / "hello.email.j2").write_text(
        "Subject: Hi {{ candidate.first_name }}\n\nHello {{ candidate.first_name }},\n"
        "{{ candidate.custom.note | default('no note') }}\n"
    )
    (tmp_path / "typo.email.j2").write_text("Subject: Hi\n\nline two\n{{ candidate.frist_name }}\n")
    (tmp_path / "nosubject.email.j2").write_text("Hello\n")
    (tmp_path / "broken.sms.j2").write_text("Hi {{ candidate.first_name \n")
    (tmp_path / "connect.task.j2").write_text(
        "Title: Connect with {{ candidate.first_name }}\n\nSay hi"
    )
    (tmp_path / "escape.sms.j2").write_text("{{ candidate.first_name }} {{ candidate.__class__ }}")
    return TemplateStore(tmp_path)


def context(**candidate) -> dict:
    return {"candidate": Vars("candidate", {"custom": Vars("candidate.custom", {}), **candidate})}


def test_email_renders_subject_and_body(store: TemplateStore) -> None:
    message = store.render("hello", "email", context(first_name="Ann"))
    assert message.subject == "Hi Ann"
    assert message.body == "Hello Ann,\nno note"


def test_missing_variable_is_named_with_its_line(store: TemplateStore) -> None:
    with pytest.raises(TemplateRenderError) as info:
        store.render("typo", "email", context(first_name="Ann"))
    assert "candidate.frist_name" in info.value.reason
    assert info.value.line == 4
    assert info.value.template == "typo.email.j2"


def test_none_and_empty_values_are_missing_not_the_text_none(store: TemplateStore) -> None:
    with pytest.raises(TemplateRenderError, match=r"candidate\.first_name"):
        store.render("hello", "email", context(first_name=None))
    with pytest.raises(TemplateRenderError, match=r"candidate\.first_name"):
        store.render("hello", "email", context(first_name=""))


def test_crm_values_are_data_not_template_code(store: TemplateStore) -> None:
    message = store.render("hello", "email", context(first_name="{{ 7*7 }}{% raw %}"))
    assert message.subject == "Hi {{ 7*7 }}{% raw %}"


def test_sandbox_blocks_attribute_escapes(store: TemplateStore) -> None:
    with pytest.raises(TemplateRenderError):
        store.render("escape", "sms", context(first_name="Ann"))


def test_email_without_subject_and_syntax_errors(store: TemplateStore) -> None:
    with pytest.raises(TemplateRenderError, match="Subject"):
        store.render("nosubject", "email", context(first_name="Ann"))
    with pytest.raises(TemplateRenderError, match="syntax error") as info:
        store.render("broken", "sms", context(first_name="Ann"))
    assert info.value.line == 1
    with pytest.raises(TemplateRenderError, match="not found"):
        store.render("absent", "sms", context())


def test_a_template_not_in_utf8_or_recursing_is_an_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "latin.sms.j2").write_bytes("Caf\xe9 {{ candidate.first_name }}".encode("latin-1"))
    (tmp_path / "loop.sms.j2").write_text(
        "{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }} {{ candidate.first_name }}"
    )
    store = TemplateStore(tmp_path)
    with pytest.raises(TemplateRenderError, match="not UTF-8") as info:
        store.render("latin", "sms", context(first_name="Ann"))
    assert info.value.template == "latin.sms.j2"
    with pytest.raises(TemplateRenderError, match="recursion too deep"):
        store.render("loop", "sms", context(first_name="Ann"))


def test_config_check_names_a_template_that_is_not_utf8(cli, tmp_path: Path) -> None:
    source = default_config_dir()
    (tmp_path / "templates").mkdir()
    for path in (source / "templates").glob("*.j2"):
        (tmp_path / "templates" / path.name).write_text(path.read_text())
    (tmp_path / "templates" / "status_update.email.j2").write_bytes(b"Subject: x\n\nCaf\xe9\n")
    (tmp_path / "cadences.yaml").write_text((source / "cadences.yaml").read_text())
    result = cli("config", "check", str(tmp_path / "cadences.yaml"))
    assert result.exit_code == 2, result.output
    assert "status_update.email.j2: not UTF-8 text" in result.stderr


def test_task_title(store: TemplateStore) -> None:
    message = store.render("connect", "task", context(first_name="Ann"))
    assert message.title == "Connect with Ann" and message.body == "Say hi"


def test_every_default_template_renders_with_sparse_data() -> None:
    config = load_cadence_file(default_config_dir() / "cadences.yaml")
    report = check_templates(config)
    assert report.errors == [] and report.warnings == [] and report.checked >= 20
    store = TemplateStore(config.template_dir)
    sparse = {
        "candidate": Vars("candidate", {"custom": Vars("candidate.custom", {})}),
        "job": Vars("job", {}),
        "recruiter": Vars("recruiter", {}),
        "company": Vars("company", {"name": "Acme"}),
        # rating links come from the engine (OUTREACH_PUBLIC_URL), not from the CRM
        "touch": Vars(
            "touch",
            {"cadence": "c", "step": "s", "variant": "a", "rating_urls": ["https://x/r/t/1"] * 5},
        ),
    }
    for path in sorted(config.template_dir.glob("*.j2")):
        name, kind, _ = path.name.split(".")
        message = store.render(name, kind, sparse)
        assert "None" not in message.body
        if kind == "sms":
            assert count_segments(message.body).segments == 1


def test_config_check_warns_on_a_long_sms(cli, tmp_path: Path) -> None:
    source = default_config_dir()
    (tmp_path / "templates").mkdir()
    for path in (source / "templates").glob("*.j2"):
        (tmp_path / "templates" / path.name).write_text(path.read_text())
    (tmp_path / "templates" / "checking_in.sms.j2").write_text(
        "Hi {{ candidate.first_name }} " + "ê" * 80
    )
    (tmp_path / "cadences.yaml").write_text((source / "cadences.yaml").read_text())
    result = cli("config", "check", str(tmp_path / "cadences.yaml"))
    assert result.exit_code == 0
    assert "checking_in.sms.j2: SMS body takes 2 segments" in result.stderr


def test_config_check_reports_template_errors(cli, tmp_path: Path) -> None:
    source = default_config_dir()
    (tmp_path / "templates").mkdir()
    for path in (source / "templates").glob("*.j2"):
        (tmp_path / "templates" / path.name).write_text(path.read_text())
    (tmp_path / "templates" / "status_update.email.j2").write_text("Subject: x\n\n{{ job.titel }}")
    (tmp_path / "cadences.yaml").write_text((source / "cadences.yaml").read_text())
    result = cli("config", "check", str(tmp_path / "cadences.yaml"))
    assert result.exit_code == 2
    assert "status_update.email.j2:3: variable 'job.titel' is undefined" in result.stderr


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("", "GSM-7", 0),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 153 * 2, "GSM-7", 2),
        ("a" * 159 + "€", "GSM-7", 2),  # the euro sign takes two septets
        ("é" * 10, "GSM-7", 1),  # é is in the GSM-7 basic table
        ("ê" * 70, "UCS-2", 1),
        ("ê" * 71, "UCS-2", 2),
        ("😀" * 35, "UCS-2", 1),  # surrogate pairs count twice
        ("😀" * 36, "UCS-2", 2),
    ],
)
def test_segments(body: str, encoding: str, segments: int) -> None:
    info = count_segments(body)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_sample_context_is_complete() -> None:
    ctx = sample_context("Acme")
    assert ctx["company"]["name"] == "Acme"
    assert ctx["candidate"]["custom"]["anything"] == "sample anything"
