"""One-click candidate ratings: the links a message carries and what a click records.

A feedback request (and the post-hire welcome) carries five links, one per score::

    {{ touch.rating_urls[4] }}   ->  https://hooks.example.org/r/<token>/5

``<token>`` is the touch's ``rating_token``: 128 random bits (``secrets.token_urlsafe(16)``)
given to the touch when it is claimed, before its template is rendered, and kept apart
from the reply token (64 bits, visible in every Reply-To address). ``outreach serve``
answers ``GET /r/<token>/<score>`` (:meth:`outreach.serve.WebhookApp.rating`) with
:func:`record_rating` and :func:`page`.

A click is one ``rating`` event per touch (``dedupe_key = "rating:<touch_id>"``, payload
``{"score": n}``, ``processed_at`` set so that the engine never acts on it): a later click
with another score replaces it, the same click again changes nothing. A GET must be safe
to repeat, since mail scanners and browsers prefetch links; the report therefore counts
the latest score per touch, never clicks.
"""

from __future__ import annotations

import binascii
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import jinja2
from sqlalchemy import Engine, Text, cast, select

from outreach.store.candidates import dialect_insert
from outreach.store.schema import Event, Touch

__all__ = [
    "RATING_PATH",
    "SCORES",
    "RatingOutcome",
    "new_rating_token",
    "new_rating_tokens",
    "page",
    "parse_score",
    "rating_urls",
    "record_rating",
    "redact_rating_path",
    "thank_you",
    "valid_token",
]

log = logging.getLogger("outreach.ratings")

#: the route ``outreach serve`` answers (Werkzeug rule syntax)
RATING_PATH = "/r/<token>/<score>"
#: the scores a candidate can give, worst to best
SCORES = (1, 2, 3, 4, 5)
_SCORE_TEXTS = tuple(str(score) for score in SCORES)
LABELS = {1: "Very poor", 2: "Poor", 3: "Okay", 4: "Good", 5: "Excellent"}
#: what a rating token may look like (token_urlsafe's alphabet, the column's length)
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,40}")

_events = Event.__table__
_touches = Touch.__table__

#: response headers of every rating page: nothing cached, indexed, referred or fetched
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}


def new_rating_token() -> str:
    """A fresh rating token: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def new_rating_tokens(count: int) -> list[str]:
    """``count`` fresh rating tokens, each as :func:`new_rating_token` makes one, from one
    read of the system's randomness for all of them (a batch of touches at once)."""
    raw = secrets.token_bytes(16 * count)
    # 16 bytes encode to 22 characters and "==": all encoded, translated and decoded at
    # once, then cut, which gives what urlsafe_b64encode(...).rstrip(b"=") gives each.
    encode = binascii.b2a_base64
    text = (
        b"".join(
            [encode(raw[start : start + 16], newline=False) for start in range(0, 16 * count, 16)]
        )
        .translate(_URLSAFE)
        .decode("ascii")
    )
    return [text[start : start + 22] for start in range(0, 24 * count, 24)]


#: standard base64 to its URL-safe alphabet
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def rating_urls(public_url: str, token: str) -> list[str]:
    """The five one-click links of a touch, score 1 first (``rating_urls[n - 1]``)."""
    return list(map(f"{public_url.rstrip('/')}/r/{token}/".__add__, _SCORE_TEXTS))


def valid_token(token: str) -> bool:
    """Whether ``token`` has the shape of a rating token (not whether it exists)."""
    return _TOKEN.fullmatch(token) is not None


def redact_rating_path(path: str) -> str:
    """``path`` for a log line: a rating link's token (the credential) becomes ``…``."""
    if path.startswith("/r/"):
        _, _, rest = path[3:].partition("/")
        return f"/r/…/{rest}" if rest else "/r/…"
    return path


def parse_score(text: str) -> int | None:
    """The score in a link's last segment, ``1`` to ``5``; ``None`` for anything else."""
    if text in {"1", "2", "3", "4", "5"}:
        return int(text)
    return None


@dataclass(frozen=True)
class RatingOutcome:
    """What a click did: ``new`` (first score of the touch), ``replaced`` or ``same``."""

    touch_id: int
    person_id: int
    score: int
    previous: int | None
    result: Literal["new", "replaced", "same"]


def record_rating(
    engine: Engine, token: str, score: int, now: datetime, *, write: bool = True
) -> RatingOutcome | None:
    """Record ``score`` for the touch whose rating token is ``token``.

    Returns ``None`` when no touch has that token (the caller answers 404). The event is
    upserted on its dedupe key, on SQLite and PostgreSQL alike: a second score replaces
    the first (``at`` becomes ``now``), the same score again leaves the row untouched.
    ``write=False`` (a HEAD request) looks the token up and records nothing.
    """
    if score not in SCORES:
        raise ValueError(f"a rating is 1 to 5, not {score!r}")
    if not valid_token(token):
        return None
    with engine.begin() as conn:
        touch = conn.execute(
            select(_touches.c.id, _touches.c.person_id, _touches.c.channel).where(
                _touches.c.rating_token == token
            )
        ).first()
        if touch is None:
            return None
        key = f"rating:{touch.id}"
        previous = conn.execute(
            select(_events.c.payload["score"].as_integer()).where(_events.c.dedupe_key == key)
        ).scalar()
        result: Literal["new", "replaced", "same"] = (
            "new" if previous is None else "same" if previous == score else "replaced"
        )
        if write and result != "same":
            insert = dialect_insert(conn, _events).values(
                type="rating",
                channel=touch.channel,
                person_id=touch.person_id,
                touch_id=touch.id,
                at=now,
                dedupe_key=key,
                payload={"score": score},
                processed_at=now,
                created_at=now,
            )
            # A concurrent click may have written the row since the read above: the
            # conflict clause settles it, and the same score never moves `at`.
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=[_events.c.dedupe_key],
                    set_={"payload": insert.excluded.payload, "at": insert.excluded.at},
                    where=cast(_events.c.payload, Text) != cast(insert.excluded.payload, Text),
                )
            )
    return RatingOutcome(touch.id, touch.person_id, score, previous, result)


_PAGE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<meta name="referrer" content="no-referrer">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:2rem 1rem;
background:#f6f7f9;color:#1d2330}
main{max-width:32rem;margin:0 auto;background:#fff;border-radius:12px;padding:2rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin:0 0 1rem}
p{line-height:1.5}
ol{list-style:none;padding:0;display:flex;gap:.5rem;flex-wrap:wrap}
a{display:inline-block;min-width:2.5rem;text-align:center;padding:.5rem .75rem;
border:1px solid #c5cad3;border-radius:8px;color:#1d2330;text-decoration:none}
a[aria-current]{background:#1d2330;color:#fff;border-color:#1d2330}
small{color:#5b6372}
</style>
</head>
<body>
<main>
<h1>{{ title }}</h1>
{% for line in lines %}<p>{{ line }}</p>
{% endfor %}
{% if score %}<p>Changed your mind? Pick another score:</p>
<ol>
{% for n, label in labels %}<li><a href="{{ n }}" title="{{ label }}"\
{% if n == score %} aria-current="true"{% endif %}>{{ n }}</a></li>
{% endfor %}</ol>
<p><small>1 = {{ labels[0][1] }}, 5 = {{ labels[-1][1] }}</small></p>
{% endif %}
</main>
</body>
</html>
"""
)


def page(*, title: str, lines: list[str], score: int | None = None) -> str:
    """A small self-contained HTML page (inline style, no script, nothing fetched).

    With ``score`` it is the thank-you page: the five scores as relative links (``1`` ..
    ``5`` beside ``/r/<token>/<score>``), the chosen one marked, so the candidate can
    change it without the server knowing its public URL.
    """
    return _PAGE.render(
        title=title,
        lines=lines,
        score=score,
        labels=[(n, LABELS[n]) for n in SCORES],
    )


def thank_you(outcome: RatingOutcome, company: str | None) -> str:
    """The page a recorded (or repeated) click answers with."""
    who = f" with {company}" if company else ""
    label = LABELS[outcome.score].lower()
    if outcome.result == "replaced":
        first = f"We've updated your rating to {outcome.score} out of 5 ({label})."
    else:
        first = f"You rated your experience{who} {outcome.score} out of 5 ({label})."
    return page(
        score=outcome.score,
        title="Thank you for your feedback",
        lines=[first, "We read every rating and use it to improve how we hire."],
    )
