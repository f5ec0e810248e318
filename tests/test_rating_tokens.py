"""A batch of rating tokens is what one token at a time would be, from the same bytes."""

from __future__ import annotations

import base64
import random

import pytest

from outreach import ratings


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 500])
def test_a_batch_encodes_each_token_as_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    raw = random.Random(count).randbytes(16 * count)
    monkeypatch.setattr(ratings.secrets, "token_bytes", lambda n: raw[:n])
    tokens = ratings.new_rating_tokens(count)
    expected = [
        base64.urlsafe_b64encode(raw[start : start + 16]).rstrip(b"=").decode("ascii")
        for start in range(0, 16 * count, 16)
    ]
    assert tokens == expected
    assert all(ratings.valid_token(token) for token in tokens)


def test_bytes_that_encode_to_plus_and_slash_come_out_url_safe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b"\xfb\xff\xbf" * 5 + b"\xff"  # '+/+/' ... in standard base64
    monkeypatch.setattr(ratings.secrets, "token_bytes", lambda n: raw)
    [token] = ratings.new_rating_tokens(1)
    assert "+" not in token and "/" not in token and "=" not in token
    assert token == base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    assert "-" in token and "_" in token
