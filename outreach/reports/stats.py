"""Proportions and their comparison: Wilson intervals, tests of difference, P(best).

The A/B judgement (``outreach.reports.ab``) is built on these three functions; they take plain
counts so they can be checked against hand-computed values.

- ``wilson(successes, n)``: the Wilson score interval, 95 % by default.
- ``compare(arms)``: a p-value for "the arms' rates differ", with the test used:
  two arms: Fisher's exact test (``fisher``) when the table is small (fewer than 1000 sends in all,
  or an expected cell below 5), else the pooled two-proportion z-test (``z``);
  more arms: Pearson's chi-square test of independence (``chi2``) when every expected cell is at
  least 5, else Fisher's test of the r×2 table (``fisher``), whose p-value SciPy estimates by
  Monte Carlo over tables with the same margins (seeded by the table, so the answer is stable).
- ``p_best(arms, seed)``: the posterior probability that each arm has the highest rate, each rate
  Beta(1 + s, 1 + n − s) (a uniform prior), by Monte Carlo.

Arms are ``(successes, n)`` pairs, e.g. ``(responses, sent)``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

Z_95 = 1.959963984540054
"""The two-sided 95 % normal quantile."""

SMALL_TOTAL = 1000
"""Two-arm tables with fewer sends in all go to Fisher's exact test (exact and cheap there)."""

MIN_EXPECTED = 5
"""An expected cell below this makes the normal approximations unreliable."""

FISHER_RESAMPLES = 20_000
"""Monte Carlo tables for Fisher's r×2 test (standard error of p below 0.004)."""

P_BEST_DRAWS = 100_000
"""Posterior draws: each P(best) has a standard error of at most 0.0016 (±0.005 at 3 SE)."""


def _check_counts(successes: int, n: int, where: str) -> None:
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{where}: {name} must be an integer, got {value!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"{where}: need 0 <= successes <= n, got successes={successes}, n={n}")


def wilson(successes: int, n: int, z: float = Z_95) -> tuple[float | None, float | None]:
    """The Wilson score interval for ``successes`` out of ``n``; ``(None, None)`` when n = 0.

    >>> tuple(round(x, 4) for x in wilson(81, 263))
    (0.2553, 0.3662)
    """
    _check_counts(successes, n, "wilson")
    if n == 0:
        return None, None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding would leave it a hair off.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def _table(arms: Sequence[tuple[int, int]]) -> np.ndarray:
    for i, arm in enumerate(arms):
        if len(arm) != 2:
            raise ValueError(f"arms[{i}]: expected (successes, n), got {arm!r}")
        _check_counts(arm[0], arm[1], f"arms[{i}]")
    return np.array([[s, n - s] for s, n in arms], dtype=np.int64)


def _table_seed(table: np.ndarray) -> int:
    digest = hashlib.sha256(table.tobytes()).digest()
    return int.from_bytes(digest[:8], "big")


def compare(arms: Sequence[tuple[int, int]]) -> tuple[float | None, str | None]:
    """The p-value that the arms' rates differ and the test used (``fisher``, ``z``, ``chi2``).

    ``(None, None)`` when nothing can be tested: fewer than two arms, an arm with nothing sent,
    or no variation at all (every arm 0 % or every arm 100 %).

    >>> compare([(8, 10), (1, 6)])
    (0.034965034965034975, 'fisher')
    """
    table = _table(arms)
    if len(arms) < 2:
        return None, None
    sent = table.sum(axis=1)
    successes = table[:, 0].sum()
    total = sent.sum()
    if (sent == 0).any() or successes == 0 or successes == total:
        return None, None
    expected = np.outer(sent, table.sum(axis=0)) / total
    small = bool((expected < MIN_EXPECTED).any())
    if len(arms) == 2:
        if small or total < SMALL_TOTAL:
            return float(sps.fisher_exact(table).pvalue), "fisher"
        (s1, n1), (s2, n2) = arms
        pooled = successes / total
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = (s1 / n1 - s2 / n2) / se
        return float(2 * sps.norm.sf(abs(z))), "z"
    if small:
        method = sps.MonteCarloMethod(
            n_resamples=FISHER_RESAMPLES, rng=np.random.default_rng(_table_seed(table))
        )
        return float(sps.fisher_exact(table, method=method).pvalue), "fisher"
    return float(sps.chi2_contingency(table, correction=False).pvalue), "chi2"


def p_best(arms: Sequence[tuple[int, int]], seed: int) -> list[float]:
    """The probability that each arm's rate is the highest, under Beta(1 + s, 1 + n − s).

    Monte Carlo with ``numpy.random.default_rng(seed)``; arms with identical counts share their
    probability equally (they are exchangeable, so the exact answers are equal too). The list
    sums to 1.

    >>> [round(p, 2) for p in p_best([(5, 10), (5, 10)], seed=1)]
    [0.5, 0.5]
    """
    table = _table(arms)
    if len(arms) == 0:
        return []
    if len(arms) == 1:
        return [1.0]
    rng = np.random.default_rng(seed)
    draws = rng.beta(1 + table[:, 0], 1 + table[:, 1], size=(P_BEST_DRAWS, len(arms)))
    wins = np.bincount(draws.argmax(axis=1), minlength=len(arms)) / P_BEST_DRAWS
    probabilities = [float(w) for w in wins]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (s, f) in enumerate(table.tolist()):
        groups.setdefault((s, f), []).append(i)
    for members in groups.values():
        share = sum(probabilities[i] for i in members) / len(members)
        for i in members:
            probabilities[i] = share
    return probabilities
