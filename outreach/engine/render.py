"""The render stage: each throttled occurrence's message or recruiter task, rendered strictly.

:class:`Renderer` picks the occurrence's variant (stable per person), gives it a rating
token (its rating links carry it, the claim stores it), builds the template context and
renders the message for its channel, or the task text for a recruiter. It also renders
the same touch again for a fallback channel (:meth:`Renderer.fallback`).

Invariant carried: no message leaves with an unfilled placeholder (invariant 3): a
template that does not render skips its occurrence with the template, line and reason
(invariant 7: the rest of the batch goes on); a SendGrid dynamic template that cannot be
checked yet defers the occurrence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from channels.base import SendResult
from outreach.cadence import TASK_CHANNELS, CadenceConfig
from outreach.dynamic_templates import TemplateUnavailable
from outreach.engine.batch import (
    REPLAN_AFTER,
    Occurrence,
    Pending,
    ReplyAddress,
    outgoing_message,
    person_name,
)
from outreach.engine.route import Route, build_context, choose_variant, fallback_candidates
from outreach.ratings import new_rating_tokens, rating_urls
from outreach.templates import TemplateRenderError, TemplateStore

if TYPE_CHECKING:
    from channels.base import Channel

__all__ = ["Renderer"]

#: outcomes a rendered occurrence can have
_DECIDED = ("deferred", "holdout", "skipped", "task", "claimed", "ended")


class Renderer:
    """The render stage (see the module docstring).

    ``public_url`` is where rating links point (without it a template using
    ``touch.rating_urls`` cannot render, and its step is skipped, never sent with a broken
    link); ``replies`` gives a fallback's Reply-To and Message-ID.
    """

    def __init__(
        self,
        config: CadenceConfig,
        templates: TemplateStore,
        *,
        public_url: str | None = None,
        replies: ReplyAddress | None = None,
    ) -> None:
        self.config = config
        self.templates = templates
        self.public_url = public_url
        self.replies = replies or ReplyAddress(None, None, None)
        #: per (template, kind): what :meth:`_what_it_needs` found
        self._needs: dict[tuple[str, str], tuple[frozenset[str] | None, bool]] = {}

    def __call__(self, items: list[Occurrence], now: datetime) -> list[Occurrence]:
        """Render every undecided occurrence of ``items``; return them all.

        Each ends ``claimed`` (a message for its channel), ``task`` (a recruiter task),
        ``skipped`` (the template does not render) or ``deferred`` (a SendGrid template
        that cannot be checked yet). One already decided upstream passes untouched; one
        not throttled (no final route) raises ``ValueError``.
        """
        todo = []
        for occ in items:
            if occ.outcome in _DECIDED:
                continue
            if occ.chosen is None:
                raise ValueError(f"occurrence {occ.key} was not throttled")
            todo.append(occ)
        # The rating token exists before rendering: the links carry it, the claim stores it.
        for occ, rating_token in zip(todo, new_rating_tokens(len(todo)), strict=True):
            self._one(occ, now, rating_token)
        return items

    def _one(self, occ: Occurrence, now: datetime, rating_token: str) -> None:
        person, cadence, step, record = occ.person, occ.cadence, occ.step, occ.record
        chosen = occ.chosen
        assert chosen is not None
        variant, template = choose_variant(person.id, cadence.id, step)
        kind = chosen.channel or "manual"
        # What the template reads: a candidate with those fields alone, and rating links
        # only for a template that shows them (a dynamic template's data has everything).
        if kind == "manual" or (kind == "email" and step.sendgrid_template_id):
            candidate_fields = None
            links = self.rating_urls(rating_token)
        else:
            key = (template, "task" if kind in TASK_CHANNELS else TemplateStore.kind_for(kind))
            needs = self._needs.get(key)
            if needs is None:
                needs = self._needs[key] = self._what_it_needs(*key)
            candidate_fields, wants_links = needs
            links = self.rating_urls(rating_token) if wants_links else None
        context = build_context(
            person,
            record,
            self.config,
            cadence_id=cadence.id,
            step_id=step.id,
            variant=variant,
            rating_urls=links,
            candidate_fields=candidate_fields,
        )
        try:
            if kind in TASK_CHANNELS or kind == "manual":
                occ.title, occ.body = self.task_text(template, kind, context, chosen, record)
            else:
                occ.message = self.templates.render_for_step(
                    template, TemplateStore.kind_for(kind), context, step.sendgrid_template_id
                )
        except TemplateUnavailable as exc:
            # Nothing leaves unchecked: the step waits until SendGrid serves its template.
            reason = f"template {exc.template}: {exc.reason}"
            occ.decide("deferred", reason, now + REPLAN_AFTER, tally=reason)
            return
        except TemplateRenderError as exc:
            where = f"{exc.template}:{exc.line}" if exc.line else exc.template
            reason = f"template {where}: {exc.reason}"
            occ.decide("skipped", reason, tally="template error")
            occ.journal_rule = f"{occ.rule}; {reason}"
            return
        occ.kind, occ.template, occ.variant, occ.rating_token = (
            kind,
            template,
            variant,
            rating_token,
        )
        if kind in TASK_CHANNELS or kind == "manual":
            occ.decide("task")
        else:
            occ.decide("claimed")

    def _what_it_needs(self, template: str, kind: str) -> tuple[frozenset[str] | None, bool]:
        """The candidate fields template ``template`` for ``kind`` reads (``None``: all of
        them), and whether it may read ``touch.rating_urls``."""
        reads = self.templates.reads(template, kind)
        touch_fields = reads.of("touch")
        return reads.of("candidate"), touch_fields is None or "rating_urls" in touch_fields

    def rating_urls(self, token: str | None) -> list[str] | None:
        """A touch's five rating links, or None without a token or a public URL."""
        if token is None or not self.public_url:
            return None
        return rating_urls(self.public_url, token)

    def task_text(
        self,
        template: str,
        kind: str,
        context: dict[str, Any],
        the_route: Route,
        record: dict[str, Any],
    ) -> tuple[str, str]:
        """A recruiter task's title and body (a manual task shows the message it stands for)."""
        if kind in TASK_CHANNELS:
            rendered = self.templates.render(template, "task", context)
            title = rendered.title or f"{kind.title()}: {person_name(record)}"
            return title, rendered.body
        # A manual task for a touch no channel could carry: what the message would have said.
        for fallback_kind in ("email", "sms", "task"):
            if self.templates.exists(template, fallback_kind):
                rendered = self.templates.render(template, fallback_kind, context)
                title = (
                    rendered.title or f"Contact {person_name(record)} by hand: {the_route.reason}"
                )
                text = (
                    f"Subject: {rendered.subject}\n\n" if rendered.subject else ""
                ) + rendered.body
                return title[:480], f"{the_route.reason}\n\nSuggested message:\n{text}"
        return f"Contact {person_name(record)} by hand", the_route.reason

    def fallback(
        self,
        item: Pending,
        result: SendResult,
        now: datetime,
        channels: Mapping[str, Channel],
    ) -> tuple[Pending | None, bool]:
        """The same touch on the next usable channel the step allows, if any.

        Returns ``(pending, later)``: ``later`` when a usable channel exists but cannot
        deliver at this touch's instant (it cannot schedule that far ahead, or that soon):
        the occurrence is then re-planned rather than sent at the wrong time.
        """
        step = item.step
        candidates, later = fallback_candidates(
            step, item.person, self.config, channels, item.tried, item.message.send_at, now
        )
        for name, contact in candidates:
            context = build_context(
                item.person,
                item.record,
                self.config,
                cadence_id=item.cadence.id,
                step_id=step.id,
                variant=item.variant,
                rating_urls=self.rating_urls(item.rating_token),
            )
            try:
                rendered = self.templates.render_for_step(
                    item.template, TemplateStore.kind_for(name), context, step.sendgrid_template_id
                )
            except TemplateRenderError:
                continue
            message = outgoing_message(
                item.touch_id,
                item.message.idempotency_key,
                item.person,
                item.record,
                item.cadence,
                step,
                name,
                contact.value,
                item.message.send_at,
                rendered,
                item.template,
                item.variant,
                reply_to=self.replies.address(item.token),
                message_id=self.replies.message_id(item.token) if item.token else None,
                recallable=item.message.recallable,
            )
            return (
                Pending(
                    item.touch_id,
                    message,
                    item.person,
                    item.record,
                    item.cadence,
                    step,
                    item.variant,
                    item.template,
                    contact.id,
                    [*item.tried, name],
                    f"{name} after {item.message.channel} failed: {result.reason}",
                    due=item.due,
                    before=item.before,
                    after=item.after,
                    token=item.token,
                    rating_token=item.rating_token,
                ),
                False,
            )
        return None, later
