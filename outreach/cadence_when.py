"""A step's ``when:``: send it only if the candidate engaged (or did not) with the cadence so far.

Written in the cadence file as ``when: {no: reply}``, ``when: {event: opened, no: reply}``
("opened but did not answer: follow up") or with lists (``event: [opened, clicked]``).

Signals, each of them about **this enrollment's earlier touches**, every step and repeat
the cadence sent before this occurrence (not only the previous step: "opened but did not
answer" means since the cadence began, and a previous step that was skipped or held out
would otherwise hide everything before it):

- ``delivered``: a provider confirmed delivery (SendGrid ``delivered``, Twilio status);
- ``opened``: a human opened an email. An open SendGrid marks ``sg_machine_open`` (a mail
  client or privacy proxy fetching the pixel by itself, as Apple Mail Privacy Protection
  does) is never an open;
- ``clicked``: a tracked link in an email was clicked;
- ``replied``: a human reply (an auto-reply or out-of-office notice is not an answer):
  one that names a touch of this enrollment, or one that names no touch (an SMS or a
  mail matched by its sender) from the person since the enrollment began.

Each signal implies the weaker ones: a click or a reply means the message was opened
(clients that block images send no open, but a person cannot click or answer unread
mail), and an open means it was delivered.

``event:`` holds when **any** of its signals was seen; ``no:`` holds when **none** of its
signals was seen; both given, both must hold. Only events known when the occurrence is
decided count (their time at or before the tick's ``now``; the planner decides a ``when:``
step at the run that sends or schedules it, up to the run's horizon ahead of its due time,
since a nightly job that waited for the due time would send it a day late), and what
arrives afterwards does not undo the decision. When the condition does not hold the
occurrence is ``skipped`` with the reason, and the cadence goes on to its next step as
after any skip.

Some signals cannot be known: ``opened`` and ``clicked`` need an email among the earlier
touches, ``delivered`` an email or SMS (tasks report nothing). A condition that names a
signal that cannot be known for this enrollment (``event: opened`` for a person reached by
SMS only, and likewise ``no: opened``: silence proves nothing there) does not hold, and
the reason says so. Where open or click tracking is off at the provider no open or click
ever arrives, so ``event: opened`` never holds: turn tracking on before using it.

Example::

    when = When.model_validate({"event": "opened", "no": "reply"})
    when.describe()  # 'opened and no reply'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "SIGNALS",
    "SKIP_PREFIX",
    "Engagement",
    "Signal",
    "When",
    "implied",
    "knowable_on",
]

#: how the reason of an occurrence skipped by its ``when:`` begins (``when opened: not met
#: (not opened)``): the SLA report tells these apart from other skips by it
SKIP_PREFIX = "when "

Signal = Literal["delivered", "opened", "clicked", "replied"]
#: the signals in the order messages list them
SIGNALS: tuple[str, ...] = ("delivered", "opened", "clicked", "replied")
#: other spellings a user may write (the contract's own example says ``no: reply``)
_ALIASES = {"reply": "replied", "open": "opened", "click": "clicked", "delivery": "delivered"}
#: what each signal implies besides itself
_IMPLIES: dict[str, frozenset[str]] = {
    "delivered": frozenset(),
    "opened": frozenset({"delivered"}),
    "clicked": frozenset({"opened", "delivered"}),
    "replied": frozenset({"opened", "delivered"}),
}
#: the channels whose touches can report each signal (replies come on any channel)
_KNOWABLE_ON: dict[str, frozenset[str] | None] = {
    "delivered": frozenset({"email", "sms"}),
    "opened": frozenset({"email"}),
    "clicked": frozenset({"email"}),
    "replied": None,
}
_ALLOWED = {
    "allowed": "delivered, opened, clicked or replied (reply, open and click read the same)"
}
_WORDS = {"delivered": "delivered", "opened": "opened", "clicked": "clicked", "replied": "reply"}


def implied(signal: str) -> frozenset[str]:
    """``signal`` and every weaker signal it implies (a click implies an open)."""
    return _IMPLIES[signal] | {signal}


def knowable_on(signal: str) -> frozenset[str] | None:
    """The channels whose touches can report ``signal`` (None: any, even none sent)."""
    return _KNOWABLE_ON[signal]


def _signals(value: object) -> object:
    """One name or a list of names, aliases read as their signal, lower-cased."""
    items = value if isinstance(value, list) else [value]
    out: list[object] = []
    for item in items:
        if not isinstance(item, str):
            raise PydanticCustomError(
                "when_signal", "write a signal name or a list of them: {allowed}", _ALLOWED
            )
        name = item.strip().lower()
        name = _ALIASES.get(name, name)
        if name not in SIGNALS:
            raise PydanticCustomError(
                "when_signal",
                "{name} is not a signal; use {allowed}",
                {"name": repr(item), **_ALLOWED},
            )
        out.append(name)
    return out


class When(BaseModel):
    """A step's engagement condition (see the module docstring for what each signal means)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event: list[Signal] = Field(default_factory=list)
    no: list[Signal] = Field(default_factory=list)

    @field_validator("event", "no", mode="before")
    @classmethod
    def _names(cls, value: object) -> object:
        return _signals(value)

    @model_validator(mode="after")
    def _coherent(self) -> When:
        if not self.event and not self.no:
            raise PydanticCustomError(
                "when_empty",
                "when needs event (what the candidate did), no (what they did not do) or "
                "both, each one of {signals}",
                {"signals": ", ".join(SIGNALS)},
            )
        for name, values in (("event", self.event), ("no", self.no)):
            if len(set(values)) != len(values):
                raise PydanticCustomError(
                    "when_duplicate", "{name} names a signal twice", {"name": name}
                )
        both = [s for s in SIGNALS if s in self.event and s in self.no]
        if both:
            raise PydanticCustomError(
                "when_contradiction",
                "{signal} is in both event and no; the step could never be sent",
                {"signal": both[0]},
            )
        if self.event and all(implied(s) & set(self.no) for s in self.event):
            first = self.event[0]
            raise PydanticCustomError(
                "when_never",
                "event {event} implies {implied}, which no forbids; the step could never be "
                "sent (a click or a reply implies an open, an open implies delivery)",
                {"event": first, "implied": sorted(implied(first) & set(self.no))[0]},
            )
        return self

    @property
    def signals(self) -> frozenset[str]:
        """Every signal the condition looks at."""
        return frozenset(self.event) | frozenset(self.no)

    def skip_reason(self, why: str) -> str:
        """The ledger's reason for an occurrence skipped because of ``why`` (see check)."""
        return f"{SKIP_PREFIX}{self.describe()}: not met ({why})"

    def describe(self) -> str:
        """The condition in words, for previews and reasons: ``opened and no reply``."""
        parts = []
        if self.event:
            parts.append(" or ".join(_WORDS[s] for s in self.event))
        if self.no:
            parts.append("no " + " or ".join(_WORDS[s] for s in self.no))
        return " and ".join(parts)

    def check(self, engagement: Engagement) -> str | None:
        """None when the condition holds for ``engagement``, else why it does not."""
        seen = engagement.seen
        for signal in self.no:
            if signal in seen:
                return signal
            if not engagement.knows(signal):
                return engagement.unknown(signal)
        if self.event and not any(s in seen for s in self.event):
            unknown = [s for s in self.event if not engagement.knows(s)]
            if len(unknown) == len(self.event):
                return engagement.unknown(unknown[0])
            return "not " + " or ".join(_WORDS[s] for s in self.event)
        return None


@dataclass
class Engagement:
    """What one enrollment's earlier touches drew from the candidate, as of a moment.

    ``seen`` holds the signals observed (with what they imply); ``channels`` the channels
    on which a touch of the enrollment went out (sent and delivered by that moment).
    """

    seen: set[str] = field(default_factory=set)
    channels: set[str] = field(default_factory=set)

    def add(self, signal: str) -> None:
        """Note one observed signal (and the weaker ones it implies)."""
        self.seen |= implied(signal)

    def add_all(self, signals: Iterable[str]) -> None:
        """Note several observed signals."""
        for signal in signals:
            self.add(signal)

    def knows(self, signal: str) -> bool:
        """Whether the earlier touches could report ``signal`` at all."""
        channels = knowable_on(signal)
        return channels is None or bool(channels & self.channels) or signal in self.seen

    def unknown(self, signal: str) -> str:
        """The reason a condition on an unknowable ``signal`` does not hold."""
        channels = knowable_on(signal) or frozenset()
        return (
            f"cannot tell whether {_WORDS[signal]}: no {' or '.join(sorted(channels))} "
            "touch of this enrollment went out"
        )
