"""Realistic, repeatable candidates for the sandbox fakes.

:func:`person` builds candidate ``index`` of a seeded population from the index alone, so
a fake can serve a million candidates without holding them (:class:`Population` is a
lazy sequence). People carry names, an address at a reserved example domain, a US phone
in the 555 exchange (valid to ``phonenumbers``, never a real subscriber), the time zone
of its area code, a LinkedIn URL, a job, a recruiter, a canonical stage and the CRMs they
live in (Greenhouse, Lever, HubSpot, and Bullhorn for about one in five): most people are
in one CRM and about one in twenty-five in two, with the same
email (or the same phone written differently) so the engine must merge them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import overload

__all__ = [
    "CRMS",
    "RECRUITERS",
    "Population",
    "Recruiter",
    "SeedPerson",
    "person",
]

CRMS = ("greenhouse", "lever", "hubspot", "bullhorn")
#: one person in this many lives in Bullhorn rather than the CRM the first three would give
BULLHORN_ONE_IN = 5

FIRST = (
    "Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farah", "Gustavo", "Hana", "Ikenna", "Julia",
    "Kenji", "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sanjay", "Tala",
    "Umar", "Vera", "Wei", "Ximena", "Yusuf", "Zoe", "Amara", "Bjorn", "Camila", "Darius",
    "Esme", "Felix", "Greta", "Hugo", "Iris", "Jonah", "Kiri", "Leon", "Maya", "Nils",
)  # fmt: skip
LAST = (
    "Okafor", "Lindqvist", "Moreau", "Petrov", "Garcia", "Haddad", "Silva", "Tanaka", "Eze",
    "Novak", "Sato", "Romero", "Fischer", "Kowalski", "Nguyen", "Patel", "Dubois", "Costa",
    "Iyer", "Fonoti", "Rahman", "Ivanova", "Zhang", "Lopez", "Demir", "Walsh", "Mensah",
    "Berg", "Ortiz", "Farahani", "Keller", "Brandt", "Larsen", "Mori", "Quinn", "Adeyemi",
    "Varga", "Popescu", "Reyes", "Holm",
)  # fmt: skip
JOBS = (
    ("Backend Engineer", "Engineering"),
    ("Frontend Engineer", "Engineering"),
    ("Data Scientist", "Data"),
    ("Product Designer", "Design"),
    ("Account Executive", "Sales"),
    ("Customer Success Manager", "Customer Success"),
    ("Site Reliability Engineer", "Engineering"),
    ("Recruiting Coordinator", "People"),
)
# US area codes whose 555 numbers phonenumbers reads as valid fixed-line-or-mobile numbers
# in one US time zone (the zone comes from the number, as the engine derives it).
AREA_CODES = (
    201, 202, 203, 205, 206, 207, 209, 210, 212, 213, 214, 215, 216, 217, 218, 219, 220,
    223, 224, 225, 227, 228, 229, 231, 234, 235, 239, 240, 248, 251, 252, 253, 254, 256,
    260, 262, 267, 269, 270, 272, 274, 276, 279, 281, 283, 301, 302, 303, 304, 305, 307,
    308, 309, 310, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321, 323, 324, 325, 326,
    327, 329, 330, 331, 332, 334, 336, 337, 339, 341, 346, 347, 350, 351, 352, 353, 360,
    361, 363, 364, 369, 380, 385, 386, 401, 402, 404, 405, 406, 407, 408, 409,
)  # fmt: skip
# Canonical stage mix of a live pipeline, in percent.
STAGE_MIX = (
    ("prospect", 15),
    ("applied", 35),
    ("screening", 15),
    ("interview", 15),
    ("offer", 4),
    ("hired", 4),
    ("rejected", 12),
)
SEED_START = datetime(2026, 9, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Recruiter:
    """A recruiter who owns candidates, with their user id in each CRM."""

    key: str
    name: str
    email: str
    phone: str
    greenhouse_id: int
    lever_id: str
    hubspot_id: str
    bullhorn_id: int

    def id_in(self, crm: str) -> str:
        """This recruiter's user id in ``crm``."""
        return {
            "greenhouse": str(self.greenhouse_id),
            "lever": self.lever_id,
            "hubspot": self.hubspot_id,
            "bullhorn": str(self.bullhorn_id),
        }[crm]


RECRUITERS = (
    Recruiter(
        "maria",
        "Maria Chen",
        "maria.chen@example.com",
        "+12025550170",
        4080,
        "a1b2c3d4-0000-4000-8000-000000000001",
        "71000001",
        5001,
    ),
    Recruiter(
        "tom",
        "Tom Brady-Okoro",
        "tom.okoro@example.com",
        "+13125550171",
        4081,
        "a1b2c3d4-0000-4000-8000-000000000002",
        "71000002",
        5002,
    ),
    Recruiter(
        "sofia",
        "Sofia Ruiz",
        "sofia.ruiz@example.com",
        "+14155550172",
        4082,
        "a1b2c3d4-0000-4000-8000-000000000003",
        "71000003",
        5003,
    ),
    Recruiter(
        "james",
        "James Whitaker",
        "james.whitaker@example.com",
        "+12125550173",
        4083,
        "a1b2c3d4-0000-4000-8000-000000000004",
        "71000004",
        5004,
    ),
)


@dataclass(frozen=True)
class SeedPerson:
    """One seeded candidate, as the CRMs know them (before any engine normalisation)."""

    index: int
    first_name: str
    last_name: str
    email: str
    phone: str | None
    phone_e164: str | None
    timezone: str | None
    linkedin_url: str | None
    job_title: str
    department: str
    recruiter: Recruiter
    stage: str
    crms: tuple[str, ...]
    created_at: datetime
    sms_consent: bool
    email_opt_out: bool
    #: an X handle (no ``@``), unique to the person; each CRM fake keeps it its own way
    x_handle: str | None = None
    #: a Facebook profile URL, unique to the person
    facebook_url: str | None = None

    @property
    def name(self) -> str:
        """First and last name."""
        return f"{self.first_name} {self.last_name}"


def _digest(seed: int, index: int) -> bytes:
    return hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=16).digest()


def _stage(roll: int) -> str:
    total = 0
    for stage, share in STAGE_MIX:
        total += share
        if roll < total:
            return stage
    return "applied"  # pragma: no cover - STAGE_MIX sums to 100


def person(index: int, *, seed: int = 7, start: datetime = SEED_START) -> SeedPerson:
    """Candidate ``index`` of the population ``seed`` (the same answer every time)."""
    d = _digest(seed, index)
    first = FIRST[d[0] % len(FIRST)]
    last = LAST[d[1] % len(LAST)]
    job_title, department = JOBS[d[2] % len(JOBS)]
    area = AREA_CODES[index % len(AREA_CODES)]
    line = (index // len(AREA_CODES)) % 10000
    has_phone = d[3] % 10 < 7
    e164 = f"+1{area}555{line:04d}" if has_phone else None
    formats = (
        f"({area}) 555-{line:04d}",
        f"+1 {area} 555 {line:04d}",
        f"{area}.555.{line:04d}",
        f"+1{area}555{line:04d}",
    )
    phone = formats[d[4] % len(formats)] if has_phone else None
    primary = CRMS[d[5] % 3]
    crms = (primary,) if d[6] % 25 else (primary, CRMS[(d[5] + 1 + d[7] % 2) % 3])
    if d[13] % BULLHORN_ONE_IN == 0:
        # A staffing agency's share: Bullhorn takes the place of the first CRM, and a person
        # in two CRMs keeps the other one.
        crms = ("bullhorn", *crms[1:])
    return SeedPerson(
        index=index,
        first_name=first,
        last_name=last,
        email=f"{first}.{last}.{index}@example.com".lower(),
        phone=phone,
        phone_e164=e164,
        timezone=None,  # the engine derives it from the phone, or uses the default
        linkedin_url=(
            f"https://www.linkedin.com/in/{first}-{last}-{index}".lower() if d[8] % 4 else None
        ),
        job_title=job_title,
        department=department,
        recruiter=RECRUITERS[d[9] % len(RECRUITERS)],
        stage=_stage(d[10] % 100),
        crms=crms,
        created_at=start + timedelta(seconds=index * 5),  # in index order: fakes rely on it
        sms_consent=d[11] % 3 != 0,
        email_opt_out=d[12] % 100 == 0,
        # Bytes no other field reads, so the rest of the population stays as it was.
        x_handle=f"{first[:5]}_{index}".lower() if d[14] % 3 == 0 else None,
        facebook_url=(
            f"https://www.facebook.com/{first}.{last}.{index}".lower() if d[15] % 4 == 0 else None
        ),
    )


class Population(Sequence[SeedPerson]):
    """``count`` seeded people, built on demand (a million cost no memory)."""

    def __init__(self, count: int, *, seed: int = 7, start: datetime = SEED_START) -> None:
        self.count = count
        self.seed = seed
        self.start = start

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, index: int) -> SeedPerson: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[SeedPerson]: ...
    def __getitem__(self, index: int | slice) -> SeedPerson | Sequence[SeedPerson]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        return person(index, seed=self.seed, start=self.start)

    def __iter__(self) -> Iterator[SeedPerson]:
        for i in range(self.count):
            yield person(i, seed=self.seed, start=self.start)

    def in_crm(self, crm: str) -> list[SeedPerson]:
        """The people who live in ``crm`` (materialised: for demo-sized populations)."""
        return [p for p in self if crm in p.crms]
