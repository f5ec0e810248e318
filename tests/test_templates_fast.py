"""The fast render path gives the same text, the same errors and the same refusals as
Jinja's own sandbox rendering (``Template.render`` in a plain ``SandboxedEnvironment``)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment

from outreach.cadence import load_cadence_file
from outreach.engine.person_state import Contact, PersonState
from outreach.engine.route import _best_contacts, build_context
from outreach.paths import default_config_dir
from outreach.templates import (
    RenderedMessage,
    TemplateRenderError,
    TemplateStore,
    Vars,
    _StrictUndefined,
    sample_context,
)

CONFIG = load_cadence_file(default_config_dir() / "cadences.yaml")
SHIPPED = sorted(path.name for path in CONFIG.template_dir.glob("*.j2"))


def plain_jinja(directory: Path) -> SandboxedEnvironment:
    """The environment the store used before the fast path: Jinja's sandbox as it comes."""
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=_StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def plain_split(kind: str, text: str) -> tuple[str | None, str | None, str]:
    """Subject, title and body as the store split them before (the reference)."""
    text = text.strip("\n")
    if kind == "email":
        first, _, rest = text.partition("\n")
        return first[len("Subject:") :].strip(), None, rest.strip("\n").strip()
    if kind == "task":
        first, _, rest = text.partition("\n")
        if first.startswith("Title:"):
            return None, first[len("Title:") :].strip(), rest.strip()
        return None, None, text.strip()
    return None, None, text.strip()


def people(count: int, seed: int = 7) -> list[tuple[PersonState, dict[str, Any]]]:
    """People with every shape of record: fields missing or empty, custom fields, contacts."""
    rng = random.Random(seed)
    result = []
    for index in range(1, count + 1):

        def maybe(value: Any) -> Any:
            return rng.choice([value, value, None, ""])

        record = {
            "id": index,
            "first_name": maybe(rng.choice(["Ann", "Émile", "{{ 7*7 }}", "<b>Bo</b>"])),
            "last_name": maybe("Lee"),
            "source": maybe("greenhouse"),
            "stage": maybe(rng.choice(["applied", "screening", "interview", "offer"])),
            "job_title": maybe("Data Engineer"),
            "job_department": maybe("Data"),
            "recruiter_name": maybe("Jo Smith"),
            "recruiter_email": maybe("jo@example.com"),
            "recruiter_phone": maybe("+12125550187"),
            "tags": rng.choice([None, [], ["referral"]]),
            "custom": rng.choice(
                [None, {}, {"highlight": "your Spark work"}, {"highlight": "", "items": 3}]
            ),
        }
        contacts = [
            Contact(
                rng.randint(1, 5),
                rng.choice(["email", "phone", "linkedin", "x", "facebook"]),
                f"value-{index}-{n}",
                rng.random() < 0.8,
                "mobile",
                True,
                rng.random() < 0.2,
                None,
            )
            for n in range(rng.randint(0, 5))
        ]
        result.append((PersonState(index, False, [record], contacts), record))
    return result


def contexts() -> list[dict[str, Any]]:
    """Sample contexts of ``config check`` and built ones, with and without rating links."""
    built = [
        build_context(
            person,
            record,
            CONFIG,
            cadence_id="application-follow-up",
            step_id="check-in",
            variant="b",
            rating_urls=[f"https://x.example/r/t/{n}" for n in range(1, 6)] if i % 3 else None,
        )
        for i, (person, record) in enumerate(people(40))
    ]
    return [sample_context("Northwind"), sample_context("Northwind", None), *built]


@pytest.mark.parametrize("filename", SHIPPED)
def test_every_shipped_template_renders_byte_for_byte_as_plain_jinja(filename: str) -> None:
    name, kind, _ = filename.split(".")
    store = TemplateStore(CONFIG.template_dir)
    reference = plain_jinja(CONFIG.template_dir).get_template(filename)
    compiled = store._load(name, kind)
    rendered_some = 0
    for context in contexts():
        try:
            expected = reference.render(context)
        except jinja2.UndefinedError as exc:
            with pytest.raises(TemplateRenderError) as info:
                store.render(name, kind, context)
            assert info.value.reason == exc.message
            continue
        assert store._text(compiled, context) == expected
        message = store.render(name, kind, context)
        assert (message.subject, message.title, message.body) == plain_split(kind, expected)
        assert store.render_many(name, kind, [context]) == [message]
        rendered_some += 1
    assert rendered_some >= 10


@pytest.fixture
def tricky(tmp_path: Path) -> Path:
    templates = {
        "escape_class.sms.j2": "{{ candidate.__class__ }}",
        "escape_mro.sms.j2": "{{ candidate.__class__.__mro__ }}",
        "escape_globals.sms.j2": "{{ candidate.__init__.__globals__ }}",
        "escape_method.sms.j2": "{{ candidate.items.__self__ }}",
        "escape_dunder_key.sms.j2": "{{ candidate.custom.__class__ }}",
        "escape_format.sms.j2": "{{ '{0.__class__}'.format(candidate) }}",
        "attributes.sms.j2": (
            "{{ candidate.label }}|{{ candidate.custom.items is defined }}|"
            "{{ candidate.custom['items'] }}|{{ candidate.get('first_name') }}"
        ),
        "undefined.sms.j2": "Hi {{ candidate.first_name }},\n{{ candidate.custom.note }}\n",
        "undefined_nested.sms.j2": "{{ job.title.upper() }}",
        "loop.sms.j2": "{% for u in touch.rating_urls %}{{ loop.index }}={{ u }} {% endfor %}",
    }
    for filename, source in templates.items():
        (tmp_path / filename).write_text(source)
    return tmp_path


def tricky_context(**custom: Any) -> dict[str, Any]:
    return {
        "candidate": Vars(
            "candidate", {"first_name": "Ann", "custom": Vars("candidate.custom", custom)}
        ),
        "job": Vars("job", {}),
        "touch": Vars("touch", {"rating_urls": ["a", "b"]}),
    }


@pytest.mark.parametrize(
    "name",
    [
        "escape_class",
        "escape_mro",
        "escape_globals",
        "escape_method",
        "escape_dunder_key",
        "escape_format",
    ],
)
def test_the_fast_path_still_refuses_what_the_sandbox_refuses(tricky: Path, name: str) -> None:
    # A CRM custom field named like an attribute must not open a way round the sandbox.
    context = tricky_context(__class__="data", __globals__="data")
    with pytest.raises(jinja2.TemplateError):
        plain_jinja(tricky).get_template(f"{name}.sms.j2").render(context)
    with pytest.raises(TemplateRenderError):
        TemplateStore(tricky).render(name, "sms", context)


def test_attributes_and_items_resolve_as_in_the_sandbox(tricky: Path) -> None:
    context = tricky_context(items="an item")
    expected = plain_jinja(tricky).get_template("attributes.sms.j2").render(context)
    assert TemplateStore(tricky).render("attributes", "sms", context).body == expected
    # the attribute wins over a key of the same name, as in Jinja: ``items`` is the method
    assert expected.startswith("candidate|True|an item|Ann")


def test_loops_render_as_in_the_sandbox(tricky: Path) -> None:
    context = tricky_context()
    expected = plain_jinja(tricky).get_template("loop.sms.j2").render(context)
    assert TemplateStore(tricky).render("loop", "sms", context).body == expected.strip()


@pytest.mark.parametrize(
    ("name", "reason", "line"),
    [
        ("undefined", "variable 'candidate.custom.note' is undefined", 2),
        ("undefined_nested", "'job.title' is undefined", 1),
    ],
)
def test_undefined_still_raises_with_its_name_and_line(
    tricky: Path, name: str, reason: str, line: int
) -> None:
    store = TemplateStore(tricky)
    for render in (
        lambda: store.render(name, "sms", tricky_context()),
        lambda: store.render_for_step(name, "sms", tricky_context(), None),
    ):
        with pytest.raises(TemplateRenderError) as info:
            render()
        assert reason in info.value.reason
        assert info.value.line == line
        assert info.value.template == f"{name}.sms.j2"


def test_render_many_keeps_each_error_to_its_item(tricky: Path) -> None:
    store = TemplateStore(tricky)
    results = store.render_many(
        "undefined", "sms", [tricky_context(note="x"), tricky_context(), tricky_context(note="y")]
    )
    assert [r.body if not isinstance(r, Exception) else "error" for r in results] == [
        "Hi Ann,\nx",
        "error",
        "Hi Ann,\ny",
    ]
    assert isinstance(results[1], TemplateRenderError) and results[1].line == 2
    missing = store.render_many("absent", "sms", [tricky_context(), tricky_context()])
    assert all(isinstance(r, TemplateRenderError) and "not found" in r.reason for r in missing)


def test_an_edited_template_is_compiled_again_by_the_next_store(tmp_path: Path) -> None:
    path = tmp_path / "hello.sms.j2"
    path.write_text("Hello {{ candidate.first_name }}")
    assert TemplateStore(tmp_path).render("hello", "sms", tricky_context()).body == "Hello Ann"
    assert TemplateStore(tmp_path).render("hello", "sms", tricky_context()).body == "Hello Ann"
    # same size, and written at once: neither length nor a coarse mtime tells it changed
    path.write_text("Howdy {{ candidate.first_name }}")
    assert TemplateStore(tmp_path).render("hello", "sms", tricky_context()).body == "Howdy Ann"


def test_best_contacts_pick_what_person_contact_picks() -> None:
    for person, _record in people(300, seed=11):
        best = _best_contacts(person.contacts)
        for kind in ("email", "phone", "linkedin", "x", "facebook"):
            assert best.get(kind) == person.contact(kind)


def test_vars_leave_out_none_and_empty_strings_only() -> None:
    values = {"a": None, "b": "", "c": 0, "d": False, "e": [], "f": "x", "g": {}}
    assert dict(Vars("v", values)) == {"c": 0, "d": False, "e": [], "f": "x", "g": {}}
    assert dict(Vars("v", {"f": "x"})) == {"f": "x"}
    assert Vars("v", None) == {} and Vars("v").label == "v"
    hinted = Vars("v", {}, hints={"a": "why"})
    assert hinted.hints == {"a": "why"} and Vars("v").hints == {}


def test_the_render_context_has_the_fields_and_values_jinja_gives_it() -> None:
    store = TemplateStore(CONFIG.template_dir)
    variables = sample_context("Northwind")
    for name, kind in (("checking_in", "email"), ("feedback_request", "email")):
        compiled = store._load(name, kind)
        ours = vars(compiled.context(store.env, variables))
        jinjas = vars(compiled.template.new_context(variables))
        assert ours.keys() == jinjas.keys()
        for field in ours.keys() - {"eval_ctx", "environment", "parent"}:
            assert ours[field] == jinjas[field], field
        # A template that reads no global resolves its names in the variables themselves.
        assert compiled.variables_only
        assert ours["parent"] is variables
        assert {k: jinjas["parent"][k] for k in variables} == variables
        assert ours["environment"] is jinjas["environment"]
        assert vars(ours["eval_ctx"]) == vars(jinjas["eval_ctx"])
        assert type(ours["eval_ctx"]) is type(jinjas["eval_ctx"])
        # fresh per render: a template's {% set %} must not reach the next one
        again = vars(compiled.context(store.env, variables))
        for field in ("vars", "exported_vars", "eval_ctx"):
            assert again[field] is not ours[field]


def test_templates_that_read_globals_or_other_templates_get_them(tmp_path: Path) -> None:
    (tmp_path / "globals.sms.j2").write_text(
        "{% for i in range(3) %}{{ i }}{% endfor %}{% set ns = namespace(n=job.title) %}"
        "{{ ns.n }}{% include 'part.sms.j2' %}"
    )
    (tmp_path / "part.sms.j2").write_text("{{ range(2) | list }} {{ job.title }}")
    (tmp_path / "plain.sms.j2").write_text("{{ job.title }}")
    context = {"job": Vars("job", {"title": "Engineer"})}
    store = TemplateStore(tmp_path)
    for name in ("globals", "part", "plain"):
        expected = plain_jinja(tmp_path).get_template(f"{name}.sms.j2").render(context)
        assert store.render(name, "sms", context).body == expected.strip()
    assert not store._load("globals", "sms").variables_only
    assert not store._load("part", "sms").variables_only
    assert store._load("plain", "sms").variables_only
    with_parent = vars(store._load("globals", "sms").context(store.env, context))
    assert with_parent["parent"]["range"] is store.env.globals["range"]
    assert with_parent["parent"]["job"] is context["job"]


def test_a_message_made_fast_is_the_frozen_dataclass_it_always_was() -> None:
    store = TemplateStore(CONFIG.template_dir)
    message = store.render("checking_in", "email", sample_context("Northwind"))
    assert type(message) is RenderedMessage
    assert message == RenderedMessage(
        message.template, "email", message.body, message.subject, None, None
    )
    assert hash(message) == hash(
        RenderedMessage(message.template, "email", message.body, message.subject)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.body = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    "source",
    [
        "{{ job.update(title='changed') }}",
        "{{ job.pop('title') }}",
        "{{ job.setdefault('team', 'x') }}",
        "{{ job.clear() }}",
        "{{ company.popitem() }}",
        "{{ candidate.custom.update(note='x') }}",
    ],
)
def test_templates_cannot_change_their_variables(tmp_path: Path, source: str) -> None:
    # Jobs, recruiters and the company are shared by every touch that has them: a
    # template that could change them would change the next person's message.
    (tmp_path / "mutate.sms.j2").write_text(source)
    person, record = people(1)[0]
    record.update(job_title="Data Engineer", first_name="Ann")
    first = build_context(person, record, CONFIG, cadence_id="c", step_id="s", variant="a")
    with pytest.raises(TemplateRenderError, match="unsafe"):
        TemplateStore(tmp_path).render("mutate", "sms", first)
    second = build_context(person, record, CONFIG, cadence_id="c", step_id="s", variant="a")
    assert second["job"] is first["job"] and second["job"]["title"] == "Data Engineer"
    assert second["company"] == {"name": CONFIG.company.name}


def test_shared_variables_are_only_text(tmp_path: Path) -> None:
    person, record = people(1)[0]
    record.update(job_title="Data Engineer", job_department=None, recruiter_name=None)
    one = build_context(person, record, CONFIG, cadence_id="c", step_id="s", variant="a")
    two = build_context(person, dict(record), CONFIG, cadence_id="c", step_id="t", variant="b")
    assert one["job"] is two["job"] and one["job"] == {"title": "Data Engineer"}
    assert one["touch"] is not two["touch"] and one["candidate"] is not two["candidate"]
    odd = dict(record, job_title=1)
    other = dict(record, job_title=True)
    a = build_context(person, odd, CONFIG, cadence_id="c", step_id="s", variant="a")
    b = build_context(person, other, CONFIG, cadence_id="c", step_id="s", variant="a")
    assert a["job"]["title"] is 1 and b["job"]["title"] is True  # noqa: F632


@pytest.mark.parametrize(
    "source",
    [
        "{{ job.title | default(company.nme ~ 'x') }}",
        "{{ job.nope | default(company.name ~ '!') }}",
        "{{ job.nope | default(job.nope2 | default('deep')) }}",
        "{{ (job.title ~ '-' ~ candidate.first_name) | default('x') }}",
        "{{ job.title | default }}|{{ job.nope | default }}|{{ job.empty | default('e', true) }}",
        "{{ candidate.tags | join(',') }} {{ 'x' ~ 1 ~ none ~ job.title }}",
        "{% if job.nope is defined %}a{% else %}b{% endif %}{{ job is defined }}",
        "{{ job.title is defined and job.title ~ '!' }}{{ job.nope is defined }}",
        "{{ job.nope ~ 'x' }}",
        "{{ candidate.custom.deep.er | default('none') }}",
        "{% set t = job.title %}{{ t ~ t | default('x') }}{{ job['title'] }}",
    ],
)
def test_inline_expressions_match_plain_jinja(tmp_path: Path, source: str) -> None:
    (tmp_path / "expr.sms.j2").write_text(source)
    context = {
        "candidate": Vars(
            "candidate",
            {"first_name": "Ann", "tags": ["a", "b"], "custom": Vars("candidate.custom", {})},
        ),
        "job": Vars("job", {"title": "Engineer"}),
        "company": Vars("company", {"name": "Northwind"}),
    }
    try:
        expected = plain_jinja(tmp_path).get_template("expr.sms.j2").render(context)
    except jinja2.TemplateError as exc:
        with pytest.raises(TemplateRenderError) as info:
            TemplateStore(tmp_path).render("expr", "sms", context)
        assert info.value.reason == (exc.message if hasattr(exc, "message") else str(exc))
        return
    assert TemplateStore(tmp_path).render("expr", "sms", context).body == expected.strip()
