"""``GET /r/<token>/<score>``: one-click candidate ratings in ``outreach serve``."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from ledger_rows import person_of, point, sent_touch, walkthrough_store
from sqlalchemy import select, update
from werkzeug.test import Client

from outreach.cadence import load_cadence_file
from outreach.clock import FixedClock
from outreach.engine.enroll import process_events
from outreach.engine.tick import engine_transactions
from outreach.paths import default_config_dir
from outreach.ratings import (
    new_rating_token,
    new_rating_tokens,
    rating_urls,
    record_rating,
    valid_token,
)
from outreach.serve import make_app
from outreach.settings import Settings
from outreach.store.schema import Event, Touch

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
TOKEN = "k3Jx9QmZr2V0aB7cD8eF1g"  # the shape of secrets.token_urlsafe(16)
OTHER = "zZ9yY8xX7wW6vV5uU4tT3s"


@pytest.fixture(scope="module")
def config():
    return load_cadence_file(default_config_dir() / "cadences.yaml")


@pytest.fixture
def store(engine, config, tmp_path: Path):
    """The walkthrough's people and one sent email touch to Ben, with a rating token."""
    walkthrough_store(engine, config, tmp_path, NOW - timedelta(days=1))
    ben = person_of(engine, "c2")
    touch = sent_touch(engine, ben, point(engine, "email", "ben@example.com").id, "rate:1", at=NOW)
    with engine.begin() as conn:
        conn.execute(update(Touch).where(Touch.id == touch).values(rating_token=TOKEN))
    return engine


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def client(store, config, clock) -> Client:
    return Client(make_app(store, Settings(_env_file=None), config, clock))


def ratings(engine) -> list:
    with engine.connect() as conn:
        return conn.execute(select(Event).where(Event.type == "rating").order_by(Event.id)).all()


def touch_of(engine):
    with engine.connect() as conn:
        return conn.execute(select(Touch).where(Touch.rating_token == TOKEN)).one()


def assert_private_page(response) -> None:
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert "noindex" in response.headers["X-Robots-Tag"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    # self-contained: nothing to fetch, no script
    assert not re.search(r"(src|href)=\"?(https?:)?//", response.text)
    assert "<script" not in response.text and "<link" not in response.text


def test_a_click_records_one_rating_event_the_engine_ignores(client, store, caplog) -> None:
    caplog.set_level(logging.INFO, logger="outreach")
    response = client.get(f"/r/{TOKEN}/4")
    assert response.status_code == 200
    assert_private_page(response)
    assert "4 out of 5 (good)" in response.text
    touch = touch_of(store)
    (event,) = ratings(store)
    assert event.touch_id == touch.id and event.person_id == touch.person_id
    assert event.channel == "email"
    assert event.payload == {"score": 4}
    assert event.dedupe_key == f"rating:{touch.id}"
    assert event.at == NOW and event.processed_at == NOW
    # links to change the score: relative, so they work behind any public URL
    for n in range(1, 6):
        assert f'href="{n}"' in response.text
    assert 'href="4" title="Good" aria-current="true"' in response.text
    # the log names the touch and the candidate, never the token
    assert f"rating for touch {touch.id}" in caplog.text
    assert TOKEN not in caplog.text


def test_the_engine_never_acts_on_a_rating(client, store, config) -> None:
    process_events(engine_transactions(store), config, NOW)  # the import's stage changes
    client.get(f"/r/{TOKEN}/1")
    stats = process_events(engine_transactions(store), config, NOW + timedelta(minutes=1))
    assert stats.events == 0
    (event,) = ratings(store)
    assert event.processed_at == NOW  # processed on insert


def test_a_second_click_replaces_the_score(client, store, clock) -> None:
    client.get(f"/r/{TOKEN}/2")
    clock.set(NOW + timedelta(minutes=5))
    response = client.get(f"/r/{TOKEN}/5")
    assert response.status_code == 200
    assert "updated your rating to 5" in response.text
    (event,) = ratings(store)
    assert event.payload == {"score": 5}
    assert event.at == NOW + timedelta(minutes=5)


def test_the_same_click_twice_changes_nothing(client, store, clock) -> None:
    first = client.get(f"/r/{TOKEN}/3")
    clock.set(NOW + timedelta(hours=1))
    again = client.get(f"/r/{TOKEN}/3")
    assert first.status_code == again.status_code == 200
    assert first.text == again.text  # a prefetch and a click read the same page
    (event,) = ratings(store)
    assert event.payload == {"score": 3} and event.at == NOW


@pytest.mark.parametrize(
    "token", [OTHER, TOKEN[:-1] + "h", "short", "x" * 200, "tok%20en%00" + "x" * 20, "é" * 22]
)
def test_an_unknown_or_malformed_token_is_the_same_404(client, store, token) -> None:
    response = client.get(f"/r/{token}/5")
    assert response.status_code == 404
    assert_private_page(response)
    known_shape = client.get(f"/r/{OTHER}/5")
    assert response.text == known_shape.text  # no oracle: one answer for every miss
    assert ratings(store) == []


@pytest.mark.parametrize("score", ["0", "6", "-1", "05", "4.0", "five", "٣", "%20", "1 "])
def test_a_score_outside_one_to_five_is_400_and_records_nothing(client, store, score) -> None:
    for token in (TOKEN, OTHER):  # checked before the token: 400 says nothing about it
        response = client.get(f"/r/{token}/{score}")
        assert response.status_code == 400, (token, score)
        assert_private_page(response)
    assert ratings(store) == []


def test_head_answers_like_get_and_records_nothing(client, store) -> None:
    response = client.head(f"/r/{TOKEN}/5")
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head(f"/r/{OTHER}/5").status_code == 404
    assert client.head(f"/r/{TOKEN}/9").status_code == 400
    assert ratings(store) == []


def test_other_methods_are_refused(client, store) -> None:
    response = client.post(f"/r/{TOKEN}/5")
    assert response.status_code == 405
    assert ratings(store) == []


def test_thank_you_page_names_the_company(client, config) -> None:
    response = client.get(f"/r/{TOKEN}/5")
    assert f"with {config.company.name} 5 out of 5 (excellent)" in response.text


def test_record_rating_upserts_on_this_database(store) -> None:
    """The upsert itself: new, same, replaced, and HEAD's read-only lookup."""
    first = record_rating(store, TOKEN, 2, NOW)
    assert first is not None and first.result == "new" and first.previous is None
    assert record_rating(store, TOKEN, 2, NOW).result == "same"
    peek = record_rating(store, TOKEN, 4, NOW, write=False)
    assert peek.result == "replaced" and ratings(store)[0].payload == {"score": 2}
    later = record_rating(store, TOKEN, 4, NOW + timedelta(days=1))
    assert later.result == "replaced" and later.previous == 2
    (event,) = ratings(store)
    assert event.payload == {"score": 4} and event.at == NOW + timedelta(days=1)
    assert record_rating(store, OTHER, 4, NOW) is None
    with pytest.raises(ValueError, match="1 to 5"):
        record_rating(store, TOKEN, 6, NOW)


def test_tokens_are_unguessable_and_links_are_built_from_the_public_url() -> None:
    tokens = {new_rating_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", t) for t in tokens)  # 128 bits
    assert rating_urls("https://hooks.example.org/outreach/", "tok") == [
        f"https://hooks.example.org/outreach/r/tok/{n}" for n in range(1, 6)
    ]


def test_two_touches_have_separate_ratings(client, store) -> None:
    ann = person_of(store, "c1")
    other = sent_touch(store, ann, point(store, "email", "ann@example.com").id, "rate:2", at=NOW)
    with store.begin() as conn:
        conn.execute(update(Touch).where(Touch.id == other).values(rating_token=OTHER))
    client.get(f"/r/{TOKEN}/5")
    client.get(f"/r/{OTHER}/1")
    assert sorted((e.touch_id, e.payload["score"]) for e in ratings(store)) == sorted(
        [(touch_of(store).id, 5), (other, 1)]
    )


def test_served_over_a_socket_the_access_log_hides_the_token(store, config, caplog) -> None:
    import threading
    import urllib.request

    from outreach.serve import serve

    caplog.set_level(logging.INFO, logger="outreach")
    app = make_app(store, Settings(_env_file=None), config, FixedClock(NOW))
    stop, ready, ports = threading.Event(), threading.Event(), []

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    thread = threading.Thread(
        target=serve, args=(app, "127.0.0.1", 0, stop), kwargs={"on_ready": on_ready}
    )
    thread.start()
    try:
        assert ready.wait(5)
        url = f"http://127.0.0.1:{ports[0]}/r/{TOKEN}/5"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200 and b"5 out of 5" in answer.read()
    finally:
        stop.set()
        thread.join(5)
    assert "GET /r/…/5 200" in caplog.text
    assert TOKEN not in caplog.text
    assert [e.payload for e in ratings(store)] == [{"score": 5}]


def test_tokens_made_for_a_batch_have_the_shape_of_single_ones() -> None:
    tokens = new_rating_tokens(1000)
    assert len(set(tokens)) == 1000 and new_rating_tokens(0) == []
    assert all(valid_token(token) and len(token) == len(new_rating_token()) for token in tokens)
