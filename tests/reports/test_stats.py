"""Wilson intervals, tests of difference and P(best) against hand-computed values."""

from __future__ import annotations

import math

import pytest
from exact_stats import exact_fisher_rx2, p_b_beats_a_exact

from outreach.reports.stats import compare, p_best, wilson


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
# method 3 (Wilson score without continuity correction).
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        (29, 29, 0.8830, 1.0),
        (5, 10, 0.2366, 0.7634),
    ],
)
def test_wilson_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    got_low, got_high = wilson(successes, n)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_of_nothing_sent_is_unknown() -> None:
    assert wilson(0, 0) == (None, None)


def test_wilson_bounds_at_zero_and_all_are_exact() -> None:
    assert wilson(0, 7)[0] == 0.0
    assert wilson(7, 7)[1] == 1.0


@pytest.mark.parametrize(("successes", "n"), [(11, 10), (-1, 10), (1, -1), (1.5, 3), (True, 3)])
def test_wilson_refuses_impossible_counts(successes: object, n: object) -> None:
    with pytest.raises(ValueError, match="wilson"):
        wilson(successes, n)  # type: ignore[arg-type]


def test_wilson_agrees_with_statsmodels() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for successes, n in [(0, 1), (3, 17), (50, 100), (999, 1000), (12, 4000)]:
        low, high = proportion.proportion_confint(successes, n, alpha=0.05, method="wilson")
        assert wilson(successes, n) == pytest.approx((low, high), abs=1e-12)


def test_z_test_agrees_with_statsmodels() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for arms in ([(100, 1000), (150, 1000)], [(480, 5000), (530, 5200)]):
        _, expected = proportion.proportions_ztest([s for s, _ in arms], [n for _, n in arms])
        assert compare(arms) == (pytest.approx(expected, rel=1e-9), "z")


def test_two_small_arms_use_fishers_exact_test() -> None:
    # [[8, 2], [1, 5]]: two-sided p = sum of the hypergeometric tables as likely or less.
    p, test = compare([(8, 10), (1, 6)])
    assert test == "fisher"
    assert p == pytest.approx(exact_fisher_rx2([(8, 2), (1, 5)]), rel=1e-9)
    assert p == pytest.approx(0.034965034965, rel=1e-9)


def test_fewer_than_a_thousand_sends_go_to_fisher_and_a_thousand_to_z() -> None:
    assert compare([(50, 500), (60, 499)])[1] == "fisher"
    assert compare([(50, 500), (60, 500)])[1] == "z"


def test_a_small_expected_cell_goes_to_fisher_even_when_the_total_is_large() -> None:
    # Expected successes 1.5 per arm: the normal approximation would be wrong here.
    p, test = compare([(0, 2000), (3, 2000)])
    assert test == "fisher"
    # Tables as likely or less than the observed: all three successes in one arm or the other.
    assert p == pytest.approx(2 * math.comb(2000, 3) / math.comb(4000, 3), rel=1e-9)


def test_large_arms_use_the_pooled_two_proportion_z_test() -> None:
    # pooled 250/2000 = 0.125; se = sqrt(0.125 * 0.875 * (1/1000 + 1/1000)); z = 0.05 / se.
    se = math.sqrt(0.125 * 0.875 * 0.002)
    expected = math.erfc((0.05 / se) / math.sqrt(2))
    p, test = compare([(100, 1000), (150, 1000)])
    assert test == "z"
    assert p == pytest.approx(expected, rel=1e-9)
    assert p == pytest.approx(0.000723, abs=5e-6)


def test_three_large_arms_use_chi_square() -> None:
    # Expected 30 successes and 270 failures per arm; chi2 = 2*(100/30) + 2*(100/270) on 2 df,
    # whose survival function is exp(-x/2).
    chi2 = 2 * 100 / 30 + 2 * 100 / 270
    p, test = compare([(30, 300), (40, 300), (20, 300)])
    assert test == "chi2"
    assert p == pytest.approx(math.exp(-chi2 / 2), rel=1e-9)


def test_three_small_arms_use_fisher_by_monte_carlo_close_to_the_exact_value() -> None:
    arms = [(3, 10), (5, 10), (1, 10)]
    p, test = compare(arms)
    assert test == "fisher"
    assert p == pytest.approx(exact_fisher_rx2([(3, 7), (5, 5), (1, 9)]), abs=0.015)
    assert compare(arms) == (p, test)  # seeded by the table: the same answer every time


@pytest.mark.parametrize(
    "arms",
    [
        [],
        [(3, 10)],
        [(0, 0), (1, 10)],
        [(0, 10), (0, 12)],
        [(10, 10), (5, 5)],
        [(0, 0), (0, 0)],
    ],
)
def test_nothing_to_compare_gives_no_p_value(arms: list[tuple[int, int]]) -> None:
    assert compare(arms) == (None, None)


def test_identical_arms_do_not_differ() -> None:
    assert compare([(20, 200), (20, 200)]) == (pytest.approx(1.0), "fisher")


def test_compare_names_the_bad_arm() -> None:
    with pytest.raises(ValueError, match=r"arms\[1\]"):
        compare([(1, 10), (11, 10)])
    with pytest.raises(ValueError, match=r"arms\[0\]"):
        compare([(1, 2, 3)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("a", "b"),
    [((10, 100), (15, 100)), ((3, 7), (1, 9)), ((0, 0), (2, 5)), ((40, 1000), (52, 1000))],
)
def test_p_best_of_two_arms_matches_the_closed_form(a: tuple[int, int], b: tuple[int, int]) -> None:
    exact = p_b_beats_a_exact(a, b)
    got = p_best([a, b], seed=7)
    assert got[1] == pytest.approx(exact, abs=0.005)
    assert sum(got) == pytest.approx(1.0)


def test_p_best_is_reproducible_for_a_seed() -> None:
    arms = [(10, 100), (12, 100), (9, 100)]
    assert p_best(arms, seed=3) == p_best(arms, seed=3)


def test_identical_arms_get_exactly_equal_p_best() -> None:
    three = p_best([(5, 10), (5, 10), (5, 10)], seed=11)
    assert three[0] == three[1] == three[2] == pytest.approx(1 / 3)
    two_tied = p_best([(30, 100), (30, 100), (2, 100)], seed=11)
    assert two_tied[0] == two_tied[1]
    assert two_tied[2] < 0.001
    assert p_best([(0, 0), (0, 0)], seed=1) == [0.5, 0.5]


def test_p_best_of_one_or_no_arm() -> None:
    assert p_best([(3, 9)], seed=1) == [1.0]
    assert p_best([], seed=1) == []
