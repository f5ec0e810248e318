"""Exact reference values the statistics tests compare against, written out from the definitions."""

from __future__ import annotations

import math
from itertools import product


def exact_fisher_rx2(table: list[tuple[int, int]]) -> float:
    """Fisher's exact p for an r×2 table by enumerating every table with the same margins."""
    rows = [s + f for s, f in table]
    successes = sum(s for s, _ in table)

    def probability(cells: tuple[int, ...]) -> float:
        total = sum(rows)
        ways = math.prod(math.comb(n, k) for n, k in zip(rows, cells, strict=True))
        return ways / math.comb(total, successes)

    observed = probability(tuple(s for s, _ in table))
    p = 0.0
    for cells in product(*(range(n + 1) for n in rows)):
        if sum(cells) == successes:
            q = probability(cells)
            if q <= observed * (1 + 1e-7):
                p += q
    return p


def p_b_beats_a_exact(a: tuple[int, int], b: tuple[int, int]) -> float:
    """P(rate_b > rate_a) for Beta(1+s, 1+n-s) posteriors: Evan Miller's closed form."""
    alpha_a, beta_a = 1 + a[0], 1 + a[1] - a[0]
    alpha_b, beta_b = 1 + b[0], 1 + b[1] - b[0]

    def log_beta(x: float, y: float) -> float:
        return math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)

    return sum(
        math.exp(
            log_beta(alpha_a + i, beta_a + beta_b)
            - math.log(beta_b + i)
            - log_beta(1 + i, beta_b)
            - log_beta(alpha_a, beta_a)
        )
        for i in range(alpha_b)
    )
