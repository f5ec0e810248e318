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
from typing import Any

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


@lru_cache(maxsize=4096)
def normalize_phone(value: str, default_region: str = "US") -> PhoneInfo:
    """Parse ``value`` to E.164 (reading it in ``default_region`` without a country code).

    Raises :class:`ContactError` when it is not a phone number or not a valid one. The
    common North American shapes (``(212) 555-0100``, ``212-555-0100``, ``+1 212 555
    0100``) take a short path that gives exactly what ``phonenumbers`` gives (a test
    compares the two); everything else goes through ``phonenumbers`` itself.
    """
    text = value.strip()
    nanp = _NANP_SHAPE.fullmatch(text)
    if nanp is not None and (nanp.group(1) or default_region in _NANP_REGIONS):
        # Ten digits, the first 2-9, read in a NANP region or after +1: phonenumbers
        # takes country code 1 and these digits as they are (no prefix to strip).
        _plus, parenthesised, bare, exchange, line = nanp.groups()
        national = (parenthesised or bare) + exchange + line
        kind = _nanp_type(national)
        e164 = "+1" + national
    else:
        try:
            number = phonenumbers.parse(text, default_region)
        except phonenumbers.NumberParseException as exc:
            raise ContactError(f"phone is not a phone number: {exc._msg}") from None
        # number_type is UNKNOWN exactly when the number matches no pattern of its
        # region, which is what is_valid_number checks; one call instead of two.
        kind = phonenumbers.number_type(number)
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == PhoneNumberType.UNKNOWN:
        raise ContactError(
            f"phone is not a valid number (read in region {default_region} when it has no "
            "+country code)"
        )
    return PhoneInfo(e164=e164, type=_TYPE_NAMES.get(kind, "unknown"), region=None)


#: ``(212) 555-0100``, ``212.555.0100``, ``+1 212-555-0100``, ...: one optional +1, an area
#: code (optionally in parentheses) that does not start with 0 or 1, and single separators
_NANP_SHAPE = re.compile(
    r"(\+1[ .-]?)?(?:\(([2-9][0-9]{2})\)|([2-9][0-9]{2}))[ .-]?([0-9]{3})[ .-]?([0-9]{4})"
)
_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
#: the order in which phonenumbers' number_type tries the kinds of a region's metadata
_TYPE_ORDER = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

_Desc = tuple[frozenset[int], "re.Pattern[str] | None"] | None


def _desc(number_desc: Any) -> _Desc:
    """A PhoneNumberDesc as (possible lengths, compiled pattern), as phonenumbers reads it."""
    if number_desc is None:
        return None
    pattern = number_desc.national_number_pattern
    return (
        frozenset(number_desc.possible_length),
        re.compile(pattern) if pattern else None,
    )


def _matches(national: str, desc: _Desc) -> bool:
    # phonenumbers' _is_number_matching_desc: lengths first (when listed), then the
    # whole number against the pattern.
    if desc is None:
        return False
    lengths, pattern = desc
    if lengths and len(national) not in lengths:
        return False
    return pattern is not None and pattern.fullmatch(national) is not None


@dataclass(frozen=True)
class _RegionTypes:
    """One region's metadata compiled once for :func:`_type_in`."""

    leading_digits: re.Pattern[str] | None
    general: _Desc
    special: tuple[tuple[_Desc, int], ...]
    #: all of ``special``'s patterns in one: when it does not match, none of them does
    any_special: re.Pattern[str] | None
    fixed_line: _Desc
    mobile: _Desc
    same_mobile_and_fixed_line: bool


@lru_cache(maxsize=64)
def _region_types(region: str) -> _RegionTypes | None:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return None
    special = tuple((_desc(getattr(metadata, name)), kind) for name, kind in _TYPE_ORDER)
    patterns = [desc[1].pattern for desc, _ in special if desc is not None and desc[1] is not None]
    return _RegionTypes(
        leading_digits=re.compile(metadata.leading_digits)
        if metadata.leading_digits is not None
        else None,
        general=_desc(metadata.general_desc),
        special=special,
        any_special=re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None,
        fixed_line=_desc(metadata.fixed_line),
        mobile=_desc(metadata.mobile),
        same_mobile_and_fixed_line=bool(metadata.same_mobile_and_fixed_line_pattern),
    )


def _type_in(national: str, types: _RegionTypes) -> int:
    """phonenumbers' ``_number_type_helper``, on precompiled patterns."""
    if not _matches(national, types.general):
        return PhoneNumberType.UNKNOWN
    # One regex call rules out the eight special kinds for most numbers; a number that
    # one of them may claim is checked kind by kind, in phonenumbers' order.
    if types.any_special is not None and types.any_special.fullmatch(national) is not None:
        for desc, kind in types.special:
            if _matches(national, desc):
                return kind
    if _matches(national, types.fixed_line):
        if types.same_mobile_and_fixed_line or _matches(national, types.mobile):
            return PhoneNumberType.FIXED_LINE_OR_MOBILE
        return PhoneNumberType.FIXED_LINE
    if not types.same_mobile_and_fixed_line and _matches(national, types.mobile):
        return PhoneNumberType.MOBILE
    return PhoneNumberType.UNKNOWN


def _nanp_type(national: str) -> int:
    """``phonenumbers.number_type`` of ``+1`` and ``national``: the first NANP region
    (in phonenumbers' order) that claims the number decides its type."""
    for region in phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1]:
        types = _region_types(region.upper())
        if types is None:
            continue
        if types.leading_digits is not None:
            if types.leading_digits.match(national):
                return _type_in(national, types)
        else:
            kind = _type_in(national, types)
            if kind != PhoneNumberType.UNKNOWN:
                return kind
    return PhoneNumberType.UNKNOWN


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
