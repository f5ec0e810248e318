"""classify: every corpus message, and the edge rules of each kind."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from outreach.inbound.classify import Bounce, Classification, classify
from outreach.inbound.message import Mail, parse_mail

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST: dict[str, dict] = yaml.safe_load((CORPUS / "corpus.yaml").read_text(encoding="utf-8"))
RECEIVED = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)


def corpus_verdict(name: str) -> tuple[Mail, Classification]:
    parsed = parse_mail((CORPUS / name).read_bytes())
    received = MANIFEST[name].get("received_at") or parsed.date
    return parsed, classify(parsed, received_at=received)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_corpus_message_classifies(name: str):
    expected = MANIFEST[name]
    _mail, verdict = corpus_verdict(name)

    assert verdict.kind == expected["kind"], verdict.reason
    assert verdict.reason
    assert verdict.out_of_office is expected.get("out_of_office", False)
    assert verdict.returns_on == expected.get("returns_on")
    bounces = [
        Bounce(b["address"], str(b["status"]), b["permanent"], None)
        for b in expected.get("bounces", [])
    ]
    assert [(b.address, b.status, b.permanent) for b in verdict.bounces] == [
        (b.address, b.status, b.permanent) for b in bounces
    ]
    if expected["kind"] == "bounce":
        assert verdict.new_text == ""
    assert expected["contains"] in verdict.new_text
    if expected["contains"] == "":
        assert verdict.new_text == "" or expected["kind"] != "bounce"
    assert expected["not_contains"] not in verdict.new_text
    assert verdict.new_text == verdict.new_text.strip()


def test_corpus_covers_every_kind_and_language():
    kinds = {entry["kind"] for entry in MANIFEST.values()}
    assert kinds == {"human", "auto", "bounce", "unsubscribe"}
    assert sum(1 for e in MANIFEST.values() if e.get("returns_on")) >= 6


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("postfix_dsn_511.eml", "DSN 5.1.1"),
        ("qmail_bounce.eml", "bounce notice 5.1.1"),
        ("exchange_autoreply_en.eml", "Auto-Submitted: auto-generated"),
        ("ooo_fr.eml", "Auto-Submitted: auto-replied"),
        ("icloud_vacation_no_date.eml", "subject 'Auto reply'"),
        ("mailing_list.eml", "Precedence: list"),
        ("noreply_notice.eml", "sender no-reply@"),
        ("unsubscribe_en.eml", "unsubscribe phrase 'remove me from your list'"),
        ("unsubscribe_subject_only.eml", "unsubscribe phrase 'unsubscribe'"),
        ("gmail_reply_en.eml", "no automatic markers"),
    ],
)
def test_reasons_name_the_rule(name: str, reason: str):
    assert corpus_verdict(name)[1].reason == reason


def test_bounce_diagnostics_are_kept():
    _mail, verdict = corpus_verdict("gmail_dsn_511.eml")
    assert "does not exist" in (verdict.bounces[0].diagnostic or "")
    _mail, verdict = corpus_verdict("qmail_bounce.eml")
    assert verdict.bounces[0].diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"


# ----------------------------------------------------------------------------- helpers


def build(
    body: str = "Sounds good, talk soon.",
    *,
    subject: str = "Re: Backend Engineer at Northwind",
    sender: str = "Jane Doe <jane.doe@example.com>",
    headers: str = "",
) -> Mail:
    raw = (
        f"From: {sender}\nTo: replies+t0000000001@hire.example.com\nSubject: {subject}\n"
        "Date: Thu, 3 Dec 2026 10:00:00 +0100\nMessage-ID: <m1@example.com>\n"
        "In-Reply-To: <touch-1.abc@hire.example.com>\n"
        "Content-Type: text/plain; charset=utf-8\n" + headers + "\n" + body
    )
    return parse_mail(raw.encode("utf-8"))


def verdict_of(body: str = "Sounds good, talk soon.", **kwargs) -> Classification:
    return classify(build(body, **kwargs), received_at=RECEIVED)


# ---------------------------------------------------------------------------- auto-reply


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-replied\n", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: auto-generated\n", "Auto-Submitted: auto-generated"),
        (
            "Auto-Submitted: auto-notified; owner-email=x@example.com\n",
            "Auto-Submitted: auto-notified",
        ),
        ("X-Autoreply: yes\n", "X-Autoreply: yes"),
        ("X-Autorespond: Sorry, out\n", "X-Autorespond: Sorry, out"),
        ("Precedence: bulk\n", "Precedence: bulk"),
        ("Precedence: junk\n", "Precedence: junk"),
        ("Precedence: list\n", "Precedence: list"),
        ("Precedence: auto_reply\n", "Precedence: auto_reply"),
        ("X-Auto-Response-Suppress: All\n", "X-Auto-Response-Suppress: All"),
        ("List-Id: <jobs.lists.example.org>\n", "List-Id"),
        ("List-Unsubscribe: <mailto:u@lists.example.org>\n", "List-Unsubscribe"),
        ("X-Autogenerated: Reply\n", "x-autogenerated: Reply"),
        ("X-FC-MachineGenerated: true\n", "x-fc-machinegenerated: true"),
        ("X-Apple-Action: VACATION\n", "X-Apple-Action: VACATION"),
    ],
)
def test_auto_reply_headers(headers: str, reason: str):
    verdict = verdict_of(headers=headers)
    assert (verdict.kind, verdict.reason) == ("auto", reason)


@pytest.mark.parametrize(
    "headers",
    [
        "Auto-Submitted: no\n",
        "Auto-Submitted: No (a person wrote this)\n",
        "X-Autoreply: no\n",
        "Precedence: first-class\n",
        # Narrower suppress values also appear on people's own mail; only "All" counts.
        "X-Auto-Response-Suppress: DR, RN, NRN, OOF, AutoReply\n",
        "X-Auto-Response-Suppress: None\n",
    ],
)
def test_headers_that_do_not_make_mail_automatic(headers: str):
    assert verdict_of(headers=headers).kind == "human"


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.org",
        "postmaster@example.org",
        "noreply@example.com",
        "no-reply@example.com",
        "no_reply+jobs@example.com",
        "do-not-reply@example.net",
        "donotreply@example.net",
    ],
)
def test_daemon_and_no_reply_senders(sender: str):
    verdict = verdict_of("Your message was received.", sender=sender)
    assert verdict.kind == "auto"
    assert verdict.reason.startswith("sender ")


@pytest.mark.parametrize(
    ("subject", "matched"),
    [
        ("Automatic reply: Backend Engineer", "Automatic reply"),
        ("Auto: Backend Engineer", "Auto"),
        ("AutoReply: Backend Engineer", "AutoReply"),
        ("[Auto-Reply] Backend Engineer", "Auto-Reply"),
        ("Auto Response: Backend Engineer", "Auto Response"),
        ("Out of Office: Backend Engineer", "Out of Office"),
        ("OUT OF THE OFFICE", "OUT OF THE OFFICE"),
        ("OOO: back Monday", "OOO"),
        ("Abwesenheitsnotiz: Backend Engineer", "Abwesenheitsnotiz"),
        ("Automatische Antwort: Backend Engineer", "Automatische Antwort"),
        ("Réponse automatique : Backend Engineer", "Réponse automatique"),
        ("Reponse automatique: Backend Engineer", "Reponse automatique"),
        ("Absence: Backend Engineer", "Absence"),
        ("Respuesta automática: Backend Engineer", "Respuesta automática"),
        ("Fuera de la oficina: Backend Engineer", "Fuera de la oficina"),
        ("Automatisch antwoord: Backend Engineer", "Automatisch antwoord"),
    ],
)
def test_auto_reply_subjects(subject: str, matched: str):
    verdict = verdict_of("I'm away.", subject=subject)
    assert (verdict.kind, verdict.reason) == ("auto", f"subject '{matched}'")


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Out of office plans?",
        "Re: Automation Engineer at Northwind",
        "Auto industry role",
        "Re: Absence policy question",
        "Vacation days in the offer",
    ],
)
def test_subjects_that_are_not_auto_replies(subject: str):
    assert verdict_of(subject=subject).kind == "human"


def test_out_of_office_needs_absence_wording_or_a_vacation_marker():
    assert (
        verdict_of("Thanks, noted.", headers="Auto-Submitted: auto-replied\n").out_of_office
        is False
    )
    marked = verdict_of("Thanks.", headers="Auto-Submitted: auto-replied (vacation)\n")
    assert marked.out_of_office is True and marked.returns_on is None
    worded = verdict_of(
        "Ich bin im Urlaub und ab Montag wieder erreichbar.",
        headers="Auto-Submitted: auto-replied\n",
    )
    assert worded.out_of_office is True
    assert worded.returns_on == date(2026, 12, 7)


def test_ticket_acknowledgement_and_list_mail_are_not_absences():
    ticket = verdict_of(
        "We have received your request. I am out of the office hours team, ticket #55123.",
        headers="Auto-Submitted: auto-generated\n",
    )
    assert (ticket.kind, ticket.out_of_office) == ("auto", False)
    listed = verdict_of("Out of office until Monday", headers="List-Id: <l.example.org>\n")
    assert (listed.kind, listed.out_of_office, listed.returns_on) == ("auto", False, None)


# --------------------------------------------------------------------------- return date


def ooo(text: str, received: datetime = RECEIVED) -> date | None:
    mail = build(text, subject="Out of Office", headers="Auto-Submitted: auto-replied\n")
    verdict = classify(mail, received_at=received)
    assert verdict.out_of_office, text
    return verdict.returns_on


@pytest.mark.parametrize(
    ("text", "returns"),
    [
        ("I'm out of the office and back on 12 December.", date(2026, 12, 12)),
        ("Out of office, returning Monday, Dec 14.", date(2026, 12, 14)),
        ("Out of office. I will return on 14/12/2026.", date(2026, 12, 14)),
        ("I am on leave until December 14.", date(2026, 12, 14)),
        ("Out of office until the 14th of December 2026.", date(2026, 12, 14)),
        ("I'm away and back on Monday.", date(2026, 12, 7)),
        ("Out of office, back tomorrow.", date(2026, 12, 4)),
        ("Ich bin nicht im Büro und zurück am 14.12.2026.", date(2026, 12, 14)),
        ("Ich bin bis zum 14. Dezember im Urlaub.", date(2026, 12, 14)),
        ("Ich bin nicht im Büro. Ab dem 15.12. bin ich wieder erreichbar.", date(2026, 12, 15)),
        ("Je suis absent, de retour le 14 décembre.", date(2026, 12, 14)),
        ("Je suis en congés jusqu'au 11 décembre.", date(2026, 12, 11)),
        ("Estoy de vacaciones, estaré de vuelta el 14 de diciembre.", date(2026, 12, 14)),
        ("Estoy fuera de la oficina hasta el 10 de diciembre.", date(2026, 12, 10)),
        ("Ik ben afwezig, terug op 14 december.", date(2026, 12, 14)),
    ],
)
def test_return_dates(text: str, returns: date):
    assert ooo(text) == returns


@pytest.mark.parametrize(
    "text",
    [
        "I am on leave until 30 September 2027.",  # ~300 days later
        "Out of office, back on 1 December.",  # before it arrived (next year is too far)
        "Out of office, back on 3 December 2026.",  # the day it arrived
        "I am on vacation with limited access to email.",
        "Out of office until 31/02/2027.",  # no such day
    ],
)
def test_no_plausible_return_date(text: str):
    assert ooo(text) is None


def test_return_date_after_new_year_and_ambiguous_numbers():
    december = datetime(2026, 12, 20, 9, 0, tzinfo=UTC)
    assert ooo("Out of office, back on 5 January.", december) == date(2027, 1, 5)
    assert ooo("Ich bin im Urlaub bis zum 4.1.", december) == date(2027, 1, 4)
    # en: 04/01/2027 is 1 April (US) or 4 January (UK); the nearer plausible one wins
    assert ooo("Out of office, back on 04/01/2027.", december) == date(2027, 1, 4)


def test_a_start_date_before_arrival_does_not_hide_the_return():
    text = "Ich bin ab 01.12.2026 nicht im Büro. Ich kehre zurück am 14.12.2026."
    assert ooo(text) == date(2026, 12, 14)


# --------------------------------------------------------------------------- unsubscribe


@pytest.mark.parametrize(
    "text",
    [
        "unsubscribe",
        "UNSUBSCRIBE",
        "Stop",
        "STOP.",
        "Remove me",
        "Please remove me from your list.",
        "please remove me from your mailing list!",
        "Take me off your list",
        "Stop emailing me.",
        "Do not contact me again.",
        "Please don't email me.",
        "Not interested. Please remove me.",
        "Unsubscribe\n\nJane Doe",
        "Hi Anna, please remove me. Thanks, Jane",
        "Abmelden",
        "Bitte austragen",
        "Bitte entfernen Sie mich aus Ihrem Verteiler.",
        "Keine E-Mails mehr, danke.",
        "Désabonner",
        "Me désinscrire svp",
        "Merci de me retirer de votre liste",
        "Ne me contactez plus.",
        "Darse de baja",
        "Por favor, denme de baja.",
        "No me escriban más.",
        "Uitschrijven",
        "Verwijder mij uit uw lijst a.u.b.",
    ],
)
def test_unsubscribe_phrases(text: str):
    verdict = verdict_of(text)
    assert verdict.kind == "unsubscribe", verdict.reason
    assert verdict.reason.startswith("unsubscribe phrase '")


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to stop by on Tuesday",
        "Stop! I accept the offer, when do I start?",
        "Stop, that's great news!",
        "Please don't stop sending me roles like this one.",
        "Can you remove me from the Tuesday slot and book Wednesday instead?",
        "Not interested, thanks.",
        "Please remove me from your list, I have asked three times already and nobody reacts",
        "How do I unsubscribe from the newsletter but keep hearing about roles?",
        "Thanks",
        "",
    ],
)
def test_not_unsubscribes(text: str):
    assert verdict_of(text).kind == "human"


def test_unsubscribe_subject_needs_an_empty_body():
    assert verdict_of("", subject="Re: unsubscribe").kind == "unsubscribe"
    assert verdict_of("Actually, tell me more.", subject="unsubscribe").kind == "human"


def test_auto_reply_is_never_an_unsubscribe():
    verdict = verdict_of("unsubscribe", headers="Auto-Submitted: auto-replied\n")
    assert verdict.kind == "auto"


# -------------------------------------------------------------------------------- bounce


def dsn(blocks: str, sender: str = "MAILER-DAEMON@mx.example.org") -> Mail:
    return parse_mail(
        (
            f"From: {sender}\nTo: replies+t0000000009@hire.example.com\nSubject: Report\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n\n"
            "--r\nContent-Type: text/plain\n\nReport.\n"
            f"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n{blocks}\n"
            "--r--\n"
        ).encode()
    )


def test_dsn_one_bounce_per_failed_or_delayed_recipient():
    verdict = classify(
        dsn(
            "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.2.2\n\n"
            "Final-Recipient: rfc822; b@example.org\nAction: delayed\nStatus: 4.2.2\n\n"
            "Final-Recipient: rfc822; c@example.org\nAction: delivered\nStatus: 2.0.0\n\n"
            "Final-Recipient: rfc822; d@example.org\nAction: failed\n\n"
            "Final-Recipient: rfc822; e@example.org\nAction: delayed\n\n"
            "Final-Recipient: rfc822; f@example.org\nAction: failed\nStatus: 4.4.7\n"
        ),
        received_at=RECEIVED,
    )
    assert verdict.kind == "bounce" and verdict.reason == "DSN 5.2.2"
    assert [(b.address, b.status, b.permanent) for b in verdict.bounces] == [
        ("a@example.org", "5.2.2", True),
        ("b@example.org", "4.2.2", False),
        ("d@example.org", "5.0.0", True),
        ("e@example.org", "4.0.0", False),
        ("f@example.org", "4.4.7", False),
    ]
    assert verdict.new_text == "" and verdict.out_of_office is False


def test_a_report_of_delivery_is_automatic_not_a_bounce():
    verdict = classify(
        dsn(
            "Final-Recipient: rfc822; c@example.org\nAction: delivered\nStatus: 2.0.0\n",
            sender="postmaster@example.org",
        ),
        received_at=RECEIVED,
    )
    assert verdict.kind == "auto" and verdict.bounces == ()


@pytest.mark.parametrize(
    ("notice", "headers", "expected"),
    [
        (
            "The following address(es) failed:\n\n  a@example.org\n    550 5.1.1 User unknown\n",
            "X-Failed-Recipients: a@example.org, B@example.org\n",
            [("a@example.org", "5.1.1", True), ("b@example.org", "5.1.1", True)],
        ),
        (
            "I wasn't able to deliver your message to:\n<x@example.org>:\n550 no such user\n",
            "",
            [("x@example.org", "5.0.0", True)],
        ),
        (
            "Your message could not be delivered for 4 hours. It will be retried.\n"
            "<y@example.org>: connection timed out\n",
            "",
            [("y@example.org", "4.0.0", False)],
        ),
    ],
)
def test_old_style_bounces(notice: str, headers: str, expected: list[tuple[str, str, bool]]):
    mail = build(
        notice, subject="failure notice", sender="MAILER-DAEMON@mx.example.org", headers=headers
    )
    verdict = classify(mail, received_at=RECEIVED)
    assert verdict.kind == "bounce"
    assert [(b.address, b.status, b.permanent) for b in verdict.bounces] == expected


def test_daemon_mail_without_failure_is_not_a_bounce():
    verdict = verdict_of(
        "Your mailbox quota is at 80%.", sender="postmaster@example.org", subject="Quota warning"
    )
    assert verdict.kind == "auto" and verdict.bounces == ()


def test_a_person_quoting_a_status_code_is_no_bounce():
    verdict = verdict_of("My old address gave 550 5.1.1 user unknown, use this one please.")
    assert verdict.kind == "human"


# ------------------------------------------------------------------------------ new text


@pytest.mark.parametrize(
    ("text", "new"),
    [
        ("Yes!\n\nOn Tue, Dec 1, 2026 at 9:00 AM Anna <a@b.c> wrote:\n> Hi\n> there", "Yes!"),
        ("Ja.\n\nAm 01.12.2026 um 09:00 schrieb Anna Berg:\n> Hallo", "Ja."),
        ("Oui.\n\nLe 1 déc. 2026 à 09:00, Anna Berg <a@b.c> a écrit :\n> Bonjour", "Oui."),
        ("Sí.\n\nEl mar, 1 dic 2026 a las 9:00, Anna (<a@b.c>) escribió:\n> Hola", "Sí."),
        ("Ja.\n\nOp di 1 dec. 2026 om 09:00 schreef Anna <a@b.c>:\n> Hoi", "Ja."),
        ("OK\n\n-----Original Message-----\nFrom: Anna\nSent: Tuesday\n\nHi", "OK"),
        ("OK\n\n-----Ursprüngliche Nachricht-----\nVon: Anna\nGesendet: Dienstag\n\nHallo", "OK"),
        ("OK\n\nDe: Anna Berg\nEnviado: martes\nPara: Javier\nAsunto: Puesto\n\nHola", "OK"),
        ("OK\n\nVon: Anna Berg\nGesendet: Dienstag, 1. Dezember 2026 09:00\nAn: Lukas", "OK"),
        ("Fine\n\nAnna Berg wrote:\n> older text", "Fine"),
        ("Sure.\n\nSent from my iPhone\n\n> On 1 Dec 2026, at 09:00, Anna wrote:\n> hi", "Sure."),
        ("Sure.\n\nVon meinem iPhone gesendet", "Sure."),
        (
            "Hi Anna,\nThanks, I'd love to hear more about it.\n\nBest regards,\nJane",
            "Hi Anna,\nThanks, I'd love to hear more about it.",
        ),
        ("Hi Anna,\nsounds good.\n\n--\nJane Doe\nEngineer\n+1 555 0100", "Hi Anna,\nsounds good."),
        ("- one\n- two\nboth work for me", "- one\n- two\nboth work for me"),
        ("", ""),
    ],
)
def test_new_text(text: str, new: str):
    assert verdict_of(text).new_text == new


def test_new_text_from_an_html_only_reply():
    raw = (
        "From: Jane <jane@example.com>\nSubject: Re: x\nContent-Type: text/html\n\n"
        "<div>Yes, Tuesday works.</div><div class=gmail_quote>On Tue, Dec 1, 2026 at 9:00 AM "
        "Anna &lt;a@b.c&gt; wrote:<br><blockquote>Hi Jane, we are hiring</blockquote></div>"
    )
    verdict = classify(parse_mail(raw.encode()), received_at=RECEIVED)
    assert verdict.new_text == "Yes, Tuesday works."


# --------------------------------------------------------------------------------- speed


def test_classification_is_fast():
    humans = [
        parse_mail((CORPUS / name).read_bytes())
        for name, entry in sorted(MANIFEST.items())
        if entry["kind"] == "human"
    ]
    for parsed in humans:
        classify(parsed, received_at=RECEIVED)
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        for parsed in humans:
            classify(parsed, received_at=RECEIVED)
    per_message = (time.perf_counter() - started) / (rounds * len(humans))
    # ~50 µs on a laptop (thousands a second); the bound only catches a large regression.
    assert per_message < 0.001

    absences = [
        parse_mail((CORPUS / name).read_bytes())
        for name, entry in sorted(MANIFEST.items())
        if entry.get("out_of_office")
    ]
    for parsed in absences:
        classify(parsed, received_at=RECEIVED)  # dateparser loads its languages once
    started = time.perf_counter()
    for parsed in absences:
        classify(parsed, received_at=RECEIVED)
    assert (time.perf_counter() - started) / len(absences) < 0.02  # ~1 ms each
