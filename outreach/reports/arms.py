"""Per-step figures: response rate by step, and the A/B arms of each step with variants.

A step's arms are its variants (``a`` for the step's own template, then ``b``, ``c``…
for ``variants``), every configured arm listed even with no sends. Two metrics per step:
``replies`` (touches with an attributed reply ÷ touches sent) and ``conversion``
(converted touches ÷ touches old enough to have converted, or that did). A step with
``holdout`` gets a no-contact arm in its ``conversion`` entry only.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import case, func, select

from outreach.cadence import CadenceConfig, Step
from outreach.reports.query import WorkTables

__all__ = [
    "ArmCounts",
    "StepArms",
    "StepCell",
    "arm_names",
    "step_arms",
    "step_cells",
    "step_rates",
]


@dataclass
class ArmCounts:
    """One arm's counts: ``sent`` touches, ``replied`` touches, ``converted`` of
    ``conversion_sent`` (the touches a conversion rate can be judged on)."""

    variant: str
    sent: int = 0
    replied: int = 0
    converted: int = 0
    conversion_sent: int = 0


@dataclass
class StepArms:
    """The arms of one step with variants or a holdout (``holdout`` None without one)."""

    cadence: str
    step: str
    min_sample: int
    arms: list[ArmCounts] = field(default_factory=list)
    holdout: ArmCounts | None = None


def arm_names(step: Step) -> list[str]:
    """The variant names the engine writes: ``a`` for the template, ``b``… for variants."""
    return list(string.ascii_lowercase[: 1 + len(step.variants)])


class StepCell(NamedTuple):
    """Counts of the window's sent or holdout rows of one (cadence, step, status, channel,
    variant): rows, rows with a human reply, converted rows, conversion-eligible rows."""

    cadence: str
    step: str
    status: str
    channel: str | None
    variant: str | None
    rows: int
    replied: int
    converted: int
    eligible: int


def step_cells(work: WorkTables) -> list[StepCell]:
    """One pass over the work table for both :func:`step_arms` and :func:`step_rates` (the
    cells are bounded by the cadence file, not by the ledger)."""
    rt = work.touches
    eligible = (rt.c.mature + rt.c.converted) > 0
    keys = (rt.c.cadence_id, rt.c.step_id, rt.c.status, rt.c.channel, rt.c.variant)
    rows = work.conn.execute(
        select(
            *keys,
            func.count(),
            func.sum(case((rt.c.replies > 0, 1), else_=0)),
            func.sum(rt.c.converted),
            func.sum(case((eligible, 1), else_=0)),
        )
        .where(rt.c.status.in_(("sent", "holdout")))
        .group_by(*keys)
    ).all()
    return [
        StepCell(c, s, status, channel, variant, int(n), int(r or 0), int(v or 0), int(e or 0))
        for c, s, status, channel, variant, n, r, v, e in rows
    ]


def step_arms(cells: list[StepCell], config: CadenceConfig) -> list[StepArms]:
    """Arms of every configured step with variants or a holdout, from the window's rows."""
    counts: dict[tuple[str, str, str, str | None], list[int]] = {}
    for cell in cells:
        total = counts.setdefault((cell.cadence, cell.step, cell.status, cell.variant), [0] * 4)
        for i, value in enumerate((cell.rows, cell.replied, cell.converted, cell.eligible)):
            total[i] += value
    result = []
    for cadence in config.cadences:
        for step in cadence.steps:
            if not step.variants and not step.holdout:
                continue
            entry = StepArms(cadence.id, step.id, step.min_sample)
            for name in arm_names(step):
                n, r, v, e = counts.get((cadence.id, step.id, "sent", name), (0, 0, 0, 0))
                entry.arms.append(ArmCounts(name, n, r, v, e))
            if step.holdout:
                held = [
                    value
                    for (c, s, status, _), value in counts.items()
                    if (c, s, status) == (cadence.id, step.id, "holdout")
                ]
                entry.holdout = ArmCounts(
                    "holdout",
                    sum(h[0] for h in held),
                    0,
                    sum(h[2] for h in held),
                    sum(h[3] for h in held),
                )
            result.append(entry)
    return result


def step_rates(cells: list[StepCell]) -> list[tuple[str, str, str | None, int, int]]:
    """``(cadence, step, channel, sent, replied)`` per step (channel None: all channels),
    plus one row per channel for steps sent on more than one."""
    per_channel: dict[tuple[str, str, str | None], list[int]] = {}
    for cell in cells:
        if cell.status == "sent":
            total = per_channel.setdefault((cell.cadence, cell.step, cell.channel), [0, 0])
            total[0] += cell.rows
            total[1] += cell.replied
    per_step: dict[tuple[str, str], list[tuple[str | None, int, int]]] = {}
    for (cadence, step, channel), (sent, replied) in sorted(
        per_channel.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
    ):
        per_step.setdefault((cadence, step), []).append((channel, sent, replied))
    result = []
    for (cadence, step), channels in per_step.items():
        result.append(
            (cadence, step, None, sum(c[1] for c in channels), sum(c[2] for c in channels))
        )
        if len(channels) > 1:
            result.extend((cadence, step, channel, n, r) for channel, n, r in channels)
    return result
