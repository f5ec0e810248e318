"""The cadence file: pydantic models for the whole schema and a loader that reports well.

The file is YAML (see DESIGN.md, "Cadence file"). Every model forbids unknown keys.
:func:`load_cadence_file` gathers *every* problem into one :class:`ConfigError`, each
line naming the file, the line, the path (``cadences[2].steps[1].after``), the bad
value and what is allowed.

Example::

    config = load_cadence_file(Path("config/cadences.yaml"))
    for cadence in config.cadences:
        print(cadence.id, [step.id for step in cadence.steps])
"""

from __future__ import annotations

import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from outreach.cadence_when import When, knowable_on
from outreach.errors import ConfigError
from outreach.yamlload import line_of, load_with_nodes

__all__ = [
    "CANONICAL_STAGES",
    "CHANNELS",
    "Cadence",
    "CadenceConfig",
    "MaxTouches",
    "Policy",
    "RateLimit",
    "SendWindow",
    "Step",
    "StepWindow",
    "format_duration",
    "load_cadence_file",
    "parse_duration",
    "parse_rate",
]

CANONICAL_STAGES: tuple[str, ...] = (
    "prospect",
    "applied",
    "screening",
    "interview",
    "offer",
    "hired",
    "rejected",
)
Stage = Literal["prospect", "applied", "screening", "interview", "offer", "hired", "rejected"]
ChannelName = Literal["email", "sms", "linkedin", "call", "x", "facebook"]
StepChannel = Literal["email", "sms", "linkedin", "call", "x", "facebook", "auto"]
CHANNELS: tuple[str, ...] = get_args(ChannelName)
#: steps on these channels become recruiter tasks (no API sends them), capped per owner per day
TASK_CHANNELS = frozenset({"linkedin", "call", "x", "facebook"})
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])\s*$")
_RATE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_SLUG = r"^[a-z0-9][a-z0-9_-]*$"
_TEMPLATE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
#: cadence and step ids are stored in columns of 64 characters
_ID_MAX = 64
#: a template name is a file name (``NAME.email.j2``): well under any file system's limit
_NAME_MAX = 100


def parse_duration(value: object) -> timedelta:
    """Parse ``30m``, ``48h``, ``7d`` or ``2w`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match:
        raise PydanticCustomError(
            "duration",
            "not a duration; write a whole number and a unit m, h, d or w (30m, 48h, 7d, 2w)",
        )
    number, unit = match.groups()
    try:
        return timedelta(**{_DURATION_UNITS[unit]: int(number)})
    except (OverflowError, ValueError):  # past timedelta's 999,999,999 days
        raise PydanticCustomError(
            "duration_too_long", "too long a duration; the largest is 999999999d"
        ) from None


def format_duration(delta: timedelta) -> str:
    """Format a timedelta back in the file's notation (largest exact unit)."""
    minutes = int(delta.total_seconds() // 60)
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class RateLimit(BaseModel):
    """``count`` sends per ``seconds`` (``50/s``, ``40/d``)."""

    model_config = ConfigDict(frozen=True)

    count: int
    seconds: int

    @property
    def per_second(self) -> float:
        """The steady rate in sends per second."""
        return self.count / self.seconds

    def __str__(self) -> str:
        unit = {v: k for k, v in _RATE_SECONDS.items()}[self.seconds]
        return f"{self.count}/{unit}"


def parse_rate(value: object) -> RateLimit:
    """Parse ``50/s``, ``100/m``, ``1000/h`` or ``40/d``."""
    if isinstance(value, RateLimit):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match or int(match.group(1)) < 1:
        raise PydanticCustomError(
            "rate",
            "not a rate; write a positive count, a slash and a unit s, m, h or d "
            "(50/s, 100/m, 40/d)",
        )
    return RateLimit(count=int(match.group(1)), seconds=_RATE_SECONDS[match.group(2)])


def _parse_clock(value: object) -> time:
    if isinstance(value, time):
        return value
    match = _CLOCK.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise PydanticCustomError(
            "clock_time", 'not a clock time; write 24-hour HH:MM in quotes, e.g. "08:00"'
        )
    return time(int(match.group(1)), int(match.group(2)))


ClockTime = Annotated[time, BeforeValidator(_parse_clock)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SendWindow(_Model):
    """Local hours and weekdays in which a candidate may be contacted."""

    start: ClockTime = time(8, 0)
    end: ClockTime = time(19, 0)
    days: list[Weekday] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.end <= self.start:
            raise PydanticCustomError(
                "window_order",
                "end {end} must be later than start {start} (windows cannot cross midnight)",
                {"start": self.start.strftime("%H:%M"), "end": self.end.strftime("%H:%M")},
            )
        if not self.days:
            raise PydanticCustomError("window_days", "days must name at least one weekday")
        return self

    @property
    def weekday_numbers(self) -> frozenset[int]:
        """The allowed days as ``datetime.weekday()`` numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(day) for day in self.days)


class StepWindow(SendWindow):
    """A transactional step's own send window, in place of ``policy.send_window``.

    An answer to an event (an application received, an interview held) keeps its promise
    in wall-clock hours, so it may go on days the policy keeps quiet. ``holidays: false``
    also lifts the policy's holiday calendar for the step.
    """

    holidays: bool = True


class MaxTouches(_Model):
    """At most ``count`` touches per person in any rolling window of ``per``."""

    count: int = Field(ge=1)
    per: Duration

    @field_validator("per")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise PydanticCustomError("positive_duration", "the window must be longer than 0")
        return value


RateValue = Annotated[RateLimit, BeforeValidator(parse_rate)]


#: the per-owner daily task caps of x and facebook when ``rate_limits`` leaves them out
_SOCIAL_DEFAULT_CAPS = {
    "x": RateLimit(count=25, seconds=86400),
    "facebook": RateLimit(count=25, seconds=86400),
}


class Policy(_Model):
    """Contact policy shared by every cadence (DESIGN.md, ``policy``)."""

    default_timezone: str = "America/New_York"
    default_region: str = "US"
    send_window: SendWindow = Field(default_factory=SendWindow)
    holidays: str | None = None
    max_touches: MaxTouches = Field(
        default_factory=lambda: MaxTouches(count=2, per=timedelta(days=7))
    )
    min_gap: Duration = timedelta(hours=48)
    channel_order: list[ChannelName] = Field(default_factory=lambda: ["email", "sms", "linkedin"])
    sms_requires_consent: bool = True
    #: an SMS longer than this many segments (GSM-7 or UCS-2) is never sent
    sms_max_segments: int = Field(default=3, ge=1, le=10)
    #: SendGrid unsubscribe group (ASM) id put on every email, when set
    sendgrid_unsubscribe_group: int | None = Field(default=None, ge=1)
    rate_limits: dict[ChannelName, RateValue] = Field(
        default_factory=lambda: {
            "email": RateLimit(count=50, seconds=1),
            "sms": RateLimit(count=1, seconds=1),
            "linkedin": RateLimit(count=40, seconds=86400),
            "call": RateLimit(count=25, seconds=86400),
            **_SOCIAL_DEFAULT_CAPS,
        }
    )

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
            raise PydanticCustomError(
                "timezone", "not an IANA time zone; use a name like America/New_York or UTC"
            ) from None
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise PydanticCustomError(
                "region", "not a phone region; use an ISO 3166 country code like US, GB, DE"
            )
        return value.upper()

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        if not isinstance(value, str):
            return value
        import holidays as holidays_lib

        code = value.strip().upper()
        if code not in holidays_lib.list_supported_countries():
            raise PydanticCustomError(
                "holidays",
                "no holiday calendar for this code; use an ISO country code the "
                "'holidays' package supports (US, GB, DE, FR, CA, ...) or none",
            )
        return code

    @field_validator("min_gap")
    @classmethod
    def _gap(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise PydanticCustomError("positive_duration", "min_gap cannot be negative")
        return value

    @field_validator("channel_order")
    @classmethod
    def _unique_order(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("duplicates", "each channel may appear once")
        if not value:
            raise PydanticCustomError("empty", "name at least one channel")
        return value

    @field_validator("rate_limits")
    @classmethod
    def _social_caps(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        # x and facebook came after files that list only email..call: left out, they keep
        # their default daily cap rather than being uncapped.
        for channel in _SOCIAL_DEFAULT_CAPS.keys() - value.keys():
            value[channel] = _SOCIAL_DEFAULT_CAPS[channel]
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The default time zone as a ZoneInfo."""
        return ZoneInfo(self.default_timezone)


class Trigger(_Model):
    """When a person is enrolled: on entering ``stage``."""

    stage: Stage


class Repeat(_Model):
    """Repeat a step ``max`` more times, ``every`` apart."""

    every: Duration
    max: int = Field(ge=1, le=100)

    @field_validator("every")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise PydanticCustomError("positive_duration", "every must be longer than 0")
        return value


class Variant(_Model):
    """An A/B variant: another template, chosen for ``weight`` percent of people."""

    template: str = Field(pattern=_TEMPLATE_NAME, max_length=_NAME_MAX)
    weight: int = Field(ge=1, le=99)


class Step(_Model):
    """One touch of a cadence (DESIGN.md, ``steps``).

    ``when`` (optional, :class:`~outreach.cadence_when.When`) sends the step only on the
    candidate's engagement with this enrollment's earlier touches, e.g. ``{event: opened,
    no: reply}``: ``event`` holds when any of its signals was seen, ``no`` when none was,
    human opens only (never SendGrid's ``sg_machine_open``), a click or reply implying an
    open. It is decided by the run that sends or schedules the step; when it does not
    hold the occurrence is skipped with the reason and the cadence goes on.
    :mod:`outreach.cadence_when` has the whole semantics, unknowable signals included.
    """

    id: str = Field(pattern=_SLUG, max_length=_ID_MAX)
    after: Duration
    within: Duration | None = None
    on_late: Literal["send", "skip", "task"] = "send"
    anchor: Literal["trigger", "previous"] | None = Field(default=None, alias="from")
    repeat: Repeat | None = None
    channel: StepChannel = "auto"
    fallback: ChannelName | None = None
    template: str = Field(pattern=_TEMPLATE_NAME, max_length=_NAME_MAX)
    variants: list[Variant] = Field(default_factory=list)
    transactional: bool = False
    sendgrid_template_id: str | None = Field(default=None, pattern=r"^d-[0-9a-fA-F]{32}$")
    # Per arm: the report names no A/B winner before every arm has this many sends.
    min_sample: int = Field(default=100, ge=1, le=1_000_000)
    # Percent of enrollments that get no touch on this step (a control for conversion).
    holdout: int = Field(default=0, ge=0, le=50)
    # Optional: the step's own window (transactional steps only), else policy.send_window.
    send_window: StepWindow | None = None
    # Optional: send only on the candidate's engagement so far (outreach.cadence_when).
    when: When | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Step:
        if self.after < timedelta(0):
            raise PydanticCustomError("after", "after cannot be negative")
        if self.within is not None and self.within < self.after:
            raise PydanticCustomError(
                "within_before_after",
                "within ({within}) must be at least after ({after}): the deadline is counted "
                "from the same anchor",
                {"within": format_duration(self.within), "after": format_duration(self.after)},
            )
        if self.fallback is not None and self.channel == "auto":
            raise PydanticCustomError(
                "fallback_with_auto",
                "fallback is only for a fixed channel; channel: auto already falls back "
                "along policy.channel_order",
            )
        if self.fallback is not None and self.fallback == self.channel:
            raise PydanticCustomError(
                "fallback_same",
                "fallback must differ from channel ({channel})",
                {"channel": self.channel},
            )
        if sum(v.weight for v in self.variants) >= 100:
            raise PydanticCustomError(
                "variant_weights",
                "variant weights add up to {total}; they must leave some share (< 100) "
                "for the step's own template",
                {"total": sum(v.weight for v in self.variants)},
            )
        if self.send_window is not None and not self.transactional:
            raise PydanticCustomError(
                "send_window_not_transactional",
                "send_window on a step is only for transactional steps (add transactional: "
                "true, or remove send_window: other touches keep policy.send_window)",
            )
        if self.holdout and self.transactional:
            raise PydanticCustomError(
                "holdout_transactional",
                "holdout keeps people from a step on purpose, and a transactional step is a "
                "promised answer (a receipt, a thank-you): remove holdout or transactional",
            )
        if self.when is not None and self.transactional:
            raise PydanticCustomError(
                "when_transactional",
                "when makes a step depend on engagement, and a transactional step is a "
                "promised answer that always goes: remove when or transactional",
            )
        if self.sendgrid_template_id and self.channel not in ("email", "auto"):
            raise PydanticCustomError(
                "sendgrid_channel",
                "sendgrid_template_id needs channel email or auto, not {channel}",
                {"channel": self.channel},
            )
        return self

    @property
    def templates(self) -> list[str]:
        """The step's own template and its variants' templates."""
        return [self.template, *(v.template for v in self.variants)]

    @property
    def occurrences(self) -> int:
        """How many times this step is sent at most (1 plus repeats)."""
        return 1 + (self.repeat.max if self.repeat else 0)


class Cadence(_Model):
    """A sequence of steps started when a person enters the trigger stage."""

    id: str = Field(pattern=_SLUG, max_length=_ID_MAX)
    trigger: Trigger
    stop_on: list[Literal["reply", "stage_change", "opt_out"]] = Field(
        default_factory=lambda: ["reply", "stage_change", "opt_out"]
    )
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _steps(self) -> Cadence:
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise PydanticCustomError(
                    "duplicate_step",
                    "step id '{id}' is used twice in this cadence",
                    {"id": step.id},
                )
            seen.add(step.id)
        if self.steps[0].anchor == "previous":
            raise PydanticCustomError(
                "first_step_previous",
                "the first step ({id}) has no previous touch; use from: trigger",
                {"id": self.steps[0].id},
            )
        return self

    def step_anchor(self, index: int) -> str:
        """The anchor of step ``index``: ``trigger`` unless the step says ``previous``."""
        return self.steps[index].anchor or "trigger"


class Company(_Model):
    """The hiring company, as templates name it (``company.name``)."""

    name: str = Field(min_length=1)


class CadenceFile(_Model):
    """The whole cadence file as written."""

    policy: Policy = Field(default_factory=Policy)
    company: Company = Field(default_factory=lambda: Company(name="our team"))
    stage_map: dict[str, dict[str, Stage]] = Field(default_factory=dict)
    cadences: list[Cadence] = Field(default_factory=list)

    @field_validator("stage_map")
    @classmethod
    def _sources(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for source in value:
            if not re.match(_SLUG, source):
                raise PydanticCustomError(
                    "source_name",
                    "source '{source}' must be a lower-case name like greenhouse, lever, hubspot",
                    {"source": source},
                )
        return value


class CadenceConfig:
    """A validated cadence file plus where it came from (for templates and messages)."""

    def __init__(self, data: CadenceFile, path: Path) -> None:
        self.data = data
        self.path = path
        self.template_dir = path.parent / "templates"
        self.policy = data.policy
        self.company = data.company
        self.stage_map = data.stage_map
        self.cadences = data.cadences
        self._by_id = {c.id: c for c in data.cadences}
        #: (cadence id, step index) of every step with ``when:`` (the planner reads the
        #: engagement of only these enrollments)
        self.when_steps = frozenset(
            (c.id, index)
            for c in data.cadences
            for index, step in enumerate(c.steps)
            if step.when is not None
        )
        # Lower-cased source stage names, so "phone screen" matches "Phone Screen".
        self._stage_lookup = {
            source: {name.strip().lower(): stage for name, stage in mapping.items()}
            for source, mapping in data.stage_map.items()
        }

    def cadence(self, cadence_id: str) -> Cadence:
        """The cadence with this id (``KeyError`` when there is none)."""
        return self._by_id[cadence_id]

    def canonical_stage(self, source: str, name: str | None) -> str | None:
        """Map a CRM stage name to a canonical stage, or ``None`` when unmapped.

        A name that already is a canonical stage maps to itself.
        """
        if name is None:
            return None
        key = name.strip().lower()
        mapped = self._stage_lookup.get(source, {}).get(key)
        if mapped:
            return mapped
        return key if key in CANONICAL_STAGES else None

    def channels_for(self, step: Step) -> list[str]:
        """Every concrete channel this step may end up using."""
        if step.channel == "auto":
            channels = list(self.policy.channel_order)
        else:
            channels = [step.channel]
            if step.fallback:
                channels.append(step.fallback)
        return channels


def load_cadence_file(path: Path, *, check_templates: bool = True) -> CadenceConfig:
    """Read, validate and cross-check a cadence file.

    Raises :class:`ConfigError` listing every problem found. With ``check_templates``
    the template files each step may use must exist beside the file in ``templates/``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: cadence file not found; set OUTREACH_CONFIG or pass the file's path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the cadence file: {exc}") from None

    try:
        raw, root = load_with_nodes(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(
            f"{where}: YAML syntax error: {detail}; fix the indentation or quoting there"
        ) from None

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}:1:1: the cadence file must be a mapping with policy, stage_map and "
            f"cadences, not a {type(raw).__name__}"
        )

    try:
        data = CadenceFile.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(path, root, err) for err in exc.errors()]
        raise ConfigError(
            f"{path}: {len(problems)} problem(s) in the cadence file", problems
        ) from None

    config = CadenceConfig(data, path)
    problems = _cross_check(config, root, check_templates)
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s) in the cadence file", problems)
    return config


def _cross_check(config: CadenceConfig, root: yaml.Node | None, templates: bool) -> list[str]:
    problems: list[str] = []

    def report(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(f"{_where(config.path, root, loc)}: {message}")

    seen: dict[str, int] = {}
    for index, cadence in enumerate(config.cadences):
        if cadence.id in seen:
            report(
                ("cadences", index, "id"),
                f"cadence id {cadence.id!r} is already used by cadences[{seen[cadence.id]}]; "
                "ids must be unique",
            )
        seen.setdefault(cadence.id, index)
    for ci, cadence in enumerate(config.cadences):
        for si, step in enumerate(cadence.steps):
            if step.when is not None:
                for message in _when_problems(config, cadence, si):
                    report(("cadences", ci, "steps", si, "when"), message)

    if not templates:
        return problems

    from outreach.templates import TemplateStore

    store = TemplateStore(config.template_dir)
    for ci, cadence in enumerate(config.cadences):
        for si, step in enumerate(cadence.steps):
            # A late step handed to the recruiter (on_late: task) uses NAME.task.j2 when it
            # exists, else the text of the channel's own template: nothing more to require.
            kinds = {TemplateStore.kind_for(ch) for ch in config.channels_for(step)}
            for ti, name in enumerate(step.templates):
                loc: tuple[str | int, ...] = (
                    ("cadences", ci, "steps", si, "template")
                    if ti == 0
                    else ("cadences", ci, "steps", si, "variants", ti - 1, "template")
                )
                missing = [k for k in sorted(kinds) if not store.exists(name, k)]
                if missing and step.sendgrid_template_id and missing == ["email"]:
                    continue
                for kind in missing:
                    report(
                        loc,
                        f"template {name!r} has no {kind} file; step may use channel(s) "
                        f"{', '.join(config.channels_for(step))}, so create "
                        f"{store.path_for(name, kind)}",
                    )
    return problems


def _when_problems(config: CadenceConfig, cadence: Cadence, index: int) -> list[str]:
    """What makes step ``index``'s ``when:`` meaningless in its cadence (see cadence_when)."""
    when = cadence.steps[index].when
    assert when is not None
    if index == 0:
        return [
            "the first step has no earlier touch whose engagement when could look at; "
            "put when on a later step"
        ]
    problems = []
    if "reply" in cadence.stop_on and when.event == ["replied"]:
        problems.append(
            "event replied can never hold: stop_on reply ends the cadence at the reply; "
            "remove reply from stop_on or use another event"
        )
    earlier = {ch for step in cadence.steps[:index] for ch in config.channels_for(step)}
    for signal in sorted(when.signals):
        channels = knowable_on(signal)
        if channels is not None and not channels & earlier:
            problems.append(
                f"{signal} can never be known: no earlier step of this cadence may go by "
                f"{' or '.join(sorted(channels))} (earlier channels: "
                f"{', '.join(sorted(earlier))})"
            )
    return problems


def _where(path: Path, root: yaml.Node | None, loc: tuple[str | int, ...]) -> str:
    position = line_of(root, loc)
    dotted = _dotted(loc)
    prefix = f"{path}:{position[0]}" if position else str(path)
    return f"{prefix}: {dotted}" if dotted else prefix


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _describe(path: Path, root: yaml.Node | None, err: dict[str, Any]) -> str:
    # pydantic puts the failing validator's name in loc for Annotated/union members;
    # drop those so the path is the one a user sees in the file.
    loc = tuple(
        part
        for part in err["loc"]
        if isinstance(part, int) or not str(part).startswith(("function-", "literal["))
    )
    kind = err["type"]
    value = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        message = f"unknown key {loc[-1]!r}"
        if allowed:
            message += f"; allowed here: {', '.join(allowed)}"
        return f"{_where(path, root, loc)}: {message}"
    if kind == "missing":
        return f"{_where(path, root, loc[:-1])}: missing required key {loc[-1]!r}"
    message = err["msg"]
    if kind.startswith("literal") and isinstance(value, str | int | float | bool):
        message = f"{value!r} is not allowed; {message[0].lower()}{message[1:]}"
    elif _showable(value):
        message = f"got {value!r}: {message}"
    return f"{_where(path, root, loc)}: {message}"


def _showable(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    return isinstance(value, list) and len(repr(value)) <= 120


def _allowed_keys(loc: tuple[str | int, ...]) -> list[str]:
    """The keys a model accepts at ``loc`` (for 'unknown key' messages)."""
    annotation: Any = CadenceFile
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = next(
                (f for name, f in annotation.model_fields.items() if (f.alias or name) == part),
                None,
            )
            if field is None:
                return []
            annotation = field.annotation
        elif get_origin(annotation) is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    # Optional[X] / X | None -> X; Annotated[X, ...] -> X
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        args = [a for a in get_args(annotation) if a is not type(None)]
        if origin is not None and origin not in (list, dict) and len(args) == 1:
            annotation = args[0]
            continue
        return annotation
