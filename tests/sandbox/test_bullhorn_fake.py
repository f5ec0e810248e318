"""The real Bullhorn connector against the Bullhorn sandbox fake, over loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.base import NoteRef, TaskSpec
from connectors.bullhorn import Bullhorn
from connectors.bullhorn_auth import BullhornLogin, RefreshTokenFile
from outreach.cadence import CadenceConfig, load_cadence_file
from outreach.clock import FixedClock, ManualTimer
from outreach.errors import ConfigError, PermanentError
from outreach.paths import default_config_dir
from outreach.records import normalize_record
from outreach.sandbox.base import RateWindow, SandboxServer
from outreach.sandbox.bullhorn import CORP_TOKEN, FakeBullhorn
from outreach.sandbox.bullhorn_where import compile_where
from outreach.sandbox.seed import RECRUITERS, Population

CLIENT, SECRET, REFRESH = "sandbox-bullhorn-client", "sandbox-bullhorn-secret", "rt-seed"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PEOPLE = list(Population(1_100))


class Clock:
    """A clock a test moves forward (the fake's sessions and tokens age by it)."""

    def __init__(self, now: datetime) -> None:
        self.at = now

    def now(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def config() -> CadenceConfig:
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[SandboxServer, dict]]:
    current: dict = {}

    def app(environ, start_response):
        return current["fake"](environ, start_response)

    with SandboxServer(app) as running:
        yield running, current


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def fake(server, clock) -> FakeBullhorn:
    fake = FakeBullhorn(PEOPLE, refresh_token=REFRESH, clock=clock)
    server[1]["fake"] = fake
    return fake


@pytest.fixture
def url(server, fake) -> str:
    return server[0].url


def connector(url: str, tmp_path: Path, *, clock=None, timer=None, **options) -> Bullhorn:
    timer = timer or ManualTimer()
    options.setdefault("refresh_token", REFRESH)
    login = BullhornLogin(
        options.pop("client_id", CLIENT),
        SECRET,
        auth_url=url + "/oauth",
        login_url=url + "/rest-services",
        token_file=RefreshTokenFile(tmp_path / "token", options.get("refresh_token")),
        **options,
    )
    return Bullhorn(
        login, clock=clock or FixedClock(NOW), sleep=timer.sleep, monotonic=timer.monotonic
    )


def sync(bullhorn: Bullhorn, cursor: str | None = None):
    pages = list(bullhorn.pages(cursor))
    records = [r for page in pages for r in page.records]
    problems = [p for page in pages for p in page.problems]
    return pages, records, problems


def test_a_full_sync_reads_every_candidate_once_with_its_stage(fake, url, tmp_path, config):
    pages, records, problems = sync(connector(url, tmp_path))
    assert not problems and pages[-1].done and len(pages) == 3  # 500 + 500 + 100
    assert sorted(r["external_id"] for r in records) == sorted(map(str, fake.candidates))
    by_id = {r["external_id"]: r for r in records}
    for person in PEOPLE[:60]:
        record = by_id[str(fake.candidate_id(person.index))]
        assert config.canonical_stage("bullhorn", record["stage"]) == person.stage
        assert record["owner_id"] == str(person.recruiter.bullhorn_id)
        normal = normalize_record(
            record,
            where="t",
            default_region="US",
            canonical_stage=config.canonical_stage,
            default_source="bullhorn",
        )
        assert normal.email == person.email


def test_an_incremental_read_sees_a_status_move_on_a_submission(fake, url, tmp_path, config):
    bullhorn = connector(url, tmp_path)
    first, _, _ = sync(bullhorn)
    moved = next(p for p in PEOPLE if p.stage == "applied")
    fake.move(moved.index, "interview", at=NOW + timedelta(hours=1))
    later = connector(url, tmp_path, clock=FixedClock(NOW + timedelta(hours=2)))
    pages, records, _ = sync(later, first[-1].cursor)
    assert [r["external_id"] for r in records] == [str(fake.candidate_id(moved.index))]
    assert config.canonical_stage("bullhorn", records[0]["stage"]) == "interview"
    assert json.loads(pages[-1].cursor) == {"since": (NOW + timedelta(hours=2)).isoformat()}


def test_a_killed_run_resumes_at_the_first_uncommitted_page(fake, url, tmp_path) -> None:
    bullhorn = connector(url, tmp_path)
    iterator = bullhorn.pages(None)
    first = next(iterator)
    iterator.close()  # killed after committing the first page
    _, rest, _ = sync(connector(url, tmp_path), first.cursor)
    ids = [r["external_id"] for r in first.records] + [r["external_id"] for r in rest]
    assert sorted(ids) == sorted(map(str, fake.candidates))  # nothing lost, nothing twice


def test_the_refresh_token_rotates_and_a_spent_one_is_refused(fake, url, tmp_path) -> None:
    connector(url, tmp_path).login.session()
    assert REFRESH not in fake.refresh_tokens  # spent
    stored = json.loads((tmp_path / "token").read_text())["refresh_token"]
    assert stored in fake.refresh_tokens
    # Without the file, the spent token from the environment is refused, by name.
    with pytest.raises(ConfigError, match="BULLHORN_REFRESH_TOKEN"):
        connector(url, tmp_path / "elsewhere").login.session()


def test_an_expired_session_signs_in_again_mid_run(fake, url, tmp_path, clock) -> None:
    bullhorn = connector(url, tmp_path)
    iterator = bullhorn.pages(None)
    next(iterator)
    clock.at = NOW + timedelta(minutes=30)  # the session and the access token have aged out
    rest = list(iterator)
    assert rest[-1].done and bullhorn.login.logins == 2 and bullhorn.login.refreshes == 2
    assert len(fake.refresh_tokens) == 1  # every older one was spent


def test_username_and_password_sign_in_through_the_authorize_redirect(fake, url, tmp_path):
    bullhorn = connector(
        url, tmp_path, refresh_token=None, username=fake.username, password=fake.password
    )
    assert bullhorn.login.session().rest_url.endswith(f"/rest-services/{CORP_TOKEN}/")
    with pytest.raises(ConfigError, match="BULLHORN_USERNAME"):
        connector(
            url, tmp_path / "b", refresh_token=None, username="u", password="wrong"
        ).login.session()


def test_a_wrong_client_is_a_config_error(url, tmp_path) -> None:
    with pytest.raises(ConfigError, match="BULLHORN_CLIENT_ID"):
        connector(url, tmp_path, client_id="someone-else").login.session()


def test_rate_limits_are_retried_and_the_run_completes(fake, url, tmp_path) -> None:
    fake.faults.rate_limited(2, retry_after=0)
    bullhorn = connector(url, tmp_path)
    pages, records, _ = sync(bullhorn)
    assert pages[-1].done and len(records) == len(PEOPLE)
    assert fake.faults.injected == {"429": 2} and bullhorn.client.retries == 2


def test_a_malformed_record_is_reported_and_the_others_arrive(fake, url, tmp_path) -> None:
    fake.malform(PEOPLE[7].index)
    broken = str(fake.candidate_id(PEOPLE[7].index))
    _, records, problems = sync(connector(url, tmp_path))
    assert [p[0] for p in problems] == [broken]
    assert len(records) == len(PEOPLE) - 1


def test_notes_and_tasks_land_on_the_candidate(fake, url, tmp_path) -> None:
    bullhorn = connector(url, tmp_path)
    person = PEOPLE[3]
    cid = fake.candidate_id(person.index)
    note_id = bullhorn.write_note(NoteRef(str(cid)), "Sent: application received")
    (note,) = fake.notes_for(cid)
    assert str(note["id"]) == note_id and note["comments"] == "Sent: application received"
    assert note["commentingPerson"] == {"id": RECRUITERS[0].bullhorn_id}
    owner = str(person.recruiter.bullhorn_id)
    task_id = bullhorn.create_task(TaskSpec(str(cid), owner, "Connect", "Say hi", NOW))
    (task,) = fake.tasks_for(cid)
    assert str(task["id"]) == task_id and task["owner"] == {"id": int(owner)}
    assert bullhorn.task_status([task_id]) == {task_id: "open"}
    fake.tasks[int(task_id)]["isCompleted"] = True
    assert bullhorn.task_status([task_id]) == {task_id: "done"}


def test_the_fake_checks_tokens_fields_counts_and_bodies(fake, url, tmp_path) -> None:
    session = connector(url, tmp_path).login.session()
    rest = session.rest_url
    with httpx.Client(base_url=rest, headers={"BhRestToken": session.token}) as http:
        assert http.get("query/Candidate", params={"where": "id>0"}).status_code == 400
        capped = http.get("query/Candidate", params={"where": "id>0", "fields": "id", "count": 900})
        assert capped.json()["count"] == 500
        bad = http.get("query/Candidate", params={"where": "id >>", "fields": "id"})
        assert bad.status_code == 400 and "errorMessage" in bad.json()
        note = http.put("entity/Note", json={"personReference": {"id": 1}, "comments": "x"})
        assert note.status_code == 400
        extra = http.put("entity/Task", json={"subject": "x", "bogus": 1})
        assert extra.status_code == 400 and "bogus" in extra.json()["errorMessage"]
    assert httpx.get(rest + "settings/userId").status_code == 412
    wrong = httpx.get(rest + "settings/userId", headers={"BhRestToken": "nope"})
    assert wrong.status_code == 401
    fake.expire_sessions()
    expired = httpx.get(rest + "settings/userId", headers={"BhRestToken": session.token})
    assert expired.status_code == 401


def test_the_fake_rate_window_answers_429_with_retry_after(server, tmp_path) -> None:
    limited = FakeBullhorn(PEOPLE[:3], refresh_token=REFRESH, rate=RateWindow(2, 60))
    server[1]["fake"] = limited
    session = connector(server[0].url, tmp_path).login.session()
    with httpx.Client(base_url=session.rest_url, headers={"BhRestToken": session.token}) as http:
        assert [http.get("settings/userId").status_code for _ in range(2)] == [200, 200]
        refused = http.get("settings/userId")
    assert refused.status_code == 429 and float(refused.headers["Retry-After"]) > 0
    assert refused.json()["errorCode"] == 429


@pytest.mark.parametrize(
    ("where", "record", "expected"),
    [
        ("a=1 AND (b>2 OR c='x''y')", {"a": 1, "b": 0, "c": "x'y"}, True),
        ("a=1 AND (b>2 OR c='x')", {"a": 1, "b": 0, "c": "z"}, False),
        ("candidate.id IN (1, 2)", {"candidate": {"id": 2}}, True),
        ("NOT isDeleted=true", {"isDeleted": False}, True),
        ("x>=5", {"x": None}, False),
    ],
)
def test_the_where_clause(where: str, record: dict, expected: bool) -> None:
    assert compile_where(where)(record) is expected


@pytest.mark.parametrize("where", ["a=", "a = 1 AND", "(a=1", "a=1 b=2", "a ~ 1"])
def test_an_unreadable_where_clause_is_refused(where: str) -> None:
    with pytest.raises(ValueError):
        compile_where(where)


def test_a_note_refused_with_a_500_is_not_resent_and_not_stored(fake, url, tmp_path) -> None:
    bullhorn = connector(url, tmp_path)
    cid = fake.candidate_id(PEOPLE[5].index)
    bullhorn.user_id()
    fake.faults.server_errors(1, status=500)
    with pytest.raises(PermanentError, match="HTTP 500"):
        bullhorn.write_note(NoteRef(str(cid)), "Sent: hello")
    assert fake.notes_for(cid) == [] and bullhorn.client.retries == 0
    fake.faults.server_errors(1, status=503)  # 503: not handled, so sent again
    assert bullhorn.write_note(NoteRef(str(cid)), "Sent: hello") is not None
    assert len(fake.notes_for(cid)) == 1
