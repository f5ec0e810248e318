"""What a template reads of its variables, and the fast paths built on it: a candidate with
only the fields a template reads renders the same text and the same strict errors as the
whole candidate; a missing item under ``default``/``defined`` answers as the sandbox does,
with autoescape on or off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment
from test_templates_fast import CONFIG, SHIPPED, people

from outreach.engine.route import build_context
from outreach.template_reads import EVERYTHING
from outreach.templates import (
    TemplateRenderError,
    TemplateStore,
    Vars,
    _Sandbox,
    _StrictUndefined,
)


def reads_of(tmp_path: Path, source: str, name: str = "candidate") -> frozenset[str] | None:
    (tmp_path / "t.sms.j2").write_text(source)
    (tmp_path / "other.sms.j2").write_text("{{ candidate.first_name }}")
    return TemplateStore(tmp_path).reads("t", "sms").of(name)


def test_the_shipped_templates_read_what_they_show() -> None:
    store = TemplateStore(CONFIG.template_dir)
    checking_in = store.reads("checking_in", "email")
    assert checking_in.of("candidate") == {"first_name", "stage"}
    assert checking_in.of("touch") == frozenset()  # never mentioned: nothing read
    assert store.reads("feedback_request", "email").of("touch") == {"rating_urls"}
    assert store.reads("application_declined", "task").of("candidate") == {
        "first_name",
        "last_name",
        "email",
        "phone",
        "linkedin_url",
    }


def test_attribute_reads_are_gathered_through_expressions_and_blocks(tmp_path: Path) -> None:
    source = (
        "{% if candidate.stage == 'x' %}{{ candidate.first_name | upper }}{% endif %}"
        "{% for t in candidate.tags %}{{ t }}{% endfor %}{{ candidate.custom.highlight }}"
        "{% macro m() %}{{ candidate.last_name }}{% endmacro %}{{ m() }}"
    )
    assert reads_of(tmp_path, source) == {"stage", "first_name", "tags", "custom", "last_name"}


@pytest.mark.parametrize(
    "source",
    [
        "{{ candidate['first_name'] }}",
        "{{ candidate.items() | list }}",
        "{{ candidate.keys }}",
        "{{ candidate.label }}",
        "{{ candidate | tojson }}",
        "{{ candidate }}",
        "{{ candidate.first_name }}{% set candidate = job %}{{ candidate.title }}",
        "{% for candidate in [job] %}{{ candidate.title }}{% endfor %}",
        "{% macro m(candidate) %}{{ candidate.x }}{% endmacro %}{{ m(job) }}",
        "{% set ns = namespace() %}{% set candidate.x = 1 %}",
        "{{ [candidate][0].first_name }}",
        "{% with candidate = job %}{{ candidate.title }}{% endwith %}",
    ],
)
def test_any_other_use_makes_the_variable_opaque(tmp_path: Path, source: str) -> None:
    assert reads_of(tmp_path, source) is None


def test_a_template_that_uses_another_reads_everything(tmp_path: Path) -> None:
    assert reads_of(tmp_path, "{% include 'other.sms.j2' %}") is None
    assert reads_of(tmp_path, "{{ job.title }}{% include 'other.sms.j2' %}", "job") is None


def test_a_template_that_does_not_load_reads_everything(tmp_path: Path) -> None:
    (tmp_path / "bad.sms.j2").write_text("{{ candidate.first_name ")
    store = TemplateStore(tmp_path)
    assert store.reads("bad", "sms") is EVERYTHING
    assert store.reads("absent", "sms") is EVERYTHING
    with pytest.raises(TemplateRenderError, match="syntax error"):
        store.render("bad", "sms", {})


def render_both(store: TemplateStore, name: str, kind: str, person: Any, record: Any) -> tuple:
    """The template rendered with the whole candidate and with only the fields it reads:
    each the message or the error's reason and line."""
    fields = store.reads(name, kind).of("candidate")
    out = []
    for candidate_fields in (None, fields):
        context = build_context(
            person,
            record,
            CONFIG,
            cadence_id="c",
            step_id="s",
            variant="a",
            rating_urls=["https://x.example/r/t/1"] * 5,
            candidate_fields=candidate_fields,
        )
        try:
            message = store.render(name, kind, context)
            out.append((message.subject, message.title, message.body))
        except TemplateRenderError as exc:
            out.append(("error", exc.reason, exc.line))
    return tuple(out)


@pytest.mark.parametrize("filename", SHIPPED)
def test_only_the_fields_read_render_as_the_whole_candidate(filename: str) -> None:
    name, kind, _ = filename.split(".")
    store = TemplateStore(CONFIG.template_dir)
    assert store.reads(name, kind).of("candidate") is not None
    for person, record in people(120, seed=3):
        whole, fields_only = render_both(store, name, kind, person, record)
        assert fields_only == whole


@pytest.mark.parametrize(
    "source",
    [
        "{{ candidate.last_name }}",  # missing in some records: the strict error
        "{{ candidate.frist_name }}",  # no such field: the strict error, always
        "{{ candidate.email }} {{ candidate.phone }} {{ candidate.linkedin_url }}",
        "{{ candidate.tags | join(',') }} {{ candidate.custom.highlight }}",
        "{{ candidate.custom.nope }}",
        "{{ candidate.source }}/{{ candidate.stage | default('?') }}",
    ],
)
def test_strict_errors_are_the_same_with_only_the_fields_read(tmp_path: Path, source: str) -> None:
    (tmp_path / "t.sms.j2").write_text(source)
    store = TemplateStore(tmp_path)
    errors = 0
    for person, record in people(80, seed=5):
        whole, fields_only = render_both(store, "t", "sms", person, record)
        assert fields_only == whole
        errors += whole[0] == "error"
    assert errors  # every template here fails strictly for some people
    if "frist" in source:
        assert whole[1] == "variable 'candidate.frist_name' is undefined"


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize(
    "source",
    [
        "{{ job.nope | default('<b>x</b>') }}|{{ job.title | default('y') }}",
        "{% if job.nope is defined %}a{% else %}<i>b</i>{% endif %}{{ job.title is defined }}",
        "{{ job.nope | default(company.name ~ '<&>') }}",
        "{{ candidate.first_name | default('there') }} {{ candidate.nope | default }}",
        "{{ candidate.custom.deep.er | default('none') }}",
        "{{ job.items | default('m') is defined }}",
    ],
)
def test_missing_items_under_default_and_defined_match_the_sandbox(
    source: str, autoescape: bool
) -> None:
    context = {
        "candidate": Vars("candidate", {"first_name": "<b>Ann</b>", "custom": Vars("c", {})}),
        "job": Vars("job", {"title": "R&D <Engineer>"}),
        "company": Vars("company", {"name": "North & wind"}),
    }
    options = {"undefined": _StrictUndefined, "autoescape": autoescape}
    ours = _Sandbox(**options).from_string(source)
    plain = SandboxedEnvironment(**options).from_string(source)
    try:
        expected = plain.render(context)
    except jinja2.UndefinedError as exc:
        with pytest.raises(jinja2.UndefinedError) as info:
            ours.render(context)
        assert info.value.message == exc.message
        return
    assert ours.render(context) == expected
    if autoescape and "<b>" in source:
        assert "&lt;b&gt;" in expected  # the default's markup was escaped, as ever
