"""Contact point normalisation: email syntax, phone numbers to E.164, LinkedIn URLs.

Emails are checked with ``email-validator`` (syntax only, no DNS) and compared lower-cased,
so that the same address in two CRMs is one person. Phones are parsed with
``phonenumbers`` in ``policy.default_region`` when they have no country code. Error
messages say what is wrong, never the value itself: they reach logs, which carry candidate
ids and line numbers, not personal data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneNumberType

__all__ = [
    "SMS_CAPABLE_TYPES",
    "ContactError",
    "PhoneInfo",
    "normalize_email",
    "normalize_linkedin",
    "normalize_phone",
]

# Types that can receive SMS (US numbers are FIXED_LINE_OR_MOBILE).
SMS_CAPABLE_TYPES = frozenset({"mobile", "fixed_line_or_mobile"})

_TYPE_NAMES = {
    value: name.lower()
    for name, value in vars(PhoneNumberType).items()
    if isinstance(value, int) and not name.startswith("_")
}

# The common case, checked without email-validator's full parser: an ASCII dot-atom
# local part and LDH domain labels with an alphabetic TLD. Anything else takes the slow,
# complete path.
_SIMPLE_EMAIL = re.compile(
    r"^(?=.{1,254}$)(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
    r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
# Domains email-validator refuses as not globally deliverable (RFC 6761 special use).
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})
_LINKEDIN = re.compile(
    r"^(?:https?://)?(?:[a-z]{2,3}\.)?linkedin\.com/(in|pub)/([^/?#\s]+)/?(?:[?#].*)?$",
    re.IGNORECASE,
)


class ContactError(ValueError):
    """A contact value that cannot be used; the message says why."""


def normalize_email(value: str) -> str:
    """Return the address lower-cased, or raise :class:`ContactError`."""
    text = value.strip()
    if _SIMPLE_EMAIL.match(text) and text.rsplit(".", 1)[-1].lower() not in _SPECIAL_TLDS:
        return text.lower()
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ContactError(f"email is not valid: {exc}") from None
    return result.normalized.lower()


@dataclass(frozen=True)
class PhoneInfo:
    """A parsed phone number."""

    e164: str
    type: str  # mobile, fixed_line, fixed_line_or_mobile, voip, ...
    region: str | None

    @property
    def sms_capable(self) -> bool:
        """Whether the number's type can receive SMS."""
        return self.type in SMS_CAPABLE_TYPES


@lru_cache(maxsize=65536)
def normalize_phone(value: str, default_region: str = "US") -> PhoneInfo:
    """Parse ``value`` to E.164 (reading it in ``default_region`` without a country code).

    Raises :class:`ContactError` when it is not a phone number or not a valid one.
    """
    text = value.strip()
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ContactError(f"phone is not a phone number: {exc._msg}") from None
    kind = phonenumbers.number_type(number)
    # number_type is UNKNOWN exactly when the number matches no pattern of its region,
    # which is what is_valid_number checks; one call instead of two.
    if kind == PhoneNumberType.UNKNOWN:
        raise ContactError(
            f"phone is not a valid number (read in region {default_region} when it has no "
            "+country code)"
        )
    return PhoneInfo(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        type=_TYPE_NAMES.get(kind, "unknown"),
        region=None,
    )


def normalize_linkedin(value: str) -> str:
    """Return ``https://www.linkedin.com/in/<slug>``, or raise :class:`ContactError`."""
    text = value.strip()
    match = _LINKEDIN.match(text)
    if not match:
        raise ContactError(
            "linkedin_url is not a LinkedIn profile URL "
            "(expected https://www.linkedin.com/in/<name>)"
        )
    kind, slug = match.groups()
    return f"https://www.linkedin.com/{kind.lower()}/{slug.lower()}"
