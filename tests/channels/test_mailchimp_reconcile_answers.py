"""Reconciling an ambiguous Mailchimp send never reads an answer that is not Mailchimp's
list as "no such message": that would send the touch a second time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from channels.base import Inquiry
from channels.mailchimp_reconcile import reconcile

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


class Answers:
    """A stand-in for MandrillApi answering each call with what the test says."""

    def __init__(self, **answers: object) -> None:
        self.answers = answers

    def call(self, name: str, payload: dict, attempts: int = 1) -> object:
        return self.answers[name]


def ask(api: Answers) -> str:
    inquiry = Inquiry(7, "ann@example.com", NOW - timedelta(days=2), NOW - timedelta(days=2))
    (result,) = reconcile(
        api,  # type: ignore[arg-type]
        [inquiry],
        NOW,
        search_delay=timedelta(minutes=10),
        searches_per_run=5,
        search_limit=100,
    )
    return result.status


@pytest.mark.parametrize("answer", ["<html>502 Bad Gateway</html>", {"status": "error"}, None])
def test_a_search_answer_that_is_no_list_is_later_not_absent(answer: object) -> None:
    assert ask(Answers(search=answer, list_scheduled=[])) == "later"


def test_a_scheduled_list_answer_that_is_no_list_is_later_not_absent() -> None:
    assert ask(Answers(search=[], list_scheduled="<html>oops</html>")) == "later"


def test_empty_lists_after_the_search_delay_are_absent() -> None:
    assert ask(Answers(search=[], list_scheduled=[])) == "absent"
