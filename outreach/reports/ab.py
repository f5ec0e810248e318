"""The A/B judgement of one step on one metric: one contract ``ab`` entry of the report.

A winner is named only when every arm that was touched has reached the step's ``min_sample``
and the test of difference (``stats.compare``) gives p < 0.05; before that the entry says
``collecting``, because looking at a running test and stopping at the first small p-value
names false winners far more often than 5 %. While collecting, ``p_value`` and ``test`` are
null for the same reason; ``p_best`` (a posterior, which has no such stopping problem in the
same way) and the Wilson intervals are shown throughout.

Only replies and conversions are judged. Opens are not a metric here: Apple Mail Privacy
Protection and link scanners open mail by machine, so an "open" winner may be a mailbox winner.

With more than two touched arms the overall test must be significant and the best arm must
also beat every other arm pairwise, with Holm's correction; otherwise there is no winner (a
tie at the top is ``no_difference``, not a coin toss).

A holdout arm (people held back from the step, ``conversion`` only) gives ``lift``: the pooled
conversion rate of the touched arms minus the holdout's, with Newcombe's hybrid Wilson interval
(``lift_ci_low``, ``lift_ci_high``) and the test of touched against holdout (``lift_p_value``,
``lift_test``). It takes part in ``p_best`` but never wins.

>>> entry = judge("c", "s", "replies", [Arm("a", 120, 12), Arm("b", 130, 30)], min_sample=100)
>>> entry["status"], entry["winner"], entry["test"]
('winner', 'b', 'fisher')
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from outreach.reports.stats import compare, p_best, wilson

METRICS = ("replies", "conversion")
"""The metrics a winner may be named on."""

ALPHA = 0.05
"""The significance level for naming a winner."""


@dataclass(frozen=True)
class Arm:
    """One arm of a test: a variant's sends and responses (replies or conversions).

    ``holdout`` marks the people held back from the step (no touch): only in ``conversion``.
    """

    variant: str
    sent: int
    responses: int
    holdout: bool = False

    def __post_init__(self) -> None:
        """Refuse counts that cannot be: negative, or more responses than sends."""
        if not isinstance(self.variant, str) or not self.variant:
            raise ValueError(f"arm variant must be a non-empty string, got {self.variant!r}")
        for name in ("sent", "responses"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"arm {self.variant!r}: {name} must be a non-negative integer, got {value!r}"
                )
        if self.responses > self.sent:
            raise ValueError(
                f"arm {self.variant!r}: responses ({self.responses}) exceed sent ({self.sent})"
            )

    @property
    def rate(self) -> float | None:
        """Responses per send; None when nothing was sent."""
        return self.responses / self.sent if self.sent else None


def entry_seed(cadence: str, step: str, metric: str) -> int:
    """A seed for ``p_best`` that depends only on the entry's identity, so output is stable."""
    digest = hashlib.sha256(f"ab:{cadence}:{step}:{metric}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _holm_all_below(p_values: list[float], alpha: float) -> bool:
    """Whether Holm's step-down procedure rejects every one of these hypotheses."""
    m = len(p_values)
    return all(p * (m - i) < alpha for i, p in enumerate(sorted(p_values)))


def _newcombe(
    s1: int, n1: int, s2: int, n2: int
) -> tuple[float | None, float | None, float | None]:
    """Difference p1 − p2 with Newcombe's hybrid score interval (method 10), from Wilson's."""
    if n1 == 0 or n2 == 0:
        return None, None, None
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson(s1, n1)
    l2, u2 = wilson(s2, n2)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, low, high


def judge(cadence: str, step: str, metric: str, arms: list[Arm], min_sample: int) -> dict[str, Any]:
    """One ``ab`` entry: each arm's rate, Wilson interval and P(best); status and winner.

    ``status`` is ``collecting`` while any touched arm has ``sent < min_sample`` (``winner``,
    ``p_value`` and ``test`` null); then ``winner`` when p < 0.05, else ``no_difference``.
    One touched arm is never a winner. Raises ValueError for a metric other than ``replies``
    or ``conversion``, a holdout arm outside ``conversion``, two holdout arms, duplicate
    variants or ``min_sample < 1``.
    """
    where = f"A/B {cadence}/{step}"
    if metric not in METRICS:
        raise ValueError(f"{where}: metric {metric!r} cannot be judged; use one of {METRICS}")
    if isinstance(min_sample, bool) or not isinstance(min_sample, int) or min_sample < 1:
        raise ValueError(f"{where}: min_sample must be an integer >= 1, got {min_sample!r}")
    names = [arm.variant for arm in arms]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{where}: variant listed twice: {', '.join(duplicates)}")
    holdouts = [arm for arm in arms if arm.holdout]
    if holdouts and metric != "conversion":
        raise ValueError(f"{where}: a holdout arm is only judged on conversion, not {metric}")
    if len(holdouts) > 1:
        raise ValueError(f"{where}: more than one holdout arm")
    touched = [arm for arm in arms if not arm.holdout]

    best = p_best([(arm.responses, arm.sent) for arm in arms], entry_seed(cadence, step, metric))
    rows = []
    for arm, probability in zip(arms, best, strict=True):
        low, high = wilson(arm.responses, arm.sent)
        rows.append(
            {
                "variant": arm.variant,
                "sent": arm.sent,
                "responses": arm.responses,
                "rate": arm.rate,
                "ci_low": low,
                "ci_high": high,
                "p_best": probability,
                "holdout": arm.holdout,
            }
        )

    collecting = not touched or any(arm.sent < min_sample for arm in touched)
    status, winner, p_value, test = "collecting", None, None, None
    if not collecting:
        status = "no_difference"
        if len(touched) >= 2:
            p_value, test = compare([(arm.responses, arm.sent) for arm in touched])
            if p_value is not None and p_value < ALPHA:
                winner = _clear_winner(touched)
                if winner is not None:
                    status = "winner"

    entry: dict[str, Any] = {
        "cadence": cadence,
        "step": step,
        "metric": metric,
        "status": status,
        "winner": winner,
        "p_value": p_value,
        "test": test,
        "min_sample": min_sample,
        "arms": rows,
        "lift": None,
        "lift_ci_low": None,
        "lift_ci_high": None,
        "lift_p_value": None,
        "lift_test": None,
    }
    if holdouts and touched:
        hold = holdouts[0]
        s1, n1 = sum(a.responses for a in touched), sum(a.sent for a in touched)
        lift, low, high = _newcombe(s1, n1, hold.responses, hold.sent)
        entry.update(lift=lift, lift_ci_low=low, lift_ci_high=high)
        if not collecting:
            entry["lift_p_value"], entry["lift_test"] = compare(
                [(s1, n1), (hold.responses, hold.sent)]
            )
    return entry


def _clear_winner(touched: list[Arm]) -> str | None:
    """The arm with the highest rate, if it beats each other arm (Holm) where there are > 2."""
    leader = max(touched, key=lambda arm: arm.responses / arm.sent)
    if len(touched) == 2:
        other = touched[1] if touched[0] is leader else touched[0]
        return leader.variant if leader.rate > other.rate else None
    pairwise = []
    for arm in touched:
        if arm is leader:
            continue
        p, _ = compare([(leader.responses, leader.sent), (arm.responses, arm.sent)])
        pairwise.append(1.0 if p is None else p)
    return leader.variant if _holm_all_below(pairwise, ALPHA) else None
