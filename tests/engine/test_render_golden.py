"""The render stage's every output over the render benchmark's population, against a
golden sample made by the render stage as it was before the fast paths of issue 15's
second round (commit 8fef412): the same messages, tasks, data and strict errors, byte
for byte.

The sample (``render_golden.txt`` beside this file) holds one digest per occurrence:
its outcome, channel kind, template, variant, title, body, the message's subject, body,
template and provider data, and the reason of a skipped or deferred one. Two
populations: with a public URL (rating links; a tenth of the email on a SendGrid dynamic
template) and without one (every template and dynamic template that needs rating links
fails strictly, and its occurrence is skipped with the variable's name).

Regenerate (only when a change of output is intended) with
``python tests/engine/test_render_golden.py ROOT > tests/engine/render_golden.txt``,
ROOT being the checkout whose render stage is the reference.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("render_golden.txt")
#: (touches, public URL) of each population, in the sample's order
POPULATIONS = ((3000, True), (1000, False))


def load_benchmark(root: Path) -> ModuleType:
    """``benchmarks/render.py`` of checkout ``root`` (it puts ``root`` first on the path)."""
    spec = importlib.util.spec_from_file_location(
        "_render_benchmark", root / "benchmarks/render.py"
    )
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return module


def fixed_tokens(count: int) -> list[str]:
    """Rating tokens as long as real ones, the same on every run."""
    return [f"T{index:021d}" for index in range(count)]


def digest(occ: Any) -> str:
    """One occurrence's whole output, as a short digest."""
    message = occ.message
    fields = [
        occ.outcome,
        occ.kind,
        occ.template,
        occ.variant,
        occ.rating_token,
        occ.title,
        occ.body,
        occ.reason,
        occ.tally,
        occ.journal_rule,
        str(occ.defer_until),
    ]
    if message is not None:
        fields += [
            message.template,
            message.kind,
            message.subject,
            message.title,
            message.body,
            json.dumps(message.data, sort_keys=True, default=str),
        ]
    text = json.dumps(fields, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def outputs(root: Path) -> list[str]:
    """The digest of every occurrence of every population, rendered by ``root``'s stage."""
    bench = load_benchmark(root)
    render_module = sys.modules["outreach.engine.render"]
    real_tokens = render_module.new_rating_tokens
    render_module.new_rating_tokens = fixed_tokens
    try:
        config = bench.load_cadence_file(bench.default_config_dir() / "cadences.yaml")
        lines = []
        for touches, with_url in POPULATIONS:
            renderer = bench.Renderer(
                config,
                bench.TemplateStore(config.template_dir, bench.dynamic_check()),
                public_url=bench.PUBLIC_URL if with_url else None,
            )
            work = bench.batches(bench.make_due(config, touches), 500)
            for batch in work:
                renderer(batch, bench.NOW)
            lines += [digest(occ) for batch in work for occ in batch]
        return lines
    finally:
        render_module.new_rating_tokens = real_tokens


@pytest.fixture
def stage_outputs() -> list[str]:
    return outputs(ROOT)


def test_every_output_matches_the_stage_before_the_fast_paths(stage_outputs: list[str]) -> None:
    golden = GOLDEN.read_text().split()
    assert len(stage_outputs) == len(golden) == sum(n for n, _ in POPULATIONS)
    differ = [
        index for index, (a, b) in enumerate(zip(stage_outputs, golden, strict=True)) if a != b
    ]
    assert not differ, f"{len(differ)} occurrences differ, first at {differ[:10]}"


def test_the_sample_covers_every_outcome(stage_outputs: list[str]) -> None:
    """The populations reach messages, tasks, dynamic templates and strict errors alike."""
    bench = load_benchmark(ROOT)
    config = bench.load_cadence_file(bench.default_config_dir() / "cadences.yaml")
    renderer = bench.Renderer(
        config, bench.TemplateStore(config.template_dir, bench.dynamic_check()), public_url=None
    )
    work = bench.batches(bench.make_due(config, POPULATIONS[1][0]), 500)
    for batch in work:
        renderer(batch, bench.NOW)
    outcomes = {(occ.outcome, occ.kind or occ.tally) for batch in work for occ in batch}
    assert {("claimed", "email"), ("claimed", "sms"), ("task", "linkedin")} <= outcomes
    assert ("skipped", "template error") in outcomes
    reasons = {occ.reason for batch in work for occ in batch if occ.outcome == "skipped"}
    assert any("touch.rating_urls" in reason for reason in reasons)
    assert len(set(stage_outputs)) > len(stage_outputs) // 2  # not one output repeated


if __name__ == "__main__":
    print("\n".join(outputs(Path(sys.argv[1]).resolve())))
