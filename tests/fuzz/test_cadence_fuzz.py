"""Fuzz the cadence-file loader: any file either loads or is a ConfigError naming the file.

Random YAML-shaped structures, mutations of the shipped ``config/cadences.yaml`` (lines
dropped, doubled, re-indented, values swapped for hostile ones) and raw bytes. Whatever the
file holds, :func:`load_cadence_file` returns a config or raises :class:`ConfigError` whose
text names the file; no other exception ever escapes (a traceback is not an error message).

``OUTREACH_FUZZ_EXAMPLES`` sets the examples per test (40 in the normal suite);
``python benchmarks/fuzz.py`` runs 1,000.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.errors import ConfigError
from outreach.paths import default_config_dir

EXAMPLES = int(os.environ.get("OUTREACH_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SHIPPED = (default_config_dir() / "cadences.yaml").read_text(encoding="utf-8")
SHIPPED_LINES = SHIPPED.splitlines()

#: keys the schema knows, so random structures often reach the models' validators
KEYS = [
    "policy",
    "company",
    "stage_map",
    "cadences",
    "default_timezone",
    "default_region",
    "send_window",
    "start",
    "end",
    "days",
    "holidays",
    "max_touches",
    "count",
    "per",
    "min_gap",
    "channel_order",
    "sms_requires_consent",
    "sms_max_segments",
    "sendgrid_unsubscribe_group",
    "rate_limits",
    "email",
    "sms",
    "linkedin",
    "call",
    "x",
    "facebook",
    "name",
    "greenhouse",
    "lever",
    "hubspot",
    "id",
    "trigger",
    "stage",
    "stop_on",
    "steps",
    "after",
    "within",
    "on_late",
    "from",
    "repeat",
    "every",
    "max",
    "channel",
    "fallback",
    "template",
    "variants",
    "weight",
    "transactional",
    "sendgrid_template_id",
    "min_sample",
    "holdout",
    "when",
    "event",
    "no",
    "opened",
    "reply",
]
#: scalars that have broken YAML loaders and validators before
NASTY = [
    "2026-02-30",
    "2026-13-01",
    "2026-11-25 25:61:00",
    "!!int abc",
    "!!float x",
    "!!bool maybe",
    "!!timestamp soon",
    "!!binary '%%%'",
    "!!python/object:os.system x",
    "!!set {a: 1}",
    "!!omap [a]",
    "!!pairs 5",
    "!!null x",
    "!!str",
    "!!map [1]",
    "!!seq {a: 1}",
    "99999999999999999999999d",
    "99999999999999999999w",
    "1e400",
    "-1d",
    "0m",
    "30x",
    "99999999999999999999/s",
    "0/s",
    "24:00",
    "23:59",
    "9:30",
    "no",
    "~",
    "null",
    ".nan",
    ".inf",
    "-.inf",
    "0x1F",
    "0o17",
    "1_000",
    "'unterminated",
    '"unterminated',
    "[1, 2",
    "{a: 1",
    "&a [*a]",
    "*undefined",
    "&x",
    "? [1, 2]\n: 3",
    "- - - -",
    "\t\tx",
    ": :",
    "%YAML 1.1",
    "--- ---",
    "...",
    "|",
    ">-",
    "a" * 5000,
    "A" * 300 + "/" + "B" * 300,
    "Etc/../../../../etc/passwd",
    "/etc/passwd",
    "\x00",
    "\ufeff",
    "\u2028",
    "é",
    "☃",
    "d-" + "0" * 32,
    "d-xyz",
    "Europe/Paris",
    "US",
    "none",
    "ZZ",
    "america/new_york",
    "[" * 400 + "]" * 400,
    "{a: " * 200 + "1" + "}" * 200,
    "- " * 300 + "x",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(NASTY),
    st.sampled_from(KEYS),
)
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=6),
    ),
    max_leaves=40,
)


def leaf(*good: object) -> st.SearchStrategy:
    """A value that is usually one of ``good``, else anything (hostile ones first)."""
    return st.one_of(st.sampled_from(good), scalars, structures)


@st.composite
def cadence_shaped(draw: st.DrawFn) -> dict:
    """A file with the schema's shape, every value valid or hostile, so the models'
    validators and the cross-checks run on each of them."""
    step = st.fixed_dictionaries(
        {
            "id": leaf("s1", "s2", "x" * 65),
            "after": leaf("0m", "2h", "7d"),
            "template": leaf("checking_in", "t", "x" * 300, "nurture_intro"),
        },
        optional={
            "within": leaf("24h", "1h"),
            "on_late": leaf("send", "skip", "task"),
            "from": leaf("trigger", "previous"),
            "channel": leaf("email", "sms", "auto"),
            "fallback": leaf("sms", "email"),
            "repeat": leaf({"every": "14d", "max": 3}),
            "variants": leaf([{"template": "checking_in", "weight": 50}]),
            "transactional": leaf(True, False),
            "sendgrid_template_id": leaf("d-" + "a" * 32),
        },
    )
    cadence = st.fixed_dictionaries(
        {
            "id": leaf("c1", "c2"),
            "trigger": leaf({"stage": "applied"}, {"stage": "x"}),
            "steps": st.lists(step, max_size=3),
        },
        optional={"stop_on": leaf(["reply"], ["opt_out", "stage_change"])},
    )
    policy = st.fixed_dictionaries(
        {},
        optional={
            "default_timezone": leaf("UTC", "Europe/Paris"),
            "default_region": leaf("US", "GB"),
            "holidays": leaf("US", "none", None),
            "send_window": leaf({"start": "08:00", "end": "19:00", "days": ["mon"]}),
            "max_touches": leaf({"count": 2, "per": "7d"}),
            "min_gap": leaf("48h"),
            "channel_order": leaf(["email", "sms"]),
            "sms_max_segments": leaf(3),
            "sendgrid_unsubscribe_group": leaf(5),
            "rate_limits": leaf({"email": "50/s"}),
            "sms_requires_consent": leaf(True),
        },
    )
    return draw(
        st.fixed_dictionaries(
            {"cadences": st.lists(cadence, max_size=3)},
            optional={
                "policy": policy,
                "company": leaf({"name": "N"}),
                "stage_map": leaf({"lever": {"Offer": "offer"}}),
            },
        )
    )


@st.composite
def mutated_shipped(draw: st.DrawFn) -> str:
    """The shipped cadence file with a few random edits."""
    lines = list(SHIPPED_LINES)
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            lines = [""]
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(
            st.sampled_from(["drop", "double", "indent", "dedent", "value", "insert", "cut"])
        )
        line = lines[at]
        if edit == "drop":
            del lines[at]
        elif edit == "double":
            lines.insert(at, line)
        elif edit == "indent":
            lines[at] = " " * draw(st.integers(1, 7)) + line
        elif edit == "dedent":
            lines[at] = line.lstrip()
        elif edit == "value" and ":" in line:
            key = line.split(":", 1)[0]
            lines[at] = f"{key}: {draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=20)))}"
        elif edit == "insert":
            lines.insert(at, draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=40))))
        else:
            cut = draw(st.integers(0, len(line)))
            lines[at] = line[:cut]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with the shipped templates, where each example writes ``cadences.yaml``."""
    path = tmp_path_factory.mktemp("cadence-fuzz")
    shutil.copytree(default_config_dir() / "templates", path / "templates")
    yield path


def load(path: Path, data: bytes) -> None:
    """Write ``data`` as the cadence file and load it: a config, or a ConfigError naming
    the file. Any other exception fails the test."""
    path.write_bytes(data)
    try:
        config = load_cadence_file(path)
    except ConfigError as exc:
        text = str(exc)
        assert str(path) in text, text
        for problem in exc.problems:
            assert str(path) in problem, problem
        return
    assert isinstance(config, CadenceConfig)


@FUZZ
@given(structure=structures)
@example(structure={"policy": {"min_gap": "99999999999999999999999d"}})
@example(
    structure={
        "cadences": [
            {
                "id": "a",
                "trigger": {"stage": "applied"},
                "steps": [{"id": "s", "after": "9999999999999w", "template": "t"}],
            }
        ]
    }
)
@example(structure={"policy": {"default_timezone": "A" * 5000}})
@example(structure={"policy": {"default_timezone": "Etc/" + "x" * 300 + "/y"}})
def test_random_structures_load_or_raise_config_error(folder: Path, structure) -> None:
    """Any structure, dumped as YAML, loads or is a ConfigError naming the file."""
    text = yaml.safe_dump(structure, allow_unicode=True)
    load(folder / "cadences.yaml", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(structure=cadence_shaped())
@example(
    structure={
        "cadences": [
            {
                "id": "a",
                "trigger": {"stage": "applied"},
                "steps": [{"id": "s", "after": "1d", "channel": "email", "template": "t" * 300}],
            }
        ]
    }
)
def test_cadence_shaped_files_load_or_raise_config_error(folder: Path, structure) -> None:
    """Files of the schema's shape with valid or hostile values load or are a ConfigError
    naming the file (a 300-character template name once escaped as an OSError)."""
    text = yaml.safe_dump(structure, allow_unicode=True)
    load(folder / "cadences.yaml", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=mutated_shipped())
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: 2026-02-30"))
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: !!int abc"))
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: !!bool maybe"))
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: !!timestamp soon"))
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: " + "[" * 5000 + "]" * 5000))
@example(text=SHIPPED.replace("min_gap: 48h", "min_gap: &a [*a]"))
def test_mutated_shipped_file_loads_or_raises_config_error(folder: Path, text: str) -> None:
    """The shipped file with random edits loads or is a ConfigError naming the file."""
    load(folder / "cadences.yaml", text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
@example(data=b"\xff\xfe\x00p\x00o")
@example(data=b"- " * 2000)
def test_raw_bytes_load_or_raise_config_error(folder: Path, data: bytes) -> None:
    """Arbitrary bytes (not UTF-8, not YAML) load or are a ConfigError naming the file."""
    load(folder / "cadences.yaml", data)
