"""The Handlebars variable extractor on the shapes SendGrid documents for dynamic templates."""

from __future__ import annotations

import pytest

from outreach.handlebars import HandlebarsError, Use, template_variables


def required(html: str, **parts: str) -> list[str]:
    return [u.path for u in template_variables({"html_content": html, **parts}).required]


def optional(html: str) -> list[str]:
    return [u.path for u in template_variables({"html_content": html}).optional]


def test_basic_deep_and_triple_stash_replacements_are_required() -> None:
    html = "<p>Hello {{ firstName }}</p><p>{{user.profile.firstName}}</p><p>{{{bio}}}</p>"
    assert required(html) == ["firstName", "user.profile.firstName", "bio"]


def test_where_each_variable_is_first_used() -> None:
    found = template_variables(
        {
            "subject": "Your interview at {{company.name}}",
            "html_content": "<p>Hi {{candidate.first_name}},</p>\n<p>{{company.name}}\n{{job.title}}</p>",
            "plain_content": "Hi {{candidate.first_name}}",
        }
    )
    assert found.required == (
        Use("company.name", "subject", 1),
        Use("candidate.first_name", "html_content", 1),
        Use("job.title", "html_content", 3),
    )


def test_insert_with_a_default_is_not_missing() -> None:
    html = (
        '<p>Hello {{insert name "default=Customer"}}! Thank you for contacting us about '
        '{{insert businessName "your business"}}. {{insert city}}</p>'
    )
    assert required(html) == ["city"]
    assert sorted(optional(html)) == ["businessName", "name"]


def test_if_else_chain_conditions_are_optional() -> None:
    html = """
{{#if user.profile.male}}
   <p>Dear Sir</p>
{{else if user.profile.female}}
   <p>Dear Madame</p>
{{else}}
   <p>Dear Customer</p>
{{/if}}"""
    assert required(html) == []
    assert optional(html) == ["user.profile.male", "user.profile.female"]


def test_a_variable_guarded_by_itself_is_optional_others_stay_required() -> None:
    html = """
{{#if user.suspended}}
   <p>Warning! Your account is suspended, please call: {{@root.supportPhone}}</p>
{{/if}}
{{#if candidate.phone}}Call me back on {{candidate.phone}}.{{/if}}
{{#if job.title}}{{else}}{{job.title}}{{/if}}"""
    # supportPhone is printed when the account is suspended, whether or not it exists;
    # job.title in the else branch is printed exactly when it is falsy.
    assert required(html) == ["supportPhone", "job.title"]
    assert "candidate.phone" in optional(html)


def test_unless_guards_its_else_branch_and_and_guards_its_body() -> None:
    html = """
{{#unless user.active}}<p>Call {{@root.supportPhone}}</p>{{else}}Welcome back, {{user.active}}{{/unless}}
{{#and favoriteFood favoriteDrink}}{{favoriteFood}} and {{favoriteDrink}}{{/and}}
{{#or isRunner isCyclist}}{{isRunner}}{{/or}}"""
    assert required(html) == ["supportPhone", "isRunner"]


def test_each_items_are_local_root_and_parent_paths_are_data() -> None:
    html = """
<ol>
  {{#each user.orderHistory}}
   <li>{{@index}}: You ordered: {{this.item}} on: {{date}} {{this}} from {{@root.company.name}}
       for {{../candidate.first_name}}</li>
  {{else}}
   <li>No orders yet, {{candidate.first_name}}</li>
  {{/each}}
</ol>
{{#each candidate.tags as |tag position|}}{{tag}} {{position}}{{/each}}"""
    assert required(html) == ["company.name", "candidate.first_name"]
    assert sorted(optional(html)) == ["candidate.tags", "user.orderHistory"]


def test_nested_each_blocks_from_the_combined_examples() -> None:
    html = """
{{#each user.story}}
   {{#if this.male}}
      {{#if this.date}}<p>{{this.date}}</p>{{/if}}
   {{else if this.female}}
      <p>{{this.item}}</p>
   {{/if}}
{{/each}}
{{#if people}}<p>People:</p>{{#each people}}<p>{{this.name}}</p>{{/each}}{{/if}}"""
    assert required(html) == []
    assert sorted(optional(html)) == ["people", "user.story"]


def test_with_changes_the_context() -> None:
    html = "{{#with candidate}}Hi {{first_name}} {{#if last_name}}{{last_name}}{{/if}}{{/with}}"
    assert required(html) == ["candidate.first_name"]
    assert sorted(optional(html)) == ["candidate", "candidate.last_name"]


def test_comparison_helpers_and_length_are_conditions() -> None:
    html = """
{{#greaterThan scoreOne scoreTwo}}High score!{{else}}Close.{{/greaterThan}}
{{#lessThan scoreOne 10}}Low{{/lessThan}}
{{#equals candidate.stage "interview"}}See you soon{{/equals}}
{{#notEquals customerCode winningCode}}No luck{{/notEquals}}
{{#greaterThan (length cartItems) 0}}You have {{length cartItems}} items.{{/greaterThan}}"""
    assert required(html) == []
    assert sorted(optional(html)) == [
        "candidate.stage",
        "cartItems",
        "customerCode",
        "scoreOne",
        "scoreTwo",
        "winningCode",
    ]


def test_format_date_prints_its_arguments() -> None:
    html = '<p>Join us {{formatDate interview.at "MMMM DD, YYYY h:mm A" timezoneOffset}}</p>'
    assert required(html) == ["interview.at", "timezoneOffset"]


def test_comments_escapes_and_literals_print_no_data() -> None:
    html = """
{{!-- {{candidate.secret}} is never shown --}}
{{! a short note about {{ }}
\\{{not.a.variable}}
{{~ candidate.first_name ~}}
{{#if true}}{{/if}}"""
    assert required(html) == ["candidate.first_name"]


def test_a_section_on_a_value_scopes_to_it() -> None:
    html = "{{#recruiter}}{{name}}{{/recruiter}}{{^job}}No job{{/job}}"
    assert required(html) == ["recruiter.name"]
    assert sorted(optional(html)) == ["job", "recruiter"]


@pytest.mark.parametrize(
    ("html", "message"),
    [
        ("Hi {{candidate.first_name", "never closed"),
        ("{{#if a}}x", "{{#if}} is never closed"),
        ("{{#if a}}x{{/each}}", "{{/each}} closes {{#if}} opened on line 1"),
        ("x{{/if}}", "closes no open block"),
        ("\n\n{{else}}", "outside any block"),
        ("{{!-- open", "never closed"),
    ],
)
def test_broken_templates_are_errors_with_their_line(html: str, message: str) -> None:
    with pytest.raises(HandlebarsError) as info:
        template_variables({"html_content": html})
    assert message in str(info.value)
    assert info.value.part == "html_content"
    if html.startswith("\n\n"):
        assert info.value.line == 3


def test_missing_is_absent_or_none_but_not_an_empty_string() -> None:
    found = template_variables(
        {"html_content": "{{candidate.first_name}} {{job.title}} {{recruiter.name}} {{items.1}}"}
    )
    data = {
        "candidate": {"first_name": ""},
        "job": {"title": None},
        "recruiter": "not an object",
        "items": ["a"],
    }
    assert [u.path for u in found.missing(data)] == ["job.title", "recruiter.name", "items.1"]
    full = {
        "candidate": {"first_name": "Ann"},
        "job": {"title": "Engineer"},
        "recruiter": {"name": "Jo"},
        "items": ["a", "b"],
    }
    assert found.missing(full) == []
