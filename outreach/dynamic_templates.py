"""Strict SendGrid dynamic templates: no touch leaves with a variable its data lacks.

A step with ``sendgrid_template_id`` is rendered by SendGrid, from the template's active
version and the touch's ``dynamic_template_data``; a variable the data does not provide
renders blank there. So the engine reads each template's active version (``GET
/v3/templates/{id}``, through the email channel), finds the variables it needs
(:mod:`outreach.handlebars`) and:

* ``outreach config check`` lists every required variable the engine's data never
  provides (:func:`check_dynamic_templates`);
* at send time a touch whose data lacks a required variable is not sent: it is skipped
  like a local template error, with the template, the variable and where it is used in
  the ledger (:meth:`DynamicTemplateCheck.check` raises
  :class:`outreach.templates.TemplateRenderError`);
* a template that cannot be read (SendGrid unreachable, key refused, unknown id) sends
  nothing unchecked: :class:`TemplateUnavailable`, and the tick defers the touch.

Each template is read once per run, when the first touch that uses it is rendered (a
:class:`DynamicTemplateCheck` lives for one tick, so an edit in SendGrid is seen by the next
run); a failure is remembered for the run too, so an outage costs one read per template,
not one per touch. The read happens inside the tick's claim transaction: the channel keeps
it short (two attempts, no long waits), and a tick with nothing due reads nothing.

Example::

    check = DynamicTemplateCheck(channel.read_template)
    check.check("d-…", {"candidate": {"first_name": "Ann"}})   # raises when one is missing
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from outreach.errors import ConfigError, OutreachError
from outreach.handlebars import (
    HandlebarsError,
    TemplateVariables,
    Use,
    provides,
    template_variables,
)
from outreach.templates import TemplateRenderError, plain_context, sample_context

__all__ = [
    "DynamicTemplate",
    "DynamicTemplateCheck",
    "DynamicTemplateReport",
    "TemplateUnavailable",
    "check_dynamic_templates",
    "dynamic_check_for",
    "template_ids",
]

log = logging.getLogger("outreach.dynamic_templates")

#: data the engine fills from the CRM record's own custom fields: any name may be there
_OPEN_ENDED = ("candidate.custom",)


@dataclass(frozen=True)
class DynamicTemplate:
    """The active version of a SendGrid dynamic template: its Handlebars parts."""

    template_id: str
    name: str
    version: str
    subject: str | None = None
    html_content: str | None = None
    plain_content: str | None = None

    def variables(self) -> TemplateVariables:
        """The variables of the subject, HTML and plain text (raises ``HandlebarsError``)."""
        return template_variables(
            {
                "subject": self.subject,
                "html_content": self.html_content,
                "plain_content": self.plain_content,
            }
        )

    def describe(self) -> str:
        """``'Interview thanks', active version 'v2'`` for messages."""
        return f"{self.name!r}, active version {self.version!r}"


class TemplateUnavailable(TemplateRenderError):
    """A dynamic template could not be read, so a touch cannot be checked: not sent now.

    It is a :class:`TemplateRenderError`, so a caller that knows only render errors still
    sends nothing; the tick tells it apart and defers the touch instead of skipping it.
    """


def _fmt(uses: list[Use]) -> str:
    return ", ".join(f"'{u.path}' ({u.part} line {u.line})" for u in uses)


@dataclass
class DynamicTemplateCheck:
    """Checks touches' data against their dynamic templates; reads each template once.

    ``read`` returns a template's active version, raising :class:`ConfigError` or a
    :class:`outreach.errors.ProviderError` when it cannot (the SendGrid channel's
    ``read_template``). Failures are remembered too: a template SendGrid does not serve
    costs one request per run, not one per touch.
    """

    read: Callable[[str], DynamicTemplate]
    _found: dict[str, tuple[DynamicTemplate, TemplateVariables] | TemplateRenderError] = field(
        default_factory=dict
    )

    def check(self, template_id: str, data: Mapping[str, Any]) -> None:
        """Raise :class:`TemplateRenderError` when ``data`` lacks a required variable, and
        :class:`TemplateUnavailable` when the template cannot be read."""
        template, variables = self._lookup(template_id)
        missing = variables.missing(data)
        if missing:
            noun = "variable" if len(missing) == 1 else "variables"
            raise TemplateRenderError(
                template_id,
                f"SendGrid dynamic template ({template.describe()}) uses {noun} "
                f"{_fmt(missing)} that this touch's data does not provide; SendGrid would "
                "render it blank, so it was not sent",
            )

    def _lookup(self, template_id: str) -> tuple[DynamicTemplate, TemplateVariables]:
        found = self._found.get(template_id)
        if found is None:
            found = self._fetch(template_id)
            self._found[template_id] = found
        if isinstance(found, TemplateRenderError):
            raise found
        return found

    def _fetch(
        self, template_id: str
    ) -> tuple[DynamicTemplate, TemplateVariables] | TemplateRenderError:
        try:
            template = self.read(template_id)
        except OutreachError as exc:
            log.warning("SendGrid dynamic template %s cannot be read: %s", template_id, exc)
            return TemplateUnavailable(template_id, f"not checked, so not sent now: {exc}")
        try:
            return template, template.variables()
        except HandlebarsError as exc:
            return TemplateRenderError(
                template_id,
                f"SendGrid dynamic template ({template.describe()}) cannot be read: {exc}",
            )


def dynamic_check_for(channel: Any) -> DynamicTemplateCheck | None:
    """A fresh check over ``channel``'s ``read_template`` (the SendGrid channel), or None
    for a channel that cannot read templates (dry runs and previews never call a provider)."""
    read = getattr(channel, "read_template", None)
    return DynamicTemplateCheck(read) if callable(read) else None


def template_ids(config: Any) -> list[str]:
    """The dynamic template ids of the cadence file, each once, in file order."""
    ids: list[str] = []
    for cadence in config.cadences:
        for step in cadence.steps:
            if step.sendgrid_template_id and step.sendgrid_template_id not in ids:
                ids.append(step.sendgrid_template_id)
    return ids


@dataclass(frozen=True)
class DynamicTemplateReport:
    """What ``config check`` found in the dynamic templates.

    ``errors``: a variable the engine's data never provides, a template SendGrid does not
    have or that cannot be parsed (exit 2). ``unreachable``: templates that could not be
    read for a reason that is not the configuration's (exit 1 when nothing else is wrong).
    ``warnings``: conditions on data the engine never provides (always false).
    """

    errors: list[str]
    warnings: list[str]
    unreachable: list[str]
    checked: int


def check_dynamic_templates(
    config: Any, read: Callable[[str], DynamicTemplate]
) -> DynamicTemplateReport:
    """Read each step's dynamic template and compare its variables with the engine's data.

    The data is what the engine sends as ``dynamic_template_data`` (DESIGN.md, Templates:
    ``candidate``, ``job``, ``recruiter``, ``company``, ``touch``); ``candidate.custom``
    holds the CRM's own fields, so any name under it may be provided. Whether a person's
    record has a value is known only at send time, where a touch without it is skipped.
    """
    schema = plain_context(sample_context(config.company.name))
    errors: list[str] = []
    warnings: list[str] = []
    unreachable: list[str] = []
    found: dict[str, DynamicTemplate | OutreachError | HandlebarsError] = {}
    checked = 0
    for ci, cadence in enumerate(config.cadences):
        for si, step in enumerate(cadence.steps):
            template_id = step.sendgrid_template_id
            if not template_id:
                continue
            where = (
                f"{config.path}: cadences[{ci}].steps[{si}] ({cadence.id}/{step.id}), "
                f"sendgrid_template_id {template_id}"
            )
            if template_id not in found:
                try:
                    found[template_id] = read(template_id)
                except OutreachError as exc:
                    found[template_id] = exc
            template = found[template_id]
            if isinstance(template, ConfigError):
                errors.append(f"{where}: {template}")
                continue
            if isinstance(template, OutreachError):
                unreachable.append(f"{where}: {template}")
                continue
            checked += 1
            try:
                variables = template.variables()
            except HandlebarsError as exc:
                errors.append(f"{where} ({template.describe()}): {exc}")
                continue
            never = [u for u in variables.required if not _may_provide(schema, u.path)]
            if never:
                errors.append(
                    f"{where} ({template.describe()}): the engine's data never provides "
                    f"{_fmt(never)}; use the names of DESIGN.md, Templates (candidate, job, "
                    "recruiter, company, touch; CRM fields under candidate.custom), or give "
                    'a default with {{insert NAME "default=…"}}'
                )
            always_false = [u for u in variables.optional if not _may_provide(schema, u.path)]
            if always_false:
                warnings.append(
                    f"{where} ({template.describe()}): {_fmt(always_false)} never in the "
                    "engine's data, so always empty or false"
                )
    return DynamicTemplateReport(errors, warnings, unreachable, checked)


def _may_provide(schema: Mapping[str, Any], path: str) -> bool:
    if any(path == p or path.startswith(p + ".") for p in _OPEN_ENDED):
        return True
    return provides(schema, path)
