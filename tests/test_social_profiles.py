"""X and Facebook profiles: normalisation, import (good and bad values), the cadence file's
``x`` / ``facebook`` channels and caps, and what ``config check`` says of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from outreach.cadence import TASK_CHANNELS
from outreach.contacts import ContactError
from outreach.errors import ConfigError, RecordError
from outreach.profiles import (
    normalize_facebook,
    normalize_x,
    pick_profile,
    profile_kind,
    x_from_handle,
)
from outreach.records import normalize_record
from outreach.settings import Settings
from outreach.store.schema import CandidateRecord, ContactPoint
from outreach.systems import systems

# -- normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "@Jane_Doe",
        " @jane_doe ",
        "x.com/jane_doe",
        "https://x.com/Jane_Doe",
        "http://www.x.com/jane_doe/",
        "https://twitter.com/jane_doe?lang=en",
        "https://mobile.twitter.com/jane_doe/status/1234",
        "twitter.com/#!/jane_doe",
        "https://x.com/@jane_doe",
    ],
)
def test_x_handles_and_urls_become_one_canonical_url(raw: str) -> None:
    assert normalize_x(raw) == "https://x.com/jane_doe"


@pytest.mark.parametrize(
    "raw",
    [
        "jane_doe",  # a bare word: nothing says it is an X handle
        "@",
        "@this_handle_is_too_long",
        "@jane-doe",
        "https://x.com/home",
        "https://twitter.com/i/flow/login",
        "https://x.com/",
        "https://netflix.com/jane_doe",
        "https://x.company.com/jane",
        "jane@example.com",
    ],
)
def test_what_is_not_an_x_profile_is_refused_without_echoing_it(raw: str) -> None:
    with pytest.raises(ContactError) as info:
        normalize_x(raw)
    # one fixed message, whatever the value: logs never carry it
    assert str(info.value) == (
        "x_url is not an X profile (expected @name or https://x.com/name, "
        "name: up to 15 letters, digits or _)"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("facebook.com/Jane.Doe", "https://www.facebook.com/jane.doe"),
        ("https://www.facebook.com/jane.doe/", "https://www.facebook.com/jane.doe"),
        ("https://m.facebook.com/jane.doe?ref=bookmarks", "https://www.facebook.com/jane.doe"),
        ("http://fb.com/jane.doe", "https://www.facebook.com/jane.doe"),
        ("https://web.facebook.com/jane.doe#about", "https://www.facebook.com/jane.doe"),
        (
            "https://www.facebook.com/profile.php?id=100012345678901",
            "https://www.facebook.com/profile.php?id=100012345678901",
        ),
        (
            "facebook.com/profile.php?sk=about&id=0042",
            "https://www.facebook.com/profile.php?id=42",
        ),
        (
            "https://www.facebook.com/people/Jane-Doe/100012345678901/",
            "https://www.facebook.com/profile.php?id=100012345678901",
        ),
    ],
)
def test_facebook_profile_urls_become_one_canonical_url(raw: str, expected: str) -> None:
    assert normalize_facebook(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "jane.doe",
        "@jane.doe",
        "https://www.facebook.com/",
        "https://www.facebook.com/groups/123456",
        "https://www.facebook.com/profile.php",
        "https://www.facebook.com/sharer/sharer.php?u=x",
        "https://www.facebook.com/jd",  # usernames are at least five characters
        "https://notfacebook.com/jane.doe",
        "https://www.facebook.com/jane doe",
    ],
)
def test_what_is_not_a_facebook_profile_is_refused(raw: str) -> None:
    with pytest.raises(ContactError, match="facebook_url is not a Facebook profile URL"):
        normalize_facebook(raw)


@given(st.from_regex(r"[A-Za-z0-9_]{1,15}", fullmatch=True))
def test_every_valid_handle_round_trips(handle: str) -> None:
    if handle.lower() in {"home", "i", "search", "explore", "settings", "login", "signup"}:
        return
    url = normalize_x("@" + handle)
    assert url == f"https://x.com/{handle.lower()}"
    assert normalize_x(url) == url  # canonical is a fixed point
    assert normalize_x(f"https://twitter.com/{handle.upper()}") == url


def test_links_are_sorted_by_host_not_by_substring() -> None:
    assert profile_kind("https://x.com/ann") == "x"
    assert profile_kind("twitter.com/ann") == "x"
    assert profile_kind("https://www.facebook.com/ann.b") == "facebook"
    assert profile_kind("https://uk.linkedin.com/in/ann") == "linkedin"
    assert profile_kind("https://netflix.com/ann") is None
    assert profile_kind("https://x.com.evil.example/ann") is None
    assert profile_kind("not a url at all") is None
    links = ["https://netflix.com/a", "https://github.com/a", "https://twitter.com/a", None, 7]
    assert pick_profile(links, "x") == "https://twitter.com/a"
    assert pick_profile(links, "facebook") is None
    # A page of the site before the profile does not hide the profile.
    pages = ["https://twitter.com/intent/tweet?text=hi", "https://x.com/real_one"]
    assert pick_profile(pages, "x") == "https://x.com/real_one"
    groups = ["https://www.facebook.com/groups/123", "https://facebook.com/ann.lee"]
    assert pick_profile(groups, "facebook") == "https://facebook.com/ann.lee"
    # With no profile at all, the first link of the site is handed on (and then reported).
    assert pick_profile(pages[:1], "x") == pages[0]


def test_a_crm_handle_field_is_read_with_or_without_the_at() -> None:
    assert x_from_handle("jane_doe") == "@jane_doe"
    assert x_from_handle(" @jane_doe ") == "@jane_doe"
    assert x_from_handle("https://twitter.com/jane_doe") == "https://twitter.com/jane_doe"
    assert normalize_x(x_from_handle("Jane_Doe")) == "https://x.com/jane_doe"


# -- records ---------------------------------------------------------------------------------


def record(strict: bool = True, **raw: str):
    return normalize_record(
        {"source": "import", "external_id": "1", **raw},
        where="line 3",
        default_region="US",
        canonical_stage=lambda s, n: None,
        strict_contacts=strict,
    )


def test_a_record_carries_its_normalised_profiles_and_they_count_as_contact_points() -> None:
    only_x = record(x_url="@Ann")
    assert only_x.x_url == "https://x.com/ann" and only_x.facebook_url is None
    only_fb = record(facebook_url="fb.com/ann.codes", preferred_channel="Facebook")
    assert only_fb.facebook_url == "https://www.facebook.com/ann.codes"
    assert only_fb.preferred_channel == "facebook"
    with pytest.raises(RecordError, match=r"no contact point: .*x_url, facebook_url"):
        record()


def test_bad_profiles_are_reported_by_the_record_and_the_column() -> None:
    with pytest.raises(RecordError) as info:
        record(email="ann@example.com", x_url="https://x.com/home", facebook_url="ann")
    message = str(info.value)
    assert message.startswith("line 3 (import 1): ")
    assert "x_url is not an X profile" in message
    assert "facebook_url is not a Facebook profile URL" in message


def test_a_crm_record_drops_a_bad_profile_with_a_warning_when_another_contact_remains() -> None:
    kept = record(strict=False, email="ann@example.com", x_url="twitter.com/i/lists")
    assert kept.x_url is None and kept.email == "ann@example.com"
    assert kept.warnings == [
        "x_url is not an X profile (expected @name or https://x.com/name, "
        "name: up to 15 letters, digits or _)"
    ]
    with pytest.raises(RecordError, match="facebook_url"):
        record(strict=False, facebook_url="facebook.com/groups/1")


# -- import ----------------------------------------------------------------------------------

HEADER = "source,external_id,first_name,email,x_url,facebook_url,stage,owner_id\n"


def test_import_stores_profiles_and_names_the_bad_rows(cli, tmp_path: Path, engine) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        HEADER
        + "import,s1,Ann,ann@example.com,@Ann_Codes,facebook.com/Ann.Codes,applied,rec-1\n"
        + "import,s2,Bo,,https://twitter.com/bo_b,,applied,rec-1\n"
        + "import,s3,Cy,cy@example.com,x.com/home,,applied,rec-1\n"
        + "import,s4,Di,di@example.com,,https://facebook.com/groups/42,applied,rec-1\n"
        + "import,s5,Ed,,@ann_codes,,applied,rec-2\n"
    )
    result = cli("import", str(path), "--now", "2026-11-25T15:00:00Z")
    assert result.exit_code == 1, result.output
    assert "5 rows, 3 loaded" in result.stdout
    assert "line 4 (import s3): x_url is not an X profile" in result.stderr
    assert "line 5 (import s4): facebook_url is not a Facebook profile URL" in result.stderr
    assert "groups/42" not in result.stderr and "x.com/home" not in result.stderr
    with engine.connect() as conn:
        stored = {
            r.external_id: (r.x_url, r.facebook_url, r.person_id)
            for r in conn.execute(select(CandidateRecord))
        }
        points = {(c.kind, c.value) for c in conn.execute(select(ContactPoint))}
    assert stored["s1"][:2] == ("https://x.com/ann_codes", "https://www.facebook.com/ann.codes")
    assert stored["s2"][:2] == ("https://x.com/bo_b", None)
    # The same X profile is the same person, as the same LinkedIn profile is.
    assert stored["s5"][2] == stored["s1"][2]
    assert ("x", "https://x.com/ann_codes") in points
    assert ("facebook", "https://www.facebook.com/ann.codes") in points

    listed = cli("candidates", "--format", "csv")
    header = listed.stdout.splitlines()[0].split(",")
    assert header[header.index("linkedin_url") + 1 : header.index("linkedin_url") + 3] == [
        "x_url",
        "facebook_url",
    ]
    explained = cli("candidates", "--format", "json")
    people = json.loads(explained.stdout)
    ann = next(
        p
        for p in people
        if "import:s1" in [f"{r['source']}:{r['external_id']}" for r in p["records"]]
    )
    assert {c["kind"] for c in ann["contacts"]} == {"email", "x", "facebook"}


# -- the cadence file ------------------------------------------------------------------------

FILE = """\
policy:
  default_timezone: America/New_York
  channel_order: [email, x, facebook]
  rate_limits: {{email: 50/s, linkedin: 40/d{caps}}}
cadences:
  - id: social
    trigger: {{stage: applied}}
    steps:
      - {{id: tweet, after: 0m, channel: x, fallback: facebook, template: t}}
      - {{id: poke, after: 1d, channel: {second}, template: t}}
"""


def load(tmp_path: Path, *, caps: str = "", second: str = "facebook", task: bool = True):
    from outreach.cadence import load_cadence_file

    folder = tmp_path / "templates"
    folder.mkdir(exist_ok=True)
    (folder / "t.email.j2").write_text("Subject: Hi\n\nHello")
    if task:
        (folder / "t.task.j2").write_text("Title: Follow up\n\n{{ candidate.x_url }}")
    path = tmp_path / "cadences.yaml"
    path.write_text(FILE.format(caps=caps, second=second))
    return load_cadence_file(path)


def test_x_and_facebook_are_task_channels_with_default_caps(tmp_path: Path) -> None:
    assert {"x", "facebook"} <= TASK_CHANNELS
    config = load(tmp_path)
    limits = config.policy.rate_limits
    # Left out of rate_limits: their default daily cap, not uncapped.
    assert (limits["x"].count, limits["x"].seconds) == (25, 86400)
    assert (limits["facebook"].count, limits["facebook"].seconds) == (25, 86400)
    assert "call" not in limits  # an older channel left out stays as it was
    steps = config.cadences[0].steps
    assert config.channels_for(steps[0]) == ["x", "facebook"]
    assert config.policy.channel_order == ["email", "x", "facebook"]


def test_caps_given_in_the_file_win(tmp_path: Path) -> None:
    limits = load(tmp_path, caps=", x: 10/d, facebook: 3/d").policy.rate_limits
    assert (limits["x"].count, limits["facebook"].count) == (10, 3)


def test_a_bad_social_channel_or_cap_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, caps=", x: lots", second="instagram")
    message = str(info.value)
    assert "rate_limits" in message and "x" in message
    assert "instagram" in message


def test_an_x_step_needs_a_task_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"t\.task\.j2"):
        load(tmp_path, task=False)


def test_config_check_lists_x_and_facebook_as_task_channels(tmp_path: Path, monkeypatch) -> None:
    lines = {line.name: line for line in systems(Settings(_env_file=None), load(tmp_path))}  # type: ignore[call-arg]
    assert lines["x"].kind == "tasks" and lines["x"].on
    assert lines["facebook"].kind == "tasks" and lines["facebook"].on
    assert "linkedin" not in lines  # no step uses it
