"""The short path of :func:`outreach.contacts.normalize_phone` gives what phonenumbers gives.

North American numbers in their usual shapes skip ``phonenumbers.parse`` and read the type
from precompiled metadata; these tests hold that path to the library's own answer, value
for value and refusal for refusal, so the accepted set stays the same.
"""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType

from outreach.contacts import _NANP_SHAPE, ContactError, PhoneInfo, _nanp_type, normalize_phone

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if isinstance(value, int) and not name.startswith("_")
}
REGIONS = ["US", "CA", "JM", "PR", "GB", "DE", "IN", "AU"]


def reference(text: str, region: str) -> PhoneInfo | str:
    """The phonenumbers-only reading: a PhoneInfo, or ``"refused"``."""
    try:
        number = phonenumbers.parse(text.strip(), region)
    except phonenumbers.NumberParseException:
        return "refused"
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        return "refused"
    return PhoneInfo(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        type=_TYPE_NAMES[kind],
        region=None,
    )


def ours(text: str, region: str) -> PhoneInfo | str:
    try:
        return normalize_phone.__wrapped__(text, region)
    except ContactError:
        return "refused"


def test_every_area_code_types_as_phonenumbers_does() -> None:
    rng = random.Random(15)
    for area in range(200, 1000):
        for _ in range(12):
            national = f"{area}{rng.randrange(1000):03d}{rng.randrange(10000):04d}"
            expected = phonenumbers.number_type(
                phonenumbers.PhoneNumber(country_code=1, national_number=int(national))
            )
            assert _nanp_type(national) == expected, national


_digits = st.text("0123456789", min_size=3, max_size=4)
_sep = st.sampled_from(["", " ", "-", ".", "  ", "/", "--"])


@st.composite
def phone_texts(draw: st.DrawFn) -> str:
    area = draw(st.text("0123456789", min_size=3, max_size=3))
    if draw(st.booleans()):
        area = f"({area})"
    prefix = draw(st.sampled_from(["", "+1", "+1 ", "+1-", "1 ", "+44 ", "+", "011 1 ", " "]))
    text = (
        prefix
        + area
        + draw(_sep)
        + draw(_digits)
        + draw(_sep)
        + draw(_digits)
        + draw(st.sampled_from(["", "", " ", " x12", "5"]))
    )
    return text


@settings(max_examples=1500, deadline=None)
@given(phone_texts(), st.sampled_from(REGIONS))
def test_short_path_agrees_with_phonenumbers(text: str, region: str) -> None:
    assert ours(text, region) == reference(text, region)


@pytest.mark.parametrize(
    "text",
    [
        "(212) 555-0100",
        "212-555-0100",
        "212.555.0100",
        "2125550100",
        "+1 212 555 0100",
        "+12125550100",
        "+1 (416) 555-0199",
        "(876) 555-0123",
        "800-555-0100",
        "(911) 555-0100",
        "(555) 123-4567",
    ],
)
@pytest.mark.parametrize("region", REGIONS)
def test_usual_shapes_take_the_short_path_and_agree(text: str, region: str) -> None:
    assert _NANP_SHAPE.fullmatch(text) is not None
    assert ours(text, region) == reference(text, region)
