"""X (Twitter) and Facebook profile normalisation, for the ``x`` and ``facebook`` task channels.

Neither network has an open API that sends outreach messages, so their steps become
recruiter tasks (like LinkedIn's) that point at the profile. A profile is stored canonical
so that the same person in two CRMs is one person and an opt-out given on one record holds
for the other:

- X: ``@name``, ``x.com/name``, ``twitter.com/name`` (any scheme, ``www.`` or ``mobile.``,
  a trailing path, query or fragment) → ``https://x.com/name``, the handle lower-cased
  (handles are case-insensitive: 1–15 letters, digits or ``_``).
- Facebook: ``facebook.com/name``, ``fb.com/name``, ``m.``/``web.``/``www.`` hosts →
  ``https://www.facebook.com/name`` (usernames are letters, digits and dots, at least five,
  case-insensitive); ``facebook.com/profile.php?id=N`` and ``facebook.com/people/Name/N``
  → ``https://www.facebook.com/profile.php?id=N``.

Errors say what is wrong, never the value (they reach logs, see :mod:`outreach.contacts`).
"""

from __future__ import annotations

import re

from outreach.contacts import ContactError

__all__ = [
    "PROFILE_CHANNELS",
    "normalize_facebook",
    "normalize_x",
    "pick_profile",
    "profile_kind",
    "x_from_handle",
]

#: task channels that point at a social profile, with the record field holding it
PROFILE_CHANNELS: dict[str, str] = {
    "linkedin": "linkedin_url",
    "x": "x_url",
    "facebook": "facebook_url",
}

_HOST = re.compile(r"^(?:https?://)?([A-Za-z0-9.-]+)(?:[/?#]|$)")
_KIND_BY_HOST = {
    "x.com": "x",
    "twitter.com": "x",
    "facebook.com": "facebook",
    "fb.com": "facebook",
    "linkedin.com": "linkedin",
}
_X_HANDLE = re.compile(r"^@([A-Za-z0-9_]{1,15})$")
_X_URL = re.compile(
    r"^(?:https?://)?(?:www\.|mobile\.)?(?:x|twitter)\.com/(?:#!/)?@?([A-Za-z0-9_]{1,15})"
    r"(?:[/?#].*)?$",
    re.IGNORECASE,
)
# Paths on x.com that are pages of the site, not profiles.
_X_RESERVED = frozenset(
    {
        "compose",
        "explore",
        "hashtag",
        "home",
        "i",
        "intent",
        "login",
        "messages",
        "notifications",
        "privacy",
        "search",
        "settings",
        "share",
        "signup",
        "tos",
    }
)
_FB_HOST = r"^(?:https?://)?(?:(?:www|m|web|mbasic)\.)?(?:facebook|fb)\.com/"
_FB_ID = re.compile(_FB_HOST + r"profile\.php\?(?:[^#]*&)?id=(\d{1,20})(?:[&#].*)?$", re.IGNORECASE)
_FB_PEOPLE = re.compile(_FB_HOST + r"people/[^/?#\s]+/(\d{1,20})/?(?:[?#].*)?$", re.IGNORECASE)
_FB_NAME = re.compile(_FB_HOST + r"([A-Za-z0-9.]{5,50})/?(?:[?#].*)?$", re.IGNORECASE)
# First path segments on facebook.com that are not people.
_FB_RESERVED = frozenset(
    {
        "events",
        "groups",
        "hashtag",
        "help",
        "login",
        "marketplace",
        "messages",
        "pages",
        "photo.php",
        "policies",
        "privacy",
        "profile.php",
        "settings",
        "sharer",
        "watch",
    }
)


def normalize_x(value: str) -> str:
    """Return ``https://x.com/<handle>`` for an ``@handle`` or an X/Twitter profile URL.

    Raises :class:`ContactError` for anything else (a bare word is refused: ``@`` or the
    URL says it is an X handle).

    >>> normalize_x("twitter.com/Jane_Doe?lang=en")
    'https://x.com/jane_doe'
    """
    text = value.strip()
    match = _X_HANDLE.match(text) or _X_URL.match(text)
    if match is None or match.group(1).lower() in _X_RESERVED:
        raise ContactError(
            "x_url is not an X profile (expected @name or https://x.com/name, "
            "name: up to 15 letters, digits or _)"
        )
    return f"https://x.com/{match.group(1).lower()}"


def normalize_facebook(value: str) -> str:
    """Return the canonical ``https://www.facebook.com/...`` URL of a Facebook profile.

    Raises :class:`ContactError` for anything that is not a profile URL.

    >>> normalize_facebook("fb.com/Jane.Doe")
    'https://www.facebook.com/jane.doe'
    """
    text = value.strip()
    numeric = _FB_ID.match(text) or _FB_PEOPLE.match(text)
    if numeric is not None:
        return f"https://www.facebook.com/profile.php?id={int(numeric.group(1))}"
    match = _FB_NAME.match(text)
    if match is None or match.group(1).lower() in _FB_RESERVED:
        raise ContactError(
            "facebook_url is not a Facebook profile URL (expected "
            "https://www.facebook.com/<name> or https://www.facebook.com/profile.php?id=<n>)"
        )
    return f"https://www.facebook.com/{match.group(1).lower()}"


def profile_kind(value: str) -> str | None:
    """``x``, ``facebook`` or ``linkedin`` when ``value`` is a URL on that network's site.

    Judged by the host (``netflix.com/x`` is not X), so a CRM's list of links can be sorted
    without normalising each; ``None`` for any other text.
    """
    match = _HOST.match(value.strip())
    if match is None:
        return None
    host = match.group(1).lower().rstrip(".")
    parts = host.split(".")
    for size in (2, 3):  # linkedin.com, uk.linkedin.com, www.facebook.com
        kind = _KIND_BY_HOST.get(".".join(parts[-size:])) if len(parts) >= size else None
        if kind is not None:
            return kind
    return None


def pick_profile(values: list[object], kind: str) -> str | None:
    """The first of a CRM's links that is a profile URL of ``kind`` (``x`` or ``facebook``).

    A link that is a profile wins over earlier links to the same site that are not (an
    intent link, a group page); with none, the first such link is handed over and
    :func:`outreach.records.normalize_record` reports it. The value is handed over as the
    CRM has it; ``normalize_record`` normalises it.
    """
    normalize = normalize_x if kind == "x" else normalize_facebook
    first = None
    for value in values:
        if isinstance(value, str) and profile_kind(value) == kind:
            try:
                normalize(value.strip())
            except ContactError:
                # a page of the site (x.com/intent/…, a Facebook group): a later link
                # may still be the profile
                first = first or value.strip()
                continue
            return value.strip()
    return first


def x_from_handle(value: str) -> str:
    """A CRM field that holds an X handle, with or without ``@``, as :func:`normalize_x`
    reads it: a bare ``name`` becomes ``@name``; anything else is left as it is."""
    text = value.strip()
    return f"@{text}" if re.fullmatch(r"[A-Za-z0-9_]{1,15}", text) else text
