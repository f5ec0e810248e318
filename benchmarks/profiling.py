"""Profile summaries the benchmarks print: the top functions by their own time.

A benchmark times its work without a profiler (cProfile slows Python code 1.5-2x), then
runs a second, usually smaller, pass under :func:`profiled` and prints
:func:`top_functions` so the next bottleneck is visible beside the figure::

    with profiled() as profile:
        run_the_work()
    print_top(top_functions(profile), "tick, 20,000 due")

Rows are plain dicts, so a child process can hand them to its parent as JSON.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["print_top", "profiled", "top_functions"]


@contextmanager
def profiled() -> Iterator[cProfile.Profile]:
    """Profile the body of the ``with`` block (this thread only)."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        yield profile
    finally:
        profile.disable()


def top_functions(profile: cProfile.Profile, count: int = 5) -> list[dict[str, Any]]:
    """The ``count`` functions with the most own time, with their share of the total."""
    stats = pstats.Stats(profile)
    total = sum(entry[2] for entry in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        _calls_primitive, calls, own, cumulative, _callers = entry
        rows.append(
            {
                "function": name,
                "where": _short(filename, line),
                "calls": calls,
                "own_s": own,
                "cumulative_s": cumulative,
                "share": own / total,
            }
        )
    rows.sort(key=lambda row: row["own_s"], reverse=True)
    return rows[:count]


def print_top(rows: list[dict[str, Any]], title: str) -> None:
    """Print the rows of :func:`top_functions` as a small table under ``title``."""
    print(f"profile, {title} (cProfile on: times inflated; top {len(rows)} by own time):")
    for row in rows:
        print(
            f"  {row['share']:6.1%}  own {row['own_s']:7.3f} s  cum {row['cumulative_s']:7.3f} s"
            f"  {row['calls']:>9,} calls  {row['function']}  ({row['where']})"
        )


def _short(filename: str, line: int) -> str:
    if filename == "~":
        return "built-in"
    parts = Path(filename).parts
    for anchor in ("site-packages", "outreach", "channels", "connectors", "benchmarks"):
        if anchor in parts:
            index = len(parts) - 1 - parts[::-1].index(anchor)
            start = index + 1 if anchor == "site-packages" else index
            return "/".join(parts[start:]) + f":{line}"
    return f"{Path(filename).name}:{line}"
