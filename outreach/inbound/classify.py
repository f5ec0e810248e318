"""What a parsed message is: a human reply, an automatic reply, a bounce or an unsubscribe.

:func:`classify` decides in a fixed order, and ``Classification.reason`` names the rule that
decided:

1. **bounce**: an RFC 3464 report with failed or delayed recipients, or an old-style notice
   from MAILER-DAEMON/postmaster (Exim, qmail, early Gmail) whose text or
   ``X-Failed-Recipients`` names the address and carries a status code;
2. **auto**: the header and subject signals mature receivers use (Discourse's
   ``is_auto_generated?``, GitLab's receiver, Zammad's auto-response and out-of-office
   filters): RFC 3834 ``Auto-Submitted`` other than ``no``, ``X-Autoreply``/``X-Autorespond``,
   ``Precedence: auto_reply|bulk|junk|list``, Exchange's ``X-Auto-Response-Suppress: All``,
   ``List-Id``/``List-Unsubscribe``, daemon and no-reply senders, and automatic-reply subject
   prefixes in several languages. An auto-reply that is an absence notice (not a ticket
   acknowledgement or list mail) is ``out_of_office``, with the return date it names;
3. **unsubscribe**: the new text is nothing but an opt-out phrase ("remove me", "bitte
   austragen", "désinscrire", "darse de baja"...), give or take a greeting and a name;
4. **human** otherwise.

``new_text`` is the message without its quoted history or signature: reply headers ("On ...
wrote:", Outlook's "From:/Sent:" block, in en/de/fr/es/nl/it) are found with
mail-parser-reply's patterns plus our own, ``>``-quoted lines are dropped (so bottom-posted
and inline answers keep the answer), and signatures are cut with mail-parser-reply's
signature pattern when what follows really looks like a sign-off.

Example::

    verdict = classify(parse_mail(raw), received_at=now)
    if verdict.kind == "auto" and verdict.out_of_office:
        pause_until(verdict.returns_on)
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import dateparser
from mailparser_reply.parser import EmailMessage

from outreach.inbound.message import DeliveryStatus, Mail

__all__ = ["Bounce", "Classification", "Kind", "classify"]

Kind = Literal["human", "auto", "bounce", "unsubscribe"]


@dataclass(frozen=True)
class Bounce:
    """One recipient a delivery failed or was delayed for.

    ``status`` is the enhanced code ("5.1.1"), or "5.0.0"/"4.0.0" when only the class is
    known; ``permanent`` is true for a 5.x.x failure, false for 4.x.x and delay notices.
    """

    address: str
    status: str
    permanent: bool
    diagnostic: str | None


@dataclass(frozen=True)
class Classification:
    """The verdict on one message; see the module docstring for the rules."""

    kind: Kind
    reason: str
    new_text: str
    out_of_office: bool
    returns_on: date | None
    bounces: tuple[Bounce, ...]


def classify(mail: Mail, *, received_at: datetime) -> Classification:
    """Classify ``mail``; ``received_at`` anchors the out-of-office return date ("back on
    Monday" means the Monday after it arrived, and a date must fall within ~120 days after)."""
    bounced = _bounces(mail)
    if bounced is not None:
        reason, bounces = bounced
        return Classification("bounce", reason, "", False, None, bounces)
    text = _new_text(mail.text)
    auto = _auto_reason(mail)
    if auto is not None:
        absent = _out_of_office(mail, text)
        returns = _return_date(mail.subject, text, received_at) if absent else None
        return Classification("auto", auto, text, absent, returns, ())
    phrase = _unsubscribe_phrase(text, mail.subject)
    if phrase is not None:
        return Classification(
            "unsubscribe", f"unsubscribe phrase '{phrase}'", text, False, None, ()
        )
    return Classification("human", "no automatic markers", text, False, None, ())


# --------------------------------------------------------------------------------- folding

_COMBINING = re.compile(r"[\u0300-\u036f]+")


def _fold(text: str) -> str:
    """Lowercase without accents ("Büro" -> "buro"), for matching phrases in any spelling."""
    text = text.lower()
    if text.isascii():
        return text
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text))


# ---------------------------------------------------------------------------------- bounces

_BOUNCE_ACTIONS = ("failed", "delayed")
_BOUNCE_SENDER = re.compile(r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster)[+@]", re.I)
_DAEMON_NAME = re.compile(r"mail delivery (?:system|subsystem)|mailer.?daemon", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (?:failure|failed|has failed|delayed)"
    r"|mail delivery failed|returned mail|failure notice|could not be delivered|delayed mail"
    r"|non remis|unzustellbar|nicht zustellbar|no se puede entregar|no entregado",
    re.I,
)
_BOUNCE_TEXT = re.compile(
    r"could(?: not|n'?t) be delivered|was(?: not|n'?t) delivered|undeliverable"
    r"|delivery to the following recipients? failed|failed permanently|permanent (?:error|failure)"
    r"|user unknown|unknown user|no such user|mailbox (?:unavailable|full|not found)"
    r"|recipient address rejected|address(?:es)? failed|wasn'?t able to deliver"
    r"|not able to deliver|delivery has failed|will be retried|still being retried",
    re.I,
)
#: where an old-style bounce starts quoting the returned message
_NOTICE_END = re.compile(
    r"^[ \t]*-{2,}[ \t]*(?:This is a copy of|Below this line is a copy|Original message"
    r"|Undelivered message|The original message)",
    re.I | re.M,
)
_ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_SMTP_CODE = re.compile(r"(?:^|[\s(])([45])[0-5]\d[\s-](?=\D)", re.M)
_TEMPORARY = re.compile(
    r"delayed|will be retried|still being retried|temporar(?:y|ily)|warning only"
    r"|not yet been delivered",
    re.I,
)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")  # fmt: skip


def _bounces(mail: Mail) -> tuple[str, tuple[Bounce, ...]] | None:
    """The failed recipients and the deciding rule, or None when this is no bounce."""
    failed = [d for d in mail.delivery_status if d.action in _BOUNCE_ACTIONS]
    if failed:
        bounces = tuple(_from_report(d) for d in failed)
        return f"DSN {bounces[0].status}", bounces
    if mail.delivery_status:
        return None  # a report of successful delivery: an automatic message, not a bounce
    daemon = bool(mail.from_address and _BOUNCE_SENDER.match(mail.from_address)) or bool(
        mail.from_name and _DAEMON_NAME.search(mail.from_name)
    )
    failed_header = mail.header("x-failed-recipients")
    if not (daemon or failed_header):
        return None
    notice = mail.text[:20000]
    end = _NOTICE_END.search(notice)
    if end is not None:
        notice = notice[: end.start()]
    if not (failed_header or _BOUNCE_SUBJECT.search(mail.subject) or _BOUNCE_TEXT.search(notice)):
        return None
    delayed = bool(_TEMPORARY.search(notice) or _TEMPORARY.search(mail.subject))
    addresses = _failed_addresses(mail, notice, failed_header)
    if not addresses:
        return None
    bounces = tuple(_from_text(address, notice, delayed) for address in addresses)
    return f"bounce notice {bounces[0].status}", bounces


def _from_report(status: DeliveryStatus) -> Bounce:
    code = status.status
    if not code or code[0] not in "45":
        code = "4.0.0" if status.action == "delayed" else "5.0.0"
    permanent = code.startswith("5") and status.action == "failed"
    return Bounce(status.recipient, code, permanent, status.diagnostic)


def _failed_addresses(mail: Mail, notice: str, failed_header: str | None) -> list[str]:
    if failed_header:
        found = [a.strip().strip("<>").lower() for a in re.split(r"[,\s]+", failed_header)]
        return list(dict.fromkeys(a for a in found if "@" in a))
    own = set(mail.recipients)
    own.add(mail.from_address or "")
    for name in ("from", "return-path", "sender"):
        for value in mail.returned_headers.get(name, ()):
            own.update(a.lower() for a in _ADDRESS.findall(value))
    found = []
    for match in _ADDRESS.finditer(notice):
        address = match.group(0).lower().rstrip(".")
        if address not in own and not _BOUNCE_SENDER.match(address):
            found.append(address)
    return list(dict.fromkeys(found))[:20]


def _from_text(address: str, notice: str, delayed: bool) -> Bounce:
    lowered = notice.lower()
    at = lowered.find(address)
    window = notice[at : at + 1200] if at >= 0 else notice
    code = None
    match = _ENHANCED.search(window) or _ENHANCED.search(notice)
    if match is not None:
        code = ".".join(match.groups())
    else:
        match = _SMTP_CODE.search(window) or _SMTP_CODE.search(notice)
        if match is not None:
            code = f"{match.group(1)}.0.0"
    if code is None:
        code = "4.0.0" if delayed else "5.0.0"
    diagnostic = None
    if match is not None:
        source = match.string
        line_start = source.rfind("\n", 0, match.start()) + 1
        line_end = source.find("\n", match.end())
        line = source[line_start : None if line_end < 0 else line_end]
        diagnostic = re.sub(r"\s+", " ", line).strip()[:300] or None
    return Bounce(address, code, code.startswith("5") and not delayed, diagnostic)


# ------------------------------------------------------------------------------ auto-reply

_KEYWORD = re.compile(r"\s*([\w.-]+)")
_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk", "list"})
_NO = frozenset({"", "no", "false", "0", "none"})
_NOREPLY_SENDER = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|postmaster|no[-_.]?reply|do[-_.]?not[-_.]?reply"
    r"|dont[-_.]?reply|do[-_.]?no[-_.]?reply)(?:[-+._][^@]*)?@",
    re.I,
)
#: vendor headers that mark generated mail (Discourse's list, without Exchange's suppress)
_VENDOR_HEADER = re.compile(
    r"^x-(?!auto-response-suppress$)[\w-]*(?:auto-?(?:reply|replied|respon[ds]\w*|submitted"
    r"|generated)|autoresponder|holidayreply|machinegenerated)[\w-]*$"
)
_ALWAYS_SUBJECTS = (
    r"automatic reply|auto[ -]?reply|auto[ -]?response|autoresponder|out of (?:the )?office"
    r"|abwesenheitsnotiz|abwesenheitsmeldung|automatische antwort|automatisch antwoord"
    r"|reponse automatique|respuesta automatica|fuera de (?:la )?oficina|risposta automatica"
    r"|autosvar|automatisk svar|auto-reply"
)
_COLON_SUBJECTS = r"auto|ooo|oof|absence|absent|abwesend|ausente|afwezig|urlaub|vacation|away"
_AUTO_SUBJECT = re.compile(
    rf"^[\s\[(]*((?:{_ALWAYS_SUBJECTS})\b|(?:{_COLON_SUBJECTS})\s*[:\])])",
)


def _auto_reason(mail: Mail) -> str | None:
    """The first automatic-mail signal of ``mail``, as a readable rule; None when human."""
    headers = mail.headers
    submitted = _KEYWORD.match(mail.header("auto-submitted") or "")
    if submitted and submitted.group(1).lower() not in _NO:  # "auto-replied (vacation)"
        return f"Auto-Submitted: {submitted.group(1)}"
    for name, label in (("x-autoreply", "X-Autoreply"), ("x-autorespond", "X-Autorespond")):
        value = mail.header(name)
        if value is not None and value.strip().lower() not in _NO - {""}:
            return f"{label}: {value.strip()}" if value.strip() else label
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence in _PRECEDENCE:
        return f"Precedence: {precedence}"
    suppress = mail.header("x-auto-response-suppress") or ""
    # Only "All": Exchange sets it on its own automatic replies, while narrower values also
    # appear on people's mail (Discourse stopped treating the header as a signal at all).
    if "all" in {part.strip().lower() for part in suppress.split(",")}:
        return f"X-Auto-Response-Suppress: {suppress.strip()}"
    for name, label in (("list-id", "List-Id"), ("list-unsubscribe", "List-Unsubscribe")):
        if name in headers:
            return label
    if mail.from_address and _NOREPLY_SENDER.match(mail.from_address):
        return f"sender {mail.from_address.split('@', 1)[0]}@"
    subject = _auto_subject(mail.subject)
    if subject is not None:
        return f"subject '{subject}'"
    for name, values in headers.items():
        if _VENDOR_HEADER.match(name) and values[0].strip().lower() not in _NO:
            return f"{name}: {values[0].strip()[:40]}"
    if (mail.header("x-apple-action") or "").strip().lower() == "vacation":
        return "X-Apple-Action: VACATION"
    if mail.delivery_status:
        return "delivery report without failures"
    return None


def _auto_subject(subject: str) -> str | None:
    folded = _fold(subject)
    match = _AUTO_SUBJECT.match(folded)
    if match is None:
        return None
    if len(folded) == len(subject):  # folding kept offsets: quote the subject as written
        return subject[match.start(1) : match.end(1)].rstrip(":]) ").strip()
    return match.group(1).rstrip(":]) ").strip()


_OOO_MARKERS = re.compile(
    r"out of (?:the )?office|\booo\b|on (?:annual |parental |maternity |paternity |sick |study )?"
    r"leave|on (?:vacation|holidays?|pto|sabbatical)|(?:away|absent) from (?:the |my )?"
    r"(?:office|desk|e-?mail)|limited access to (?:my )?e-?mail|(?:upon|after|until) my return"
    r"|currently (?:away|travell?ing|out)|i am away|i'?m away|not in the office|on a business trip"
    r"|abwesen|nicht im bu(?:e)?ro|nicht erreichbar|im urlaub|urlaub|au(?:ß|ss|s)er haus"
    r"|nach meiner ru(?:e)?ckkehr|elternzeit|dienstreise"
    r"|\babsente?s?\b|en conges?|en vacances|hors du bureau|a mon retour|de retour le|\babsence"
    r"|fuera de la oficina|de vacaciones|\bausente\b|a mi regreso|a mi vuelta|de viaje|de permiso"
    r"|afwezig|met vakantie|niet op kantoor|niet aanwezig|fuori (?:sede|ufficio)|in ferie"
)
_TICKET_MARKERS = re.compile(
    r"\b(?:ticket|case|request|incident|inquiry|enquiry|anfrage|vorgang|demande|dossier"
    r"|solicitud|caso|peticion)\s*(?:#|no\.?|nr\.?|n°|number|nummer|numero|id)?\s*[:#(]?\s*"
    r"\[?#?[a-z]{0,6}-?\d{3,}|\[#?\d{3,}\]"
    r"|we (?:have )?received your (?:request|message|e-?mail|inquiry|enquiry|ticket)"
    r"|your (?:request|ticket|case|inquiry|enquiry) (?:has been|was) (?:received|created|logged)"
    r"|wir haben ihre (?:anfrage|nachricht|e-?mail) erhalten|ihre anfrage (?:ist|wurde)"
    r"|nous avons (?:bien )?recu votre|votre (?:demande|ticket) a (?:bien )?ete"
    r"|hemos recibido su|su (?:solicitud|ticket|caso) ha sido"
)


def _out_of_office(mail: Mail, text: str) -> bool:
    """An absence notice: a vacation marker or absence wording, and not list mail or a
    ticket system's acknowledgement."""
    if "list-id" in mail.headers or "list-unsubscribe" in mail.headers:
        return False
    seen = _fold(mail.subject + "\n" + text[:3000])
    if _TICKET_MARKERS.search(seen):
        return False
    submitted = (mail.header("auto-submitted") or "").lower()
    if "vacation" in submitted or "owner-email=" in submitted:
        return True  # Zimbra's and some hosted responders' vacation markers (Zammad)
    if (mail.header("x-apple-action") or "").strip().lower() == "vacation":
        return True
    return bool(_OOO_MARKERS.search(seen))


# ----------------------------------------------------------------------------- return date

#: the earliest and latest plausible return after the message arrived
_RETURN_WINDOW = timedelta(days=120)
_MAX_DATE_CANDIDATES = 4

_MONTHS = {
    "en": r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?",
    "de": r"jan(?:uar)?|janner|feb(?:ruar)?|maerz|marz?|apr(?:il)?|mai|jun[i]?|jul[i]?"
    r"|aug(?:ust)?|sep(?:t(?:ember)?)?|okt(?:ober)?|nov(?:ember)?|dez(?:ember)?",
    "fr": r"janv(?:ier)?|fevr(?:ier)?|mars|avr(?:il)?|mai|juin|juil(?:let)?|aout"
    r"|sept(?:embre)?|oct(?:obre)?|nov(?:embre)?|dec(?:embre)?",
    "es": r"ene(?:ro)?|feb(?:rero)?|mar(?:zo)?|abr(?:il)?|may(?:o)?|jun(?:io)?|jul(?:io)?"
    r"|ago(?:sto)?|sept?(?:iembre)?|set(?:iembre)?|oct(?:ubre)?|nov(?:iembre)?|dic(?:iembre)?",
    "nl": r"jan(?:uari)?|feb(?:ruari)?|maart|apr(?:il)?|mei|juni?|juli?|aug(?:ustus)?"
    r"|sep(?:t(?:ember)?)?|okt(?:ober)?|nov(?:ember)?|dec(?:ember)?",
}
_WEEKDAYS = {
    "en": r"mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?"
    r"|sat(?:urday)?|sun(?:day)?",
    "de": r"montag|dienstag|mittwoch|donnerstag|freitag|samstag|sonnabend|sonntag"
    r"|(?:mo|di|mi|do|fr|sa|so)\.",
    "fr": r"lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche",
    "es": r"lunes|martes|miercoles|jueves|viernes|sabado|domingo",
    "nl": r"maandag|dinsdag|woensdag|donderdag|vrijdag|zaterdag|zondag",
}
_RELATIVE = {
    "en": r"tomorrow|next week",
    "de": r"morgen|nachste woche",
    "fr": r"demain|la semaine prochaine",
    "es": r"manana",
    "nl": r"morgen|volgende week",
}
_NUMERIC = r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}(?:[./-](?:\d{4}|\d{2}))?\.?"


def _date_pattern(lang: str) -> str:
    day = r"[0-3]?\d(?:st|nd|rd|th|er|\.|º)?"
    month = rf"(?:{_MONTHS[lang]})\.?"
    year = r"(?:\d{4})"
    dmy = rf"{day}\s*(?:of\s+|de\s+)?{month}(?:,?\s+(?:de\s+|del\s+)?{year})?"
    mdy = rf"{month}\s+{day}(?:,?\s+{year})?"
    weekday = rf"(?:{_WEEKDAYS[lang]})"
    article = r"(?:the|den|dem|le|el|de)\s+"
    dated = rf"(?:{weekday},?\s+(?:{article})?)?(?:{dmy}|{mdy}|{_NUMERIC})"
    return rf"(?P<date>{dated}|{weekday}|{_RELATIVE[lang]})(?![\w])"


_GAP = r"(?:[\s,]+[\w']+){0,5}?[\s,]+"
#: (language, is-a-return (else "until"), trigger); the date follows the trigger
_TRIGGERS: tuple[tuple[str, bool, str], ...] = (
    ("en", True, r"\b(?:back|return(?:ing|s)?|be in the office|available again|reachable again)"
                 rf"{_GAP}(?:on\s+|by\s+|from\s+|after\s+|starting\s+)?"),
    ("en", False, r"\b(?:until|till|til|through|thru)\s+(?:and including\s+)?(?:the\s+)?"),
    ("de", True, r"\b(?:zuruck|zurueck|wieder (?:im buro|im buero|erreichbar|da|verfugbar|im haus)"
                 r"|ab)\s+(?:am\s+|dem\s+|den\s+|ab\s+)?"),
    ("de", False, r"\bbis\s+(?:zum\s+|zur\s+|einschlie(?:ß|ss|s)lich\s+|inkl\.?\s+|am\s+)?"
                  r"(?:den\s+|dem\s+)?"),
    ("fr", True, r"\b(?:de retour|retour|reviendrai|rentrerai|serai (?:a nouveau )?(?:disponible|"
                 rf"joignable|present)|reprendrai|a partir du|des le){_GAP}?(?:le\s+|du\s+)?"),
    ("fr", False, r"\bjusqu\W?(?:au|a)\s+(?:le\s+)?"),
    ("es", True, r"\b(?:de vuelta|de regreso|regreso|regresare|volvere|vuelvo|me reincorporo"
                 r"|me reincorporare|estare (?:de nuevo )?disponible|a partir del?)"
                 r"(?:\s+(?:a la oficina|al trabajo|en la oficina))?\s+(?:el\s+|el dia\s+)?"),
    ("es", False, r"\bhasta\s+(?:el\s+)?(?:dia\s+)?"),
    ("nl", True, r"\b(?:terug|weer aanwezig|weer op kantoor)\s+(?:op\s+|vanaf\s+)?"),
    ("nl", False, r"\btot\s+(?:en met\s+)?"),
)  # fmt: skip
_DE_REVERSED = re.compile(  # "am 14.12. bin ich wieder im Büro": the date comes first
    r"\b(?:am|ab(?:\s+(?:dem|den))?)\s+" + _date_pattern("de") + r"\s+(?:[\w.]+\s+){0,4}?wieder\b"
)
_RETURN_PATTERNS = tuple(
    (lang, is_return, re.compile(trigger + _date_pattern(lang)))
    for lang, is_return, trigger in _TRIGGERS
)
_DATE_SETTINGS_BASE = {"PREFER_DATES_FROM": "future", "PREFER_DAY_OF_MONTH": "first"}


def _return_date(subject: str, text: str, received_at: datetime) -> date | None:
    """The return date an absence notice names, if one is plausible: after the day it arrived
    and at most ~120 days later. "until X" counts as returning on X."""
    seen = _fold(subject + "\n" + text[:4000])
    found: list[tuple[bool, int, str, str]] = []
    for lang, is_return, pattern in _RETURN_PATTERNS:
        for match in pattern.finditer(seen):
            found.append((not is_return, match.start("date"), lang, match.group("date")))
    for match in _DE_REVERSED.finditer(seen):
        found.append((False, match.start("date"), "de", match.group("date")))
    found.sort()
    base = received_at.replace(tzinfo=None) if received_at.tzinfo else received_at
    for _until, _at, lang, candidate in found[:_MAX_DATE_CANDIDATES]:
        parsed = _parse_date(candidate.strip(" .,"), lang, base)
        if parsed is not None:
            return parsed
    return None


def _plausible(day: date, base: datetime) -> bool:
    return base.date() < day <= (base + _RETURN_WINDOW).date()


def _parse_date(candidate: str, lang: str, base: datetime) -> date | None:
    numeric = re.fullmatch(r"(\d{1,2})[./-](\d{1,2})(?:[./-](\d{2,4}))?\.?", candidate)
    if numeric is not None:
        return _numeric_date(numeric, lang, base)
    settings = {
        **_DATE_SETTINGS_BASE,
        "RELATIVE_BASE": base,
        "DATE_ORDER": "MDY" if lang == "en" else "DMY",
    }
    parsed = dateparser.parse(candidate, languages=[lang], settings=settings)
    if parsed is None:
        return None
    day = parsed.date()
    return day if _plausible(day, base) else None


def _numeric_date(match: re.Match[str], lang: str, base: datetime) -> date | None:
    first, second = int(match.group(1)), int(match.group(2))
    year_text = match.group(3)
    orders = [(first, second)] if lang != "en" else [(second, first), (first, second)]
    options = []
    for day, month in orders:
        years = [base.year, base.year + 1]
        if year_text:
            years = [int(year_text) + (2000 if len(year_text) == 2 else 0)]
        for year in years:
            try:
                options.append(date(year, month, day))
            except ValueError:
                continue
    plausible = [d for d in options if _plausible(d, base)]
    return min(plausible) if plausible else None


# -------------------------------------------------------------------------------- new text

#: the reply-header and signature patterns of mail-parser-reply, compiled once
_REPLY_LANGUAGES = ["en", "de", "fr", "es", "nl", "it"]
_LIBRARY = EmailMessage(text="", languages=list(_REPLY_LANGUAGES), keep_hyphen_lists=True)
_LIB_HEADER = _LIBRARY.HEADER_REGEX
_LIB_SIGNATURE = _LIBRARY.SIGNATURE_REGEX
#: how much of a long text is searched for history and signatures
_TEXT_SCAN = 100_000

_WROTE = re.compile(
    r"^(?:On|Am|Le|El|Op|Il|Em|Den)\s.{0,300}?\s(?:wrote|schrieb|a (?:é|e)crit|escribi(?:ó|o)"
    r"|schreef|ha scritto|scrisse|escreveu|skrev)\b.{0,120}:$",
    re.I,
)
_WROTE_TAIL = re.compile(r"^.{0,120}\b(?:wrote|schrieb|a (?:é|e)crit|escribi(?:ó|o)|schreef):$")
_FROM_LINE = re.compile(r"^\*{0,2}(?:From|Von|De|Van|Da|Fra|Från|Od)\s?\*{0,2}:\*{0,2}\s*\S", re.I)
_HEADER_LINE = re.compile(
    r"^\*{0,2}(?:Sent|Date|To|Subject|Cc|Gesendet|Datum|An|Betreff|Envoy(?:é|e)|À|A|Objet"
    r"|Enviado|Fecha|Para|Asunto|Verzonden|Aan|Onderwerp|Inviato|Data|Oggetto|Skickat|Sendt)"
    r"\s?\*{0,2}:",
    re.I,
)
_SEPARATOR = re.compile(
    r"^-{3,}\s*(?:Original Message|Urspr(?:ü|u)ngliche Nachricht|Originalnachricht"
    r"|Message d'origine|Message original|Mensaje original|Oorspronkelijk bericht"
    r"|Messaggio originale|Forwarded message|Weitergeleitete Nachricht"
    r"|Message transf(?:é|e)r(?:é|e)|Mensaje reenviado)\s*-{3,}$",
    re.I,
)
_RULE_LINE = re.compile(r"^[_\-=*]{10,}$")
_CANDIDATE = re.compile(
    r"^\*{0,2}(?:[A-Za-zÀ-ÿ]{1,12}\s?\*{0,2}:|(?:On|Am|Le|El|Op|Il)\s.*\d)", re.I
)
_MAYBE_HEADER = re.compile(
    r"(?:On|Am|Le|El|Op|Il|Em|Den)\s|\*{0,2}[A-Za-zÀ-ÿ]{1,14}\s?\*{0,2}:", re.I
)
_SIGN_OFF = re.compile(
    r"^(?:--|__|Sent from my|Sent from Outlook|Get Outlook for|Von meinem .{1,40} gesendet"
    r"|Gesendet von|Envoy(?:é|e) de mon|Envoy(?:é|e) depuis|Enviado desde|Verzonden met"
    r"|Inviato da)",
    re.I,
)


def _new_text(text: str) -> str:
    """The text the sender wrote in this message: no quoted history, no signature."""
    lines = [line.strip() for line in text[:_TEXT_SCAN].replace("\xa0", " ").split("\n")]
    marker, kind = _history_start(lines, 0)
    if marker is None:
        kept = [line for line in lines if not line.startswith(">")]
    else:
        kept = [line for line in lines[:marker] if not line.startswith(">")]
        if kind == "wrote" and _followed_by_quote(lines, marker + 1):
            # Bottom-posted or inline answers: the new text sits between the quoted blocks.
            rest, _kind = _history_start(lines, marker + 1, outlook_only=True)
            for line in lines[marker + 1 : rest]:
                if not line.startswith(">") and not _WROTE.match(line):
                    kept.append(line)
    body = "\n".join(kept)
    body = _strip_signature(body)
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    while body and _RULE_LINE.match(body.rsplit("\n", 1)[-1]):
        body = body.rsplit("\n", 1)[0].rstrip() if "\n" in body else ""
    return body


def _history_start(
    lines: list[str], start: int, outlook_only: bool = False
) -> tuple[int | None, str]:
    """The index of the first line where quoted history starts and its kind: ``wrote`` for an
    attribution line ("On ... wrote:"), ``outlook`` for a header block or separator."""
    for i in range(start, len(lines)):
        line = lines[i]
        if not line or line[0] == ">":
            continue
        if not (line[0] in "-_=*" or line[-1] == ":" or _MAYBE_HEADER.match(line)):
            continue  # the cheap test that spares most lines of prose the patterns below
        if _SEPARATOR.match(line):
            return i, "outlook"
        if _RULE_LINE.match(line) and _from_block(lines, _next_content(lines, i + 1)):
            return i, "outlook"
        if _from_block(lines, i):
            return i, "outlook"
        if outlook_only:
            continue
        if _WROTE.match(line) or (_WROTE_TAIL.match(line) and _followed_by_quote(lines, i + 1)):
            return i, "wrote"
        if i + 1 < len(lines) and _WROTE.match(line + " " + lines[i + 1]):
            return i, "wrote"  # Gmail wraps a long attribution line
        if _CANDIDATE.match(line) and _library_header(lines, i):
            return i, "outlook" if ":" in line[:20] else "wrote"
    return None, ""


def _from_block(lines: list[str], i: int | None) -> bool:
    """Outlook's quoted header: a From line followed within a few lines by Sent/To/Subject."""
    if i is None or i >= len(lines) or not _FROM_LINE.match(lines[i]):
        return False
    return any(_HEADER_LINE.match(line) for line in lines[i + 1 : i + 5] if line)


def _library_header(lines: list[str], i: int) -> bool:
    return _LIB_HEADER.match("\n".join(lines[i : i + 6])[:600]) is not None


def _next_content(lines: list[str], i: int) -> int | None:
    for j in range(i, min(len(lines), i + 3)):
        if lines[j]:
            return j
    return None


def _followed_by_quote(lines: list[str], i: int) -> bool:
    j = _next_content(lines, i)
    return j is not None and lines[j].startswith(">")


def _strip_signature(body: str) -> str:
    """Cut the signature where mail-parser-reply's pattern finds one, but only if it reads as a
    sign-off ("Best regards," and a few lines); "Thanks, I'd love to" starts no signature.
    Mobile sign-offs the library does not know ("Von meinem iPhone gesendet") are cut too."""
    body = _cut_library_signature(body)
    lines = body.split("\n")
    for i in range(1, len(lines)):
        if _SIGN_OFF.match(lines[i]) and sum(1 for line in lines[i:] if line) <= 4:
            return "\n".join(lines[:i]).rstrip()
    return body


def _cut_library_signature(body: str) -> str:
    pos = 0
    while pos < len(body):
        match = _LIB_SIGNATURE.search(body, pos)
        if match is None:
            return body
        block = match.group(0).strip()
        first = block.split("\n", 1)[0].strip()
        rest = [line for line in block.split("\n")[1:] if line.strip()]
        if _SIGN_OFF.match(first) or (len(first.split()) <= 4 and len(rest) <= 8):
            return body[: match.start()].rstrip()
        line_at = body.find(first, match.start())
        pos = body.find("\n", line_at + len(first)) if line_at >= 0 else -1
        if pos < 0:
            return body
    return body


# ----------------------------------------------------------------------------- unsubscribe

_POLITE = (
    r"please|pls|plz|kindly|thanks|thank you|thx|ty|just|hi|hello|hey|dear|ok|okay"
    r"|bitte|danke|danke schon|vielen dank|hallo|guten tag"
    r"|merci|svp|sil vous plait|sil te plait|stp|bonjour|salut"
    r"|por favor|gracias|muchas gracias|hola|buenos dias"
    r"|alstublieft|aub|graag|bedankt|dank je|dank u|hoi|grazie|per favore|ciao"
)
_LIST = r"(?:mailing |email |e mail |distribution |contact |mail )?(?:list|liste|lists)"
_YOUR = r"(?:your|this|the|all|any)"
_UNSUBSCRIBE = (
    # en
    rf"unsubscribe(?: me)?(?: from {_YOUR} (?:{_LIST}|emails?|newsletter|mailings?))?|unsub"
    rf"|stop(?: it| now| all| please)?"
    rf"|stop (?:emailing|mailing|contacting|messaging|spamming|writing to|sending) me"
    rf"(?: (?:emails?|messages|mails))?(?: again| anymore| any more)?"
    rf"|stop (?:sending|all|the|these|your) (?:emails?|messages|mails|communications?)"
    rf"|(?:remove|delete|take|drop) me (?:off|from) {_YOUR} (?:{_LIST}|database|mailings?|emails?)"
    rf"|(?:remove|delete|take|drop) me(?: off)?"
    rf"|(?:remove|delete) my (?:email|e mail|address|email address|details|data|contact)"
    rf"(?: from {_YOUR} (?:{_LIST}|database|system))?"
    rf"|opt(?: me)? out|i (?:want|would like|wish|d like) to (?:unsubscribe|opt out|be removed)"
    rf"|(?:do not|dont|never) (?:contact|email|e mail|message|write to|mail) me"
    rf"(?: again| anymore| any more| ever again)?|no more (?:emails?|messages|mails)"
    # de
    rf"|(?:mich )?(?:abmelden|austragen|abbestellen|entfernen|loschen)"
    rf"|melden sie mich ab|tragen sie mich aus|bitte aus (?:dem|ihrem) verteiler (?:entfernen"
    rf"|nehmen|austragen)|(?:entfernen|loschen|streichen|nehmen) sie mich(?: aus (?:ihrem|dem|"
    rf"ihrer) (?:verteiler|liste|e ?mail ?verteiler|newsletter|datenbank|kartei))?"
    rf"|aus (?:dem|ihrem) verteiler (?:entfernen|nehmen|austragen|streichen)"
    rf"|keine (?:weiteren )?(?:e ?mails|nachrichten|mails|kontaktaufnahmen?)(?: mehr)?"
    rf"|kontaktieren sie mich nicht mehr|schreiben sie mir nicht mehr|stopp?"
    # fr
    rf"|(?:de )?(?:me |se )?(?:desabonner|desinscrire|desinscription|desabonnement|retirer"
    rf"|supprimer|enlever)(?: de (?:votre|la|cette|vos) (?:liste|base|mailing|liste de diffusion"
    rf"|base de donnees|listes))?"
    rf"|(?:desabonnez|desinscrivez|retirez|supprimez|enlevez|rayez) moi(?: de (?:votre|la|cette)"
    rf" (?:liste|base|mailing|liste de diffusion|base de donnees))?"
    rf"|ne (?:plus )?me (?:contacter|contactez|ecrire|ecrivez|envoyer)(?: plus)?"
    rf"(?: de (?:mails?|messages|e mails?|courriels?))?|arretez(?: de mecrire| de me contacter"
    rf"| les (?:mails|emails|e mails|messages|envois))?"
    # es
    rf"|(?:darme|darse|dar|dame|denme|deme|me doy) de baja(?: de (?:su|la|esta|vuestra) lista)?"
    rf"|baja|(?:quiero|deseo|quisiera) (?:darme de baja|que me (?:eliminen|borren|quiten|saquen)"
    rf"(?: de (?:su|la|esta) lista)?)|no me (?:escriban|escribas|contacten|contactes|envien|envies"
    rf"|manden|mandes|escriba|contacte)(?: mas)?(?: (?:correos|emails|e mails|mensajes))?"
    rf"(?: mas)?|(?:eliminenme|borrenme|quitenme|saquenme|eliminarme|borrarme|quitarme|sacarme)"
    rf"(?: de (?:su|la|esta|sus) (?:lista|listas|base de datos))?|cancelar (?:la )?suscripcion"
    rf"|desuscribir(?:me|se)?|no mas (?:correos|emails|mensajes)"
    # nl, it
    rf"|(?:mij |me )?(?:uitschrijven|afmelden)|schrijf (?:mij|me) uit|meld (?:mij|me) af"
    rf"|verwijder (?:mij|me)(?: uit (?:uw|je|jullie|de) (?:lijst|bestand|mailinglijst|database))?"
    rf"|geen (?:e ?mails|mails|berichten) meer|cancellami|disiscrivimi|rimuovimi"
    rf"|non (?:contattatemi|scrivetemi) piu"
)
_UNSUBSCRIBE_CORE = re.compile(
    rf"(?:(?:{_POLITE})\s+)*(?P<core>{_UNSUBSCRIBE})(?:\s+(?:{_POLITE}))*"
)
_POLITE_ONLY = re.compile(rf"(?:(?:{_POLITE})\s*)*")
#: short chunks that may stand beside an opt-out without making it a conversation
_ASIDES = re.compile(
    r"not interested|no longer interested|kein interesse|nicht interessiert|pas interesse"
    r"|no me interesa|geen interesse|no thanks?|nein danke|non merci|no gracias|nee dank je"
    r"|best|regards|best regards|kind regards|cheers|thanks again|mit freundlichen grussen"
    r"|viele grusse|grusse|gruss|lg|mfg|cordialement|bien a vous|salutations|saludos"
    r"|un saludo|atentamente|met vriendelijke groet|groeten|sent from my \w+"
)
_CHUNKS = re.compile(r"[.!?;¡¿\n]+|,\s")
_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|aw|fw|fwd|wg|tr|rv|sv|antw|r)\s*(?:\[\d+\])?\s*:)+", re.I)
_MAX_UNSUBSCRIBE_WORDS = 12
_ABBREVIATIONS = re.compile(r"\b(?:a\.\s?u\.\s?b|s\.\s?v\.\s?p|z\.\s?b|u\.\s?a|p\.\s?s)\.?", re.I)


def _normalize(text: str) -> str:
    folded = _fold(text).replace("'", "").replace("’", "").replace("`", "")
    return " ".join(re.sub(r"[^\w]+|_", " ", folded).split())


def _unsubscribe_phrase(text: str, subject: str) -> str | None:
    """The opt-out phrase the new text consists of, or None. Besides the phrase only a
    greeting, a "not interested", thanks and a name (capitalised words) may be there."""
    if not _normalize(text):
        text = _REPLY_PREFIX.sub("", subject)
    text = _ABBREVIATIONS.sub(" ", text)  # "a.u.b." would split into sentences
    if len(_normalize(text).split()) > _MAX_UNSUBSCRIBE_WORDS:
        return None
    core = None
    for chunk in _CHUNKS.split(text):
        normal = _normalize(chunk)
        if not normal:
            continue
        match = _UNSUBSCRIBE_CORE.fullmatch(normal)
        if match is not None:
            core = core or match.group("core")
            continue
        if _POLITE_ONLY.fullmatch(normal) or _ASIDES.fullmatch(normal) or _is_name(chunk):
            continue
        return None
    return core


def _is_name(chunk: str) -> bool:
    """A greeting or sign-off with a name: "Hi Anna", "Jane Doe", "J. Doe"."""
    words = [w for w in re.split(r"[\s,]+", chunk.strip()) if w]
    words = [w for w in words if not _POLITE_ONLY.fullmatch(_normalize(w))]
    return 0 < len(words) <= 3 and all(w[:1].isupper() for w in words)
