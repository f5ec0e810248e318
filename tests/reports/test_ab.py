"""The A/B judgement: collecting, winner and no difference, on hand-computed counts."""

from __future__ import annotations

import math

import pytest
from exact_stats import exact_fisher_rx2

from outreach.reports.ab import Arm, entry_seed, judge
from outreach.reports.stats import wilson

ARM_KEYS = {"variant", "sent", "responses", "rate", "ci_low", "ci_high", "p_best", "holdout"}


def test_an_entry_has_the_contract_keys() -> None:
    entry = judge("c", "s", "replies", [Arm("a", 10, 1), Arm("b", 10, 2)], min_sample=5)
    assert {
        "cadence",
        "step",
        "metric",
        "status",
        "winner",
        "p_value",
        "arms",
        "min_sample",
        "test",
        "lift",
    } <= set(entry)
    assert (entry["cadence"], entry["step"], entry["metric"]) == ("c", "s", "replies")
    assert all(set(arm) == ARM_KEYS for arm in entry["arms"])


@pytest.mark.parametrize("metric", ["opens", "clicks", "open", ""])
def test_only_replies_and_conversion_are_judged(metric: str) -> None:
    with pytest.raises(ValueError, match=r"A/B c/s: metric .* cannot be judged"):
        judge("c", "s", metric, [Arm("a", 500, 100), Arm("b", 500, 300)], min_sample=100)


def test_zero_sends_are_collecting_with_unknown_rates() -> None:
    entry = judge("c", "s", "replies", [Arm("a", 0, 0), Arm("b", 0, 0)], min_sample=100)
    assert entry["status"] == "collecting"
    assert entry["winner"] is None and entry["p_value"] is None and entry["test"] is None
    for arm in entry["arms"]:
        assert arm["rate"] is None and arm["ci_low"] is None and arm["ci_high"] is None
        assert arm["p_best"] == 0.5


def test_one_arm_is_collecting_then_no_difference_never_a_winner() -> None:
    early = judge("c", "s", "replies", [Arm("a", 99, 30)], min_sample=100)
    assert early["status"] == "collecting"
    done = judge("c", "s", "replies", [Arm("a", 150, 30)], min_sample=100)
    assert done["status"] == "no_difference"
    assert done["winner"] is None and done["p_value"] is None and done["test"] is None
    assert done["arms"][0]["rate"] == 0.2
    assert done["arms"][0]["p_best"] == 1.0


def test_min_sample_boundary_99_collects_and_100_judges() -> None:
    # 5/100 against 40/100 is as clear as a difference gets; 99 sends still wait.
    early = judge("c", "s", "replies", [Arm("a", 99, 5), Arm("b", 100, 40)], min_sample=100)
    assert early["status"] == "collecting"
    assert early["winner"] is None and early["p_value"] is None
    ready = judge("c", "s", "replies", [Arm("a", 100, 5), Arm("b", 100, 40)], min_sample=100)
    assert ready["status"] == "winner" and ready["winner"] == "b"
    assert ready["test"] == "fisher"
    assert ready["p_value"] == pytest.approx(exact_fisher_rx2([(5, 95), (40, 60)]), rel=1e-6)


def test_a_clear_winner_on_large_arms_by_the_z_test() -> None:
    arms = [Arm("a", 1000, 100), Arm("b", 1000, 150)]
    entry = judge("interview", "thank-you", "replies", arms, min_sample=100)
    se = math.sqrt(0.125 * 0.875 * 0.002)
    assert entry["test"] == "z"
    assert entry["p_value"] == pytest.approx(math.erfc(0.05 / se / math.sqrt(2)), rel=1e-9)
    assert (entry["status"], entry["winner"]) == ("winner", "b")
    a, b = entry["arms"]
    assert (a["rate"], b["rate"]) == (0.1, 0.15)
    assert (a["ci_low"], a["ci_high"]) == wilson(100, 1000)
    assert b["p_best"] > 0.99 and a["p_best"] == pytest.approx(1 - b["p_best"])


def test_small_counts_go_to_fisher() -> None:
    arms = [Arm("a", 12, 9), Arm("b", 12, 2)]
    entry = judge("c", "s", "replies", arms, min_sample=10)
    assert entry["test"] == "fisher"
    assert entry["p_value"] == pytest.approx(exact_fisher_rx2([(9, 3), (2, 10)]), rel=1e-9)
    assert entry["p_value"] < 0.05
    assert entry["winner"] == "a"


def test_a_difference_short_of_significance_is_no_difference() -> None:
    entry = judge("c", "s", "replies", [Arm("a", 100, 10), Arm("b", 100, 15)], min_sample=100)
    assert entry["p_value"] == pytest.approx(exact_fisher_rx2([(10, 90), (15, 85)]), rel=1e-9)
    assert entry["p_value"] > 0.05
    assert (entry["status"], entry["winner"]) == ("no_difference", None)


def test_tied_arms_are_no_difference_with_equal_p_best() -> None:
    entry = judge("c", "s", "replies", [Arm("a", 200, 20), Arm("b", 200, 20)], min_sample=100)
    assert entry["status"] == "no_difference"
    assert entry["p_value"] == pytest.approx(1.0)
    assert [arm["p_best"] for arm in entry["arms"]] == [0.5, 0.5]


def test_no_responses_at_all_is_no_difference_without_a_test() -> None:
    entry = judge("c", "s", "replies", [Arm("a", 200, 0), Arm("b", 200, 0)], min_sample=100)
    assert (entry["status"], entry["p_value"], entry["test"]) == ("no_difference", None, None)


def test_three_arms_with_a_tie_at_the_top_name_no_winner() -> None:
    arms = [Arm("a", 200, 60), Arm("b", 200, 60), Arm("c", 200, 10)]
    entry = judge("c", "s", "replies", arms, min_sample=100)
    assert entry["test"] == "chi2" and entry["p_value"] < 0.001
    assert (entry["status"], entry["winner"]) == ("no_difference", None)
    assert entry["arms"][0]["p_best"] == entry["arms"][1]["p_best"]


def test_three_arms_with_one_clearly_best_name_it() -> None:
    arms = [Arm("a", 200, 20), Arm("b", 200, 60), Arm("c", 200, 22)]
    entry = judge("c", "s", "replies", arms, min_sample=100)
    assert (entry["status"], entry["winner"], entry["test"]) == ("winner", "b", "chi2")


def test_holdout_gives_lift_on_conversion() -> None:
    arms = [Arm("a", 300, 30), Arm("b", 300, 36), Arm("holdout", 60, 3, holdout=True)]
    entry = judge("c", "s", "conversion", arms, min_sample=100)
    # Touched: 66 of 600 = 0.11; held out: 3 of 60 = 0.05.
    assert entry["lift"] == pytest.approx(0.06)
    l1, u1 = wilson(66, 600)
    l2, u2 = wilson(3, 60)
    assert entry["lift_ci_low"] == pytest.approx(0.06 - math.hypot(0.11 - l1, u2 - 0.05))
    assert entry["lift_ci_high"] == pytest.approx(0.06 + math.hypot(u1 - 0.11, 0.05 - l2))
    assert entry["lift_test"] == "fisher"
    assert entry["lift_p_value"] == pytest.approx(exact_fisher_rx2([(66, 534), (3, 57)]), rel=1e-6)
    # The holdout's 60 < min_sample does not hold the judgement of the touched arms.
    assert entry["status"] == "no_difference"
    assert entry["arms"][2]["holdout"] is True
    assert sum(arm["p_best"] for arm in entry["arms"]) == pytest.approx(1.0)


def test_no_holdout_means_no_lift() -> None:
    entry = judge("c", "s", "conversion", [Arm("a", 300, 30)], min_sample=100)
    assert entry["lift"] is None and entry["lift_ci_low"] is None


def test_a_holdout_is_not_judged_on_replies() -> None:
    with pytest.raises(ValueError, match="only judged on conversion"):
        judge("c", "s", "replies", [Arm("a", 300, 30), Arm("h", 30, 0, holdout=True)], 100)


def test_bad_arms_and_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"arm 'a': responses \(11\) exceed sent \(10\)"):
        Arm("a", 10, 11)
    with pytest.raises(ValueError, match="arm 'b': sent must be a non-negative integer"):
        Arm("b", -1, 0)
    with pytest.raises(ValueError, match="variant listed twice: a"):
        judge("c", "s", "replies", [Arm("a", 1, 0), Arm("a", 2, 0)], 100)
    with pytest.raises(ValueError, match="min_sample must be an integer >= 1"):
        judge("c", "s", "replies", [Arm("a", 1, 0)], 0)
    with pytest.raises(ValueError, match="more than one holdout arm"):
        judge("c", "s", "conversion", [Arm("h1", 1, 0, True), Arm("h2", 1, 0, True)], 1)


def test_output_is_reproducible_and_seeded_by_the_entry() -> None:
    arms = [Arm("a", 150, 20), Arm("b", 150, 27)]
    assert judge("c", "s", "replies", arms, 100) == judge("c", "s", "replies", arms, 100)
    assert entry_seed("c", "s", "replies") == entry_seed("c", "s", "replies")
    assert entry_seed("c", "s", "replies") != entry_seed("c", "s", "conversion")
