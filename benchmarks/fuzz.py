"""Fuzz run: every hypothesis test in ``tests/fuzz/`` at 1,000 examples each.

Run: ``python benchmarks/fuzz.py [--examples 1000] [--seed N] [-k EXPR] [--postgresql]``

Runs pytest on ``tests/fuzz/`` with ``OUTREACH_FUZZ_EXAMPLES`` set (the normal suite runs
40 per test) and prints, per test: the examples run (test cases hypothesis executed, counted
from its observability callbacks, so the figure is what ran, not what was asked for; a
few more than asked when explicit ``@example`` cases are counted too), failing examples (a
crash, a 500, an exception other than the expected error; at least 1 for a failed test,
since a failing ``@example`` stops the test before it is counted), examples hypothesis
discarded as invalid (filtered or too large to generate), and the time. Exits 1 when any
test failed, and prints pytest's report of the failure (the shrunk example) above the table.

``--postgresql`` runs the store-backed tests on the local PostgreSQL server instead of
SQLite (``OUTREACH_TEST_DATABASE=postgresql``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FUZZ_TESTS = REPO / "tests" / "fuzz"


class FuzzStats:
    """A pytest plugin that counts each hypothesis test's test cases by outcome."""

    def __init__(self) -> None:
        #: nodeid -> (test cases by status, seconds, pytest outcome)
        self.rows: dict[str, tuple[Counter[str], float, str]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        """Count the test cases hypothesis runs inside this test's call."""
        from hypothesis.internal import observability

        # Counting needs the observability callbacks, not the line coverage hypothesis
        # would otherwise trace for every example (several times slower on Python 3.11);
        # hypothesis reads this attribute per test and supports setting it.
        observability.OBSERVABILITY_COLLECT_COVERAGE = False
        counts: Counter[str] = Counter()

        def observe(observation: Any) -> None:
            if observation.type == "test_case":
                counts[observation.status] += 1

        observability.add_observability_callback(observe)
        start = time.perf_counter()
        try:
            yield
        finally:
            observability.remove_observability_callback(observe)
            self.rows[item.nodeid] = (counts, time.perf_counter() - start, "?")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep each test's outcome; a failed setup or teardown fails the test too."""
        counts, seconds, outcome = self.rows.get(report.nodeid, (Counter(), 0.0, "?"))
        if (report.when == "call" or report.failed) and outcome != "failed":
            outcome = report.outcome
        self.rows[report.nodeid] = (counts, seconds, outcome)


def main(argv: list[str] | None = None) -> int:
    """Run the fuzz tests and print the table; 0 when every test passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1000, help="examples per test")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default random)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    parser.add_argument("--postgresql", action="store_true", help="store tests on PostgreSQL")
    args = parser.parse_args(argv)

    # Read by the test modules when pytest imports them, so set before pytest.main.
    os.environ["OUTREACH_FUZZ_EXAMPLES"] = str(args.examples)
    if args.postgresql:
        os.environ["OUTREACH_TEST_DATABASE"] = "postgresql"
    options = [str(FUZZ_TESTS), "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO)]
    if args.seed is not None:
        options += ["--hypothesis-seed", str(args.seed)]
    if args.keyword:
        options += ["-k", args.keyword]

    stats = FuzzStats()
    started = time.perf_counter()
    code = pytest.main(options, plugins=[stats])
    total = time.perf_counter() - started

    print()
    print(f"fuzz run: {args.examples} examples asked per test, database {_database()}")
    header = f"{'test':<76} {'examples':>9} {'failing':>8} {'invalid':>8} {'time':>8}  result"
    print(header)
    print("-" * len(header))
    failed = 0
    for nodeid, (counts, seconds, outcome) in sorted(stats.rows.items()):
        ran = counts["passed"] + counts["failed"]
        failed += outcome != "passed"
        # A failing @example stops the test before hypothesis reports it as a test case.
        failing = max(counts["failed"], 1) if outcome == "failed" else counts["failed"]
        name = nodeid.removeprefix("tests/fuzz/")
        print(
            f"{name:<76} {ran:>9} {failing:>8} {counts['gave_up']:>8} {seconds:>7.1f}s  {outcome}"
        )
    print("-" * len(header))
    print(f"{len(stats.rows)} tests, {failed} failed, {total:.1f}s in all")
    if not stats.rows:
        print("no fuzz tests ran", file=sys.stderr)
        return 1
    return 0 if code == 0 and failed == 0 else 1


def _database() -> str:
    return os.environ.get("OUTREACH_TEST_DATABASE", "sqlite")


if __name__ == "__main__":
    sys.exit(main())
