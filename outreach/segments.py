"""SMS segment counting (GSM-7 vs UCS-2), as carriers and Twilio count them.

A message in the GSM-7 alphabet fits 160 characters in one segment and 153 per segment
when split (extension-table characters such as ``€`` or ``{`` take two). Anything else is
sent as UCS-2: 70 UTF-16 code units in one segment, 67 per segment when split.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SegmentInfo", "count_segments"]

_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SegmentInfo:
    """How a body is encoded and into how many segments it splits."""

    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int
    non_gsm: str  # the characters that forced UCS-2, for messages


def count_segments(body: str) -> SegmentInfo:
    """Count the segments ``body`` takes as one SMS."""
    non_gsm = "".join(
        sorted({ch for ch in body if ch not in _GSM_BASIC and ch not in _GSM_EXTENDED})
    )
    if not non_gsm:
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    if units == 0:
        segments = 0
    elif units <= single:
        segments = 1
    else:
        segments = -(-units // multi)
    return SegmentInfo(encoding=encoding, units=units, segments=segments, non_gsm=non_gsm)
