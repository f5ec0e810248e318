"""Benchmark: one tick dispatching through the real SendGrid and Twilio channels to loopback fakes.

Run: ``python benchmarks/dispatch.py [--dynamic 100000] [--rendered 10000] [--quick]
[--profile-rendered N]``

Each fake runs in a process of its own (the providers are other machines), the engine in
another, and the store is seeded by yet another, so the engine's peak RSS is the tick's
alone. First line: the machine's cores and load average, since every figure below is
shared with whatever else runs. Two figures:

1. **Dynamic template** (``--dynamic``): that many candidates due for an email step with a
   ``sendgrid_template_id``. The channel groups them by (template, cadence, step, sender,
   reply-to), up to 1,000 personalizations a request. Prints the emails sent, the Mail Send
   requests the fake received, requests per 1,000 emails (aim: 1), emails/s through the
   whole tick and the engine's peak RSS. ``--recruiters K`` spreads the candidates over K
   recruiters (each a sender of its own, so a group of its own) to show the cost of that.
2. **Locally rendered** (``--rendered``): half due for an email step (Jinja subject and body,
   one request each), half for an SMS step (one request each), in one tick. Prints
   messages/s per channel (inside ``send``) and through the tick, what the fakes
   received next to the ledger's ``sent`` counts (exits non-zero when they differ), and
   the CPU each message cost the engine and each fake (robust to a loaded machine, where
   messages/s is not). Then a separate, smaller pass (``--profile-rendered``, default a
   fifth) runs under cProfile in every engine thread (per-thread CPU time, so idle
   workers do not count) and prints the top five functions.

``--quick`` runs 10,000 and 2,000 instead of 100,000 and 10,000.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import queue
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.profiling import print_top, top_functions

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday 10:00 in New York
KEY = "SG.sandbox-key"
FROM_EMAIL = "talent@northwind.example"
FROM_NUMBER = "+15005550006"
TEMPLATE_ID = "d-0123456789abcdef0123456789abcdef"
CHUNK = 5_000

CONFIG = f"""\
company: {{name: Northwind}}
policy:
  default_timezone: America/New_York
  send_window: {{start: "00:00", end: "23:59", days: [mon, tue, wed, thu, fri, sat, sun]}}
  holidays: none
  max_touches: {{count: 100, per: 7d}}
  min_gap: 1m
  channel_order: [email, sms, linkedin]
  rate_limits: {{email: 100000/s, sms: 100000/s}}
cadences:
  - id: offer
    trigger: {{stage: offer}}
    steps:
      - {{id: news, after: 0m, channel: email, template: news,
         sendgrid_template_id: {TEMPLATE_ID}}}
  - id: apply
    trigger: {{stage: applied}}
    steps:
      - {{id: hello, after: 0m, channel: email, template: t}}
  - id: screen
    trigger: {{stage: screening}}
    steps:
      - {{id: text, after: 0m, channel: sms, template: t}}
"""
TEMPLATES = {
    "t.email.j2": (
        "Subject: Hello {{ candidate.first_name }}, about {{ company.name }}\n\n"
        "Hi {{ candidate.first_name }},\n\nThanks for applying to {{ company.name }}. "
        "We are reading every application and will write again within the week.\n\n"
        "{{ company.name }} recruiting"
    ),
    "t.sms.j2": "Hi {{ candidate.first_name }}, thanks for applying to {{ company.name }}.",
}


def write_config(folder: Path) -> Path:
    """The cadence file and its templates in ``folder``; returns the cadence file."""
    templates = folder / "templates"
    templates.mkdir(exist_ok=True)
    for name, text in TEMPLATES.items():
        (templates / name).write_text(text)
    (folder / "cadences.yaml").write_text(CONFIG)
    return folder / "cadences.yaml"


def person(i: int, stage: str, recruiters: int = 1) -> dict[str, Any]:
    row = {
        "source": "import",
        "external_id": f"p{i}",
        "first_name": f"Person{i}",
        "last_name": "Lee",
        "email": f"person{i}@example.com",
        "stage": stage,
        "timezone": "America/New_York",
        "job_title": "Data Engineer",
        "recruiter_name": f"Recruiter {i % recruiters}",
        "recruiter_email": f"recruiter{i % recruiters}@northwind.example",
    }
    if stage == "screening":
        row["phone"] = f"+1415{2_000_000 + i:07d}"
        row["sms_consent"] = "true"
    return row


def _seed(url: str, cadence_file: Path, rows: list[tuple[int, str]], recruiters: int) -> None:
    """Import the candidates in chunks, as an import would (runs in its own process)."""
    from outreach.cadence import load_cadence_file
    from outreach.records import normalize_record
    from outreach.store import make_engine, upgrade
    from outreach.store.candidates import upsert_candidates

    engine = make_engine(url)
    upgrade(engine)
    config = load_cadence_file(cadence_file)
    for start in range(0, len(rows), CHUNK):
        records = [
            normalize_record(
                person(i, stage, recruiters),
                where=f"row {i}",
                default_region="US",
                canonical_stage=config.canonical_stage,
            )
            for i, stage in rows[start : start + CHUNK]
        ]
        with engine.begin() as conn:
            upsert_candidates(conn, records, NOW)
    engine.dispose()


def _serve(which: str, ready: Any, ask: Any) -> None:
    """One fake (``sendgrid`` or ``twilio``) on loopback in this process; its counts when
    asked. Each provider is a machine of its own, so each fake is a process of its own."""
    from outreach.clock import FixedClock
    from outreach.sandbox.base import SandboxServer
    from outreach.sandbox.sendgrid import FakeSendGrid
    from outreach.sandbox.twilio import FakeTwilio

    fake: Any
    if which == "sendgrid":
        fake = FakeSendGrid(api_key=KEY, clock=FixedClock(NOW))
        # The offer step's dynamic template: the engine reads it to check each touch's data.
        fake.add_template(
            TEMPLATE_ID,
            subject="News for {{candidate.first_name}}",
            html_content="<p>Hi {{candidate.first_name}}, from {{company.name}}</p>",
        )
    else:
        fake = FakeTwilio(clock=FixedClock(NOW))
    fake.log_bodies = False
    server = SandboxServer(fake).start()
    ready.put((server.url, getattr(fake, "account_sid", None), getattr(fake, "auth_token", None)))
    ask.get()  # wait for the engine to finish
    with fake.lock:
        if which == "sendgrid":
            counts = {
                "mail_requests": len(fake.mail_requests),
                "personalizations": sorted(
                    len(r["body"]["personalizations"]) for r in fake.mail_requests
                ),
                "email_received": len(fake.messages),
                "email_ids": {m["message_id"] for m in fake.messages},
                "email_touches": len({m["custom_args"].get("touch_id") for m in fake.messages}),
            }
        else:
            counts = {
                "sms_received": len(fake.messages),
                "sms_ids": {m["sid"] for m in fake.messages},
            }
    ready.put(counts)
    server.stop()


def _timed(send: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    def wrapper(batch: Any, **options: Any) -> Any:
        started = time.perf_counter()
        try:
            return send(batch, **options)
        finally:
            spent[0] += time.perf_counter() - started

    return wrapper


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _ThreadProfiles:
    """cProfile in every thread started while it is on (the channels' worker threads) and
    in this one: the dispatch's work is spread over them."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []

    def __enter__(self) -> _ThreadProfiles:
        def start(frame: Any, event: str, arg: Any) -> None:
            sys.setprofile(None)
            profile = cProfile.Profile(time.thread_time)
            self.profiles.append(profile)
            profile.enable()

        threading.setprofile(start)
        main = cProfile.Profile(time.thread_time)
        self.profiles.append(main)
        main.enable()
        self._main = main
        return self

    def __exit__(self, *exc: object) -> None:
        self._main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]

    def merged(self) -> Any:
        """All threads' statistics, in the shape :func:`top_functions` reads."""
        stats = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            stats.add(profile)

        class Merged:
            def __init__(self) -> None:
                self.stats = stats.stats  # type: ignore[attr-defined]

            def create_stats(self) -> None:
                pass

        return Merged()


def _scenario(rows: list[tuple[int, str]], recruiters: int, out: Any, profile: bool) -> None:
    """Seed, start the fakes, time one tick (this process is the engine); put the figures.
    With ``profile``, the tick runs under cProfile (every thread) and its top functions
    are put instead of timings worth quoting."""
    from sqlalchemy import func, select

    from channels.email import SendGridEmail
    from channels.sms import TwilioSMS
    from outreach.cadence import load_cadence_file
    from outreach.clock import FixedClock
    from outreach.engine.tick import Tick, engine_transactions
    from outreach.store import make_engine
    from outreach.store.schema import Touch

    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        cadence_file = write_config(Path(tmp))
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        seeding = time.perf_counter()
        seeder = ctx.Process(target=_seed, args=(url, cadence_file, rows, recruiters))
        seeder.start()
        seeder.join()
        if seeder.exitcode != 0:
            raise RuntimeError(f"seeding failed (exit code {seeder.exitcode})")
        seeded = time.perf_counter() - seeding

        fakes = {}
        for which in ("sendgrid", "twilio"):
            ready, ask = ctx.Queue(), ctx.Queue()
            process = ctx.Process(target=_serve, args=(which, ready, ask), daemon=True)
            process.start()
            fakes[which] = (process, ready, ask, ready.get(timeout=60))
        sendgrid_url = fakes["sendgrid"][3][0]
        twilio_url, account_sid, auth_token = fakes["twilio"][3]

        config = load_cadence_file(cadence_file)
        clock = FixedClock(NOW)
        engine = make_engine(url)
        email = SendGridEmail(KEY, FROM_EMAIL, base_url=sendgrid_url, clock=clock)
        sms = TwilioSMS(
            account_sid, auth_token, from_number=FROM_NUMBER, base_url=twilio_url, clock=clock
        )
        email_time, sms_time = [0.0], [0.0]
        email.send = _timed(email.send, email_time)  # type: ignore[method-assign]
        sms.send = _timed(sms.send, sms_time)  # type: ignore[method-assign]
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        tick = Tick(
            config,
            clock,
            {"email": email, "sms": sms},
            engine_transactions(engine),
            dialect=engine.dialect.name,
        )
        fake_cpu = {which: _cpu_seconds(f[0].pid) for which, f in fakes.items()}
        engine_cpu = time.process_time()
        started = time.perf_counter()
        profiles = _ThreadProfiles() if profile else None
        if profiles is not None:
            with profiles:
                summary = tick.run()
                email.close()
                sms.close()
        else:
            summary = tick.run()
        elapsed = time.perf_counter() - started
        engine_cpu = time.process_time() - engine_cpu
        fake_cpu = {which: _cpu_seconds(f[0].pid) - fake_cpu[which] for which, f in fakes.items()}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        email.close()
        sms.close()
        top = top_functions(profiles.merged()) if profiles is not None else []

        with engine.connect() as conn:
            ledger = Counter(
                {
                    (channel, status): count
                    for channel, status, count in conn.execute(
                        select(Touch.channel, Touch.status, func.count()).group_by(
                            Touch.channel, Touch.status
                        )
                    )
                }
            )
            sent_ids = {
                (channel, message_id)
                for channel, message_id in conn.execute(
                    select(Touch.channel, Touch.provider_message_id).where(Touch.status == "sent")
                )
            }
        engine.dispose()
        served: dict[str, Any] = {}
        for process, ready, ask, _ in fakes.values():
            ask.put("stats")
            served.update(ready.get(timeout=120))
            process.join(timeout=30)

    email_ids, sms_ids = served.pop("email_ids"), served.pop("sms_ids")
    out.put(
        {
            "candidates": len(rows),
            "seed_seconds": seeded,
            "seconds": elapsed,
            "engine_cpu": engine_cpu,
            "sendgrid_cpu": fake_cpu["sendgrid"],
            "twilio_cpu": fake_cpu["twilio"],
            "top": top,
            "email_seconds": email_time[0],
            "sms_seconds": sms_time[0],
            "rss_before_mb": rss_before,
            "rss_mb": rss,
            "enrolled": sum(summary.enroll.enrolled.values()),
            "summary_sent": summary.total("sent"),
            "summary_failed": summary.total("failed"),
            "summary_ambiguous": summary.total("ambiguous"),
            "deferred": dict(summary.total_reasons("deferred")),
            "skipped": dict(summary.total_reasons("skipped")),
            "ledger": {f"{c}:{s}": n for (c, s), n in ledger.items()},
            "email_sent": ledger[("email", "sent")],
            "sms_sent": ledger[("sms", "sent")],
            "unknown_ids": sum(
                1
                for channel, message_id in sent_ids
                if message_id not in (email_ids if channel == "email" else sms_ids)
            ),
            **served,
        }
    )


def run(rows: list[tuple[int, str]], recruiters: int = 1, profile: bool = False) -> dict[str, Any]:
    """Run one scenario in a fresh engine process; return its figures."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    process = ctx.Process(target=_scenario, args=(rows, recruiters, out, profile))
    process.start()
    while True:  # before join: a large item would block the child's exit
        try:
            figures = out.get(timeout=1.0)
            break
        except queue.Empty:
            if not process.is_alive():
                raise RuntimeError(f"the scenario failed (exit code {process.exitcode})") from None
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the scenario failed (exit code {process.exitcode})")
    return figures


def _row(name: str, figure: str) -> None:
    print(f"| {name} | {figure} |")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dynamic",
        type=int,
        default=None,
        help="emails through a dynamic template (default 100,000; 0 skips)",
    )
    parser.add_argument(
        "--rendered",
        type=int,
        default=None,
        help="locally rendered emails and SMS, half each (default 10,000; 0 skips)",
    )
    parser.add_argument(
        "--recruiters",
        type=int,
        default=1,
        help="recruiters (senders) the dynamic-template candidates are spread over",
    )
    parser.add_argument("--quick", action="store_true", help="10,000 / 2,000 for a fast check")
    parser.add_argument(
        "--profile-rendered",
        type=int,
        default=None,
        help="candidates of the profiled pass of the rendered scenario (default a fifth; 0 skips)",
    )
    args = parser.parse_args(argv)
    dynamic = args.dynamic if args.dynamic is not None else (10_000 if args.quick else 100_000)
    rendered = args.rendered if args.rendered is not None else (2_000 if args.quick else 10_000)
    ok = True

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, load average {load} (1, 5, 15 min) at the start")
    print("| benchmark | figure |")
    print("| --- | --- |")
    if dynamic:
        a = run([(i, "offer") for i in range(dynamic)], max(1, args.recruiters))
        sent = a["email_sent"]
        per_thousand = a["mail_requests"] / (sent / 1000) if sent else float("nan")
        sizes = Counter(a["personalizations"])
        _row(
            f"dynamic template, {dynamic:,} candidates, {args.recruiters} recruiter(s)",
            f"{sent:,} emails sent in {a['seconds']:.1f} s = **{sent / a['seconds']:,.0f} "
            f"emails/s** through the tick (inside send: {a['email_seconds']:.1f} s); "
            f"peak RSS {a['rss_mb']:.0f} MB ({a['rss_before_mb']:.0f} MB before the tick)",
        )
        _row(
            "SendGrid requests",
            f"{a['mail_requests']:,} requests = **{per_thousand:.2f} per 1,000 emails** "
            f"(personalizations per request: "
            + ", ".join(f"{n} of {size}" for size, n in sorted(sizes.items(), reverse=True))
            + f"); the fake received {a['email_received']:,} messages "
            f"for {a['email_touches']:,} touches",
        )
        if (
            a["email_received"] != sent
            or a["email_touches"] != sent
            or a["unknown_ids"]
            or sent != dynamic
        ):
            ok = False
            print(
                f"MISMATCH (dynamic): ledger {a['ledger']}, fake {a['email_received']}, "
                f"ids not received {a['unknown_ids']}, deferred {a['deferred']}, "
                f"skipped {a['skipped']}"
            )
        _row(
            "  seeding (not timed)", f"{dynamic:,} candidates imported in {a['seed_seconds']:.1f} s"
        )
    if rendered:
        rows = [(i, "applied" if i % 2 == 0 else "screening") for i in range(rendered)]
        b = run(rows)
        emails, texts = b["email_sent"], b["sms_sent"]
        total = emails + texts
        _row(
            f"locally rendered, {rendered:,} candidates (half email, half SMS), one tick",
            f"{total:,} messages in {b['seconds']:.1f} s = **{total / b['seconds']:,.0f} "
            f"messages/s** through the tick; peak RSS {b['rss_mb']:.0f} MB "
            f"({b['rss_before_mb']:.0f} MB before the tick)",
        )
        _row(
            "  email (SendGrid, one request each)",
            f"{emails:,} sent in {b['email_seconds']:.1f} s inside send = "
            f"**{emails / b['email_seconds'] if b['email_seconds'] else 0:,.0f} emails/s**; "
            f"fake received {b['email_received']:,} in {b['mail_requests']:,} requests",
        )
        _row(
            "  SMS (Twilio, one request each)",
            f"{texts:,} sent in {b['sms_seconds']:.1f} s inside send = "
            f"**{texts / b['sms_seconds'] if b['sms_seconds'] else 0:,.0f} SMS/s**; "
            f"fake received {b['sms_received']:,}",
        )
        expected = (rendered + 1) // 2, rendered // 2
        if (
            b["email_received"] != emails
            or b["sms_received"] != texts
            or b["unknown_ids"]
            or (emails, texts) != expected
        ):
            ok = False
            print(
                f"MISMATCH (rendered): ledger {b['ledger']}, fakes email "
                f"{b['email_received']} sms {b['sms_received']}, ids not received "
                f"{b['unknown_ids']}, deferred {b['deferred']}, skipped {b['skipped']}"
            )
        _row(
            "  CPU per message",
            f"engine {b['engine_cpu'] / total * 1e6:,.0f} µs (tick and channels, "
            f"{b['engine_cpu'] / b['seconds']:.0%} of a core); fakes: SendGrid "
            f"{b['sendgrid_cpu'] / max(emails, 1) * 1e6:,.0f} µs per email, Twilio "
            f"{b['twilio_cpu'] / max(texts, 1) * 1e6:,.0f} µs per SMS",
        )
        _row(
            "  seeding (not timed)",
            f"{rendered:,} candidates imported in {b['seed_seconds']:.1f} s",
        )
        size = args.profile_rendered if args.profile_rendered is not None else rendered // 5
        if size:
            profiled_rows = [(i, "applied" if i % 2 == 0 else "screening") for i in range(size)]
            print_top(
                run(profiled_rows, profile=True)["top"],
                f"locally rendered, {size:,} candidates, every engine thread",
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
