"""Contact normalisation: emails, E.164 phones with types, LinkedIn URLs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outreach.contacts import ContactError, normalize_email, normalize_linkedin, normalize_phone
from outreach.records import normalize_record, parse_bool


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("  ann+jobs@example.org ", "ann+jobs@example.org"),
        ("josé@exämple.com", "josé@exämple.com"),  # the domain as written, not punycode
    ],
)
def test_valid_emails(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw", ["a@b", "no-at.example.com", "a@@b.com", "a b@c.com", "x@y.test", "x@.com"]
)
def test_invalid_emails(raw: str) -> None:
    with pytest.raises(ContactError, match="not valid"):
        normalize_email(raw)


@given(st.emails())
def test_fast_path_agrees_with_email_validator(address: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    try:
        expected = validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        with pytest.raises(ContactError):
            normalize_email(address)
        return
    assert normalize_email(address) == expected


@pytest.mark.parametrize(
    ("raw", "region", "e164", "kind"),
    [
        ("(212) 555-0187", "US", "+12125550187", "fixed_line_or_mobile"),
        ("+44 7911 123456", "US", "+447911123456", "mobile"),
        ("020 7946 0000", "GB", "+442079460000", "fixed_line"),
        ("+1 800 555 0199", "US", "+18005550199", "toll_free"),
    ],
)
def test_phones(raw: str, region: str, e164: str, kind: str) -> None:
    info = normalize_phone(raw, region)
    assert (info.e164, info.type) == (e164, kind)
    assert info.sms_capable == (kind in ("mobile", "fixed_line_or_mobile"))


@pytest.mark.parametrize("raw", ["12", "not a phone", "+1 212 555 01", "+999 1234567"])
def test_bad_phones(raw: str) -> None:
    with pytest.raises(ContactError):
        normalize_phone(raw, "US")


def test_linkedin() -> None:
    assert normalize_linkedin("linkedin.com/in/Jane-Doe/") == "https://www.linkedin.com/in/jane-doe"
    assert (
        normalize_linkedin("https://uk.linkedin.com/in/jd?trk=x")
        == "https://www.linkedin.com/in/jd"
    )
    with pytest.raises(ContactError):
        normalize_linkedin("https://example.com/jane")


def test_bools() -> None:
    assert parse_bool("Yes") is True and parse_bool("0") is False and parse_bool("") is None
    with pytest.raises(ValueError):
        parse_bool("perhaps")


def test_record_lists_every_problem() -> None:
    from outreach.errors import RecordError

    with pytest.raises(RecordError) as info:
        normalize_record(
            {
                "source": "x",
                "external_id": "1",
                "email": "bad",
                "phone": "12",
                "sms_consent": "maybe",
                "preferred_channel": "fax",
                "stage_entered_at": "yesterday",
            },
            where="line 9",
            default_region="US",
            canonical_stage=lambda s, n: None,
        )
    message = str(info.value)
    assert message.startswith("line 9 (x 1): ")
    for part in (
        "email is not valid",
        "phone is not a valid number",
        "sms_consent",
        "preferred_channel 'fax'",
        "stage_entered_at",
    ):
        assert part in message


def test_record_needs_a_contact_point_and_ids() -> None:
    from outreach.errors import RecordError

    with pytest.raises(RecordError, match="no contact point") as info:
        normalize_record(
            {"external_id": ""},
            where="line 2",
            default_region="US",
            canonical_stage=lambda s, n: None,
        )
    assert "source is empty" in str(info.value) and "external_id is empty" in str(info.value)


def test_extra_keys_become_custom_fields() -> None:
    record = normalize_record(
        {
            "source": "Import",
            "external_id": "1",
            "email": "a@example.com",
            "highlight": "x",
            "tags": "a, b",
            "empty": "",
        },
        where="line 2",
        default_region="US",
        canonical_stage=lambda s, n: None,
    )
    assert record.source == "import"
    assert record.custom == {"highlight": "x"} and record.tags == ["a", "b"]
