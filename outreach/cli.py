"""The ``outreach`` command line (Typer + Rich).

Exit codes (DESIGN.md): 0 done, 1 partial failure (some records failed; the summary says
which), 2 bad input or configuration (the message names the file, the place and the fix).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outreach import __version__
from outreach.cadence import CANONICAL_STAGES, CadenceConfig, load_cadence_file
from outreach.clock import Clock, FixedClock, SystemClock, parse_instant
from outreach.errors import ConfigError, InputError, StoreError
from outreach.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="outreach",
    help="Recruiting outreach engine: sync candidates, run follow-up cadences, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate the cadence file and templates.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
sandbox_app = typer.Typer(help="The fake providers on loopback.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(sandbox_app, name="sandbox")
events_app = typer.Typer(
    help="Inbound events: replies, opt-outs, bounces, unsubscribes.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
replies_app = typer.Typer(
    help="Email that comes back: replies, out-of-office notices, bounces, unsubscribes.",
    no_args_is_help=True,
)
app.add_typer(replies_app, name="replies")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("outreach")

EXIT_OK, EXIT_PARTIAL, EXIT_BAD_INPUT = 0, 1, 2

NowOption = Annotated[
    str | None,
    typer.Option("--now", help="Simulated current time, ISO-8601 (default: the wall clock)."),
]


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"bad environment settings: {problems}") from None


def _clock(now: str | None) -> Clock:
    if now is None:
        return SystemClock()
    try:
        return FixedClock(parse_instant(now))
    except ValueError as exc:
        raise _fail(f"--now: {exc}") from None


def _config(settings: Settings, file: Path | None = None) -> CadenceConfig:
    path = file if file is not None else settings.config_path
    try:
        return load_cadence_file(path)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _engine(settings: Settings):
    from outreach.store import ensure_schema, make_engine

    try:
        engine = make_engine(settings.database_url)
        ensure_schema(engine)
    except (ConfigError, StoreError) as exc:
        raise _fail(str(exc)) from None
    return engine


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Recruiting outreach engine."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # One INFO line per HTTP request drowns the summary; --verbose shows them.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # The SendGrid and Twilio SDKs log request headers and bodies (API keys, addresses,
    # phone numbers) at DEBUG/INFO: never, not even with --verbose.
    for sdk in ("python_http_client", "twilio", "sendgrid"):
        logging.getLogger(sdk).setLevel(logging.WARNING)
    if version:
        out.print(f"outreach {__version__}")
        raise typer.Exit(EXIT_OK)


@config_app.command("check")
def config_check(
    file: Annotated[
        Path | None,
        typer.Argument(help="Cadence file (default: OUTREACH_CONFIG or config/cadences.yaml)."),
    ] = None,
) -> None:
    """Validate the cadence file and every template it uses.

    Steps with a SendGrid dynamic template (sendgrid_template_id) are checked too when
    SENDGRID_API_KEY is set: each template's active version is read from SendGrid and
    every variable the engine's data does not provide is listed.
    """
    from outreach.templates import check_templates

    settings = _settings()
    config = _config(settings, file)
    report = check_templates(config, settings.public_url)
    dynamic = _check_dynamic_templates(settings, config)
    warnings = report.warnings + (dynamic.warnings if dynamic else [])
    errors = report.errors + (dynamic.errors if dynamic else [])
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if errors:
        raise _fail(
            f"{len(errors)} problem(s) in templates\n" + "\n".join(f"  - {e}" for e in errors)
        )
    if dynamic and dynamic.unreachable:
        raise _fail(
            f"{len(dynamic.unreachable)} dynamic template(s) could not be read; run the check "
            "again when SendGrid answers\n" + "\n".join(f"  - {e}" for e in dynamic.unreachable),
            EXIT_PARTIAL,
        )
    steps = sum(len(c.steps) for c in config.cadences)
    checked_dynamic = f", {dynamic.checked} dynamic templates" if dynamic else ""
    out.print(
        f"[green]ok[/] {config.path}: {len(config.cadences)} cadences, {steps} steps, "
        f"{report.checked} templates{checked_dynamic}"
        + (f", {len(warnings)} warning(s)" if warnings else ""),
        highlight=False,
    )
    _print_systems(settings, config)


def _print_systems(settings: Settings, config: CadenceConfig) -> None:
    """Which CRMs, channels, task channels and webhook routes this setup has, and what the
    cadence file asks of one that is off."""
    from outreach.systems import systems

    table = Table(title="systems", title_justify="left", box=None, pad_edge=False)
    for column in ("system", "kind", "", "detail"):
        table.add_column(column, overflow="fold")
    for line in systems(settings, config):
        detail = line.detail + (f" [yellow]({line.note})[/]" if line.note else "")
        state = "[green]on[/]" if line.on else "[dim]off[/]"
        table.add_row(line.name, line.kind, state, detail)
    out.print(table)


def _check_dynamic_templates(settings: Settings, config: CadenceConfig) -> Any:
    """The dynamic-template report, or None (no such step, or no key: said once)."""
    from outreach.dynamic_templates import check_dynamic_templates, template_ids

    ids = template_ids(config)
    if not ids:
        return None
    if settings.sendgrid_api_key is None:
        err.print(
            f"[yellow]note:[/] {len(ids)} SendGrid dynamic template(s) not checked: set "
            "SENDGRID_API_KEY (and SENDGRID_BASE_URL for a sandbox) so that config check reads "
            "them and lists the variables the engine's data does not provide",
            highlight=False,
        )
        return None
    from channels.sendgrid_templates import SendGridTemplates

    reader = SendGridTemplates(
        settings.sendgrid_api_key.get_secret_value(), base_url=settings.sendgrid_base_url
    )
    return check_dynamic_templates(config, reader.read)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database or apply pending schema migrations."""
    from outreach.store import make_engine, upgrade
    from outreach.store.db import current_revision, head_revision

    settings = _settings()
    try:
        engine = make_engine(settings.database_url)
        before = current_revision(engine)
        upgrade(engine)
    except (ConfigError, StoreError) as exc:
        raise _fail(str(exc)) from None
    head = head_revision()
    if before == head:
        out.print(f"database already at revision {head}")
    else:
        out.print(f"database upgraded from {before or 'empty'} to revision {head}")


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV (with a header row) or JSONL file.")],
    source: Annotated[
        str | None,
        typer.Option("--source", help="Source name for rows without a source column value."),
    ] = None,
    now: NowOption = None,
) -> None:
    """Load candidates from CSV or JSONL (for any ATS without a connector).

    Columns: source, external_id, first_name, last_name, email, phone, linkedin_url,
    x_url (@handle or x.com/twitter.com URL), facebook_url, timezone, stage,
    stage_entered_at, job_title, recruiter_name, recruiter_email, owner_id, sms_consent,
    preferred_channel; any other column becomes a custom field. Re-importing a row with the
    same source and external_id updates it.
    """
    from outreach.importer import detect_format, import_file

    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    if not file.is_file():
        raise _fail(f"{file}: file not found")
    try:
        detect_format(file)
    except InputError as exc:
        raise _fail(str(exc)) from None
    engine = _engine(settings)
    try:
        with _progress("importing", _count_lines(file)) as advance:
            report = import_file(
                file, engine, config, clock, default_source=source, progress=advance
            )
    except InputError as exc:
        raise _fail(str(exc)) from None

    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {file}: {warning}", highlight=False)
    for problem in report.errors:
        err.print(f"[red]bad row:[/] {file}: {problem}", highlight=False)
    stats = report.stats
    out.print(
        f"{file}: {report.rows} rows, {report.loaded} loaded ({stats.new} new, "
        f"{stats.updated} updated, {stats.merged} people merged, {stats.stage_changes} stage "
        f"changes), {len(report.errors)} bad",
        highlight=False,
    )
    if report.errors:
        raise typer.Exit(EXIT_PARTIAL)


@app.command("candidates")
def candidates_command(
    stage: Annotated[
        str | None,
        typer.Option("--stage", help=f"Only this stage ({', '.join(CANONICAL_STAGES)})."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many people.")] = None,
    explain: Annotated[
        str | None,
        typer.Option(
            "--explain",
            help="Show which records make a person one person and why (table or json): a "
            "person id, or SOURCE:EXTERNAL_ID of one of their records.",
            metavar="ID",
        ),
    ] = None,
) -> None:
    """People in the store, with their stage and contact points."""
    from outreach.people_listing import explain_person, iter_people

    if stage is not None and stage not in CANONICAL_STAGES:
        raise _fail(f"--stage {stage!r} is not a stage; use one of {', '.join(CANONICAL_STAGES)}")
    if fmt not in ("table", "json", "csv"):
        raise _fail(f"--format {fmt!r} is not supported; use table, json or csv")
    settings = _settings()
    engine = _engine(settings)
    if explain is not None:
        found = explain_person(engine, _find_person(engine, explain, option="--explain"))
        if found is None:
            raise _fail(f"--explain {explain}: no person has that id; see outreach candidates")
        if fmt == "json":
            sys.stdout.write(json.dumps(found, default=_json_default, indent=2) + "\n")
        elif fmt == "csv":
            raise _fail("--explain prints a table or json, not csv")
        else:
            _print_explanation(found)
        return
    people = iter_people(engine, stage=stage, limit=limit)
    if fmt == "json":
        _print_json(people)
    elif fmt == "csv":
        _print_csv(people)
    else:
        _print_table(people)


SOURCES = ("greenhouse", "lever", "hubspot", "bullhorn", "activecampaign")


@app.command("sync")
def sync_command(
    source: Annotated[
        str,
        typer.Option(
            "--source", help="greenhouse, lever, hubspot, bullhorn, activecampaign or all."
        ),
    ] = "all",
    full: Annotated[
        bool, typer.Option("--full", help="Read everything again, not only what changed.")
    ] = False,
    now: NowOption = None,
) -> None:
    """Incremental, resumable sync of the CRMs into the store."""
    from outreach.errors import ProviderError
    from outreach.sync import sync_source
    from outreach.tasks import refresh_task_status

    if source != "all" and source not in SOURCES:
        raise _fail(f"--source {source!r} is not a source; use {', '.join(SOURCES)} or all")
    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    engine = _engine(settings)
    wanted = SOURCES if source == "all" else (source,)
    connectors = _connectors(settings, wanted, clock)
    failed = False
    table = Table(header_style="bold")
    for column in (
        "source",
        "fetched",
        "new",
        "updated",
        "merged",
        "stage changes",
        "bad",
        "state",
    ):
        table.add_column(column)
    for connector in connectors:
        try:
            with _progress(f"syncing {connector.name}", None) as advance:
                report = sync_source(
                    connector,
                    engine,
                    config,
                    clock,
                    full=full,
                    progress=lambda r, advance=advance: advance(r.fetched),
                )
            completed = refresh_task_status(engine, connector, clock.now())
        except ConfigError as exc:
            raise _fail(str(exc)) from None
        except ProviderError as exc:
            err.print(
                f"[red]{connector.name}:[/] {exc} (resumes from the last page)", highlight=False
            )
            failed = True
            continue
        finally:
            connector.close()
        if completed:
            out.print(
                f"{connector.name}: {completed} task(s) completed in the CRM", highlight=False
            )
        for problem in report.bad:
            err.print(f"[red]bad record:[/] {problem}", highlight=False)
        for warning in report.warnings:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        for name in sorted(report.unmapped_stages):
            err.print(
                f"[yellow]warning:[/] {connector.name} stage {name!r} is not mapped; add it to "
                f"stage_map.{connector.name} in {config.path} (those records are not enrolled)",
                highlight=False,
            )
        failed = failed or bool(report.bad)
        table.add_row(
            connector.name,
            str(report.fetched),
            str(report.new),
            str(report.updated),
            str(report.merged),
            str(report.stage_changes),
            str(len(report.bad)),
            "complete" if report.complete else "partial",
        )
    if connectors:
        out.print(table)
    if failed:
        raise typer.Exit(EXIT_PARTIAL)


@app.command("tasks")
def tasks_command(
    owner: Annotated[
        str | None, typer.Option("--owner", help="Only tasks of this CRM owner id.")
    ] = None,
    stale_after: Annotated[
        str, typer.Option("--stale-after", help="Report tasks open longer than this (7d, 48h).")
    ] = "7d",
    done: Annotated[
        list[int] | None,
        typer.Option("--done", help="Mark this task id done (tasks kept by the engine only)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    now: NowOption = None,
) -> None:
    """Open recruiter tasks (LinkedIn, X, Facebook, call and manual steps), oldest first;
    stale ones flagged."""
    from outreach.cadence import parse_duration
    from outreach.tasks import complete_tasks, open_tasks

    if fmt not in ("table", "json"):
        raise _fail(f"--format {fmt!r} is not supported; use table or json")
    try:
        stale = parse_duration(stale_after)
    except ValueError as exc:
        raise _fail(f"--stale-after: {exc}") from None
    settings = _settings()
    clock = _clock(now)
    engine = _engine(settings)
    if done:
        changed = complete_tasks(engine, done, clock.now())
        err.print(f"{changed} task(s) marked done", highlight=False)
        if changed < len(set(done)):
            err.print("[yellow]some ids were not open tasks[/]", highlight=False)
    tasks = open_tasks(engine, now=clock.now(), owner=owner, stale_after=stale)
    if fmt == "json":
        out.print_json(data=[t.as_dict() for t in tasks])
        return
    table = Table(header_style="bold")
    for column in ("id", "due (UTC)", "owner", "source", "kind", "candidate", "title", "age"):
        table.add_column(column)
    for task in tasks:
        age = f"{task.age_days:.0f}d" + (" [red]stale[/]" if task.stale else "")
        table.add_row(
            str(task.id),
            task.due_at.strftime("%Y-%m-%d %H:%M"),
            task.owner_id or "-",
            task.source or "-",
            task.kind,
            task.candidate,
            task.title,
            age,
        )
    out.print(table)
    stale_count = sum(t.stale for t in tasks)
    out.print(
        f"{len(tasks)} open task(s)"
        + (f", {stale_count} open longer than {stale_after}" if stale_count else ""),
        highlight=False,
    )


REPORT_FORMATS = ("table", "csv", "json", "html")


@app.command("report")
def report_command(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Start of the window, ISO-8601 with offset (default: 30 days before --until).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="End of the window (exclusive), ISO-8601 with offset (default: --now)."
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by", help="Break down by: cadence,step,channel,variant,source,stage,owner,job,tag."
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json or html.")] = "table",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write to this file (html: default report.html).")
    ] = None,
    min_cell: Annotated[
        int, typer.Option("--min-cell", min=0, help="Flag groups with fewer people than this.")
    ] = 30,
    now: Annotated[
        str | None,
        typer.Option(
            "--now", help="Simulated current time, ISO-8601 with offset (default: the wall clock)."
        ),
    ] = None,
) -> None:
    """KPIs, SLA per step, A/B results and candidate ratings from the ledger and events."""
    from outreach.reports import build_report, parse_by, parse_time, resolve_window

    if fmt not in REPORT_FORMATS:
        raise _fail(f"--format {fmt!r} is not supported; use one of {', '.join(REPORT_FORMATS)}")
    try:
        keys = parse_by(by)
        start = parse_time(since, "--since") if since else None
        end = parse_time(until, "--until") if until else None
        instant = parse_time(now, "--now") if now else SystemClock().now()
        resolve_window(start, end, instant)
    except InputError as exc:
        raise _fail(str(exc)) from None
    target = out_file
    if target is None and fmt == "html":
        target = Path("report.html")
    if target is not None:
        _check_writable(target)
    settings = _settings()
    try:
        # The report renders nothing: a template missing for some channel is no reason to
        # refuse it (``config check`` is the place for that).
        config = load_cadence_file(settings.config_path, check_templates=False)
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    engine = _engine(settings)
    report = build_report(
        engine, config, since=start, until=end, now=instant, by=keys, min_cell=min_cell
    )
    try:
        _write_report(report, fmt, target)
    except (InputError, OSError) as exc:
        raise _fail(f"--out {target}: {exc}") from None
    if target is not None:
        err.print(f"wrote the {fmt} report to {target}", highlight=False)


def _check_writable(path: Path, option: str = "--out") -> None:
    """Exit 2 now, before any work, when ``path`` cannot be written."""
    if path.is_dir():
        raise _fail(f"{option} {path}: is a folder; give a file name")
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise _fail(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    if not existed:
        path.unlink()


def _write_report(report: dict[str, Any], fmt: str, target: Path | None) -> None:
    from outreach.reports.model import to_json
    from outreach.reports.render_csv import write_csv
    from outreach.reports.render_table import print_report

    if fmt == "html":
        from outreach.reports.render_html import write_html

        assert target is not None
        write_html(report, target)
        return
    if target is None:
        if fmt == "json":
            sys.stdout.write(to_json(report))
        elif fmt == "csv":
            write_csv(report, sys.stdout)
        else:
            print_report(report, out)
        return
    with target.open("w", encoding="utf-8", newline="") as stream:
        if fmt == "json":
            stream.write(to_json(report))
        elif fmt == "csv":
            write_csv(report, stream)
        else:
            print_report(report, Console(file=stream, width=140, soft_wrap=True))


def _connectors(
    settings: Settings, wanted: tuple[str, ...], clock: Clock, *, quiet: bool = False
) -> list[Any]:
    """The connectors the settings turn on for ``wanted``; says once why others are off."""
    from connectors.factory import build_connectors

    built, off = build_connectors(settings, wanted, clock)
    if not quiet:
        for name, why in off.items():
            err.print(f"[yellow]{name}: off[/] ({why})", highlight=False)
    return built


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or TERM while the block runs (a service stops cleanly)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@sandbox_app.command("serve")
def sandbox_serve_command(
    people: Annotated[
        int, typer.Option("--people", min=1, help="Seeded candidates across the CRMs.")
    ] = 600,
    host: Annotated[str, typer.Option("--host", help="Loopback address to serve on.")] = (
        "127.0.0.1"
    ),
    limits: Annotated[
        bool, typer.Option("--limits", help="Answer 429 past each provider's own rate limits.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the candidate generator.")] = 7,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file", help="Also write the variables to this file (e.g. .env), then serve."
        ),
    ] = None,
) -> None:
    """Serve Greenhouse, Lever, HubSpot, Bullhorn, SendGrid and Twilio fakes until Ctrl-C.

    Prints the environment variables that point the engine at them; every other
    command reads them from the environment or from a .env file.
    """
    from outreach.sandbox.suite import Sandbox

    sandbox = Sandbox(people, seed=seed, limits=limits, host=host)
    try:
        sandbox.start()
    except OSError as exc:
        raise _fail(f"cannot serve on {host}: {exc}") from None
    with _stop_on_signals() as stop:
        try:
            lines = [f"{name}={value}" for name, value in sandbox.env().items()]
            if env_file is not None:
                from outreach.private_files import write_private_text

                # Written before the variables are printed: whoever reads them can use it.
                # It holds API keys, so only its owner may read it.
                write_private_text(env_file, "\n".join(lines) + "\n")
            for name in sandbox.fakes:
                err.print(f"{name:<10} {sandbox.url(name)}", highlight=False)
            if env_file is not None:
                err.print(f"wrote {env_file}", highlight=False)
            for line in lines:
                out.print(f"export {line}", highlight=False)
            err.print(
                f"serving {len(sandbox.people)} seeded candidates; Ctrl-C stops", highlight=False
            )
            sys.stdout.flush()
            while not stop.wait(0.5):
                pass
            err.print("stopping", highlight=False)
        finally:
            sandbox.stop()


@events_app.command("import")
def events_import_command(
    file: Annotated[Path, typer.Argument(help="JSONL file, one event per line.")],
    now: NowOption = None,
) -> None:
    """Record inbound events from JSONL; the next `outreach run` applies them.

    One JSON object per line: type (reply, opt_out, bounce, unsubscribe),
    channel (email, sms, linkedin, call, x, facebook; optional), who: address (email,
    phone, LinkedIn, X or Facebook URL), or source + external_id, or touch_id; at
    (ISO-8601 with an offset); id (the provider's event id) and detail
    (both optional).

    A reply stops cadences; an opt-out, unsubscribe or bounce suppresses
    the contact point. An opt-out without a channel that names only a
    record opts the person out everywhere. Importing the same file again
    records nothing new.
    """
    from rich.markup import escape

    from outreach.events import ingest_events, read_jsonl

    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    if not file.is_file():
        raise _fail(f"{file}: file not found")
    engine = _engine(settings)
    try:
        with _progress("recording events", _count_lines(file)) as advance:
            report = ingest_events(
                engine,
                read_jsonl(file),
                now=clock.now(),
                default_region=config.policy.default_region,
                progress=advance,
            )
    except InputError as exc:
        raise _fail(str(exc)) from None
    for problem in report.bad:
        err.print(f"[red]bad line:[/] {escape(problem)}", highlight=False)
    for problem in report.unmatched:
        err.print(f"[yellow]unmatched:[/] {escape(problem)}", highlight=False)
    out.print(
        f"{file}: {report.read} events read, {report.recorded} recorded, "
        f"{report.duplicates} already recorded, {len(report.unmatched)} unmatched, "
        f"{len(report.bad)} bad",
        highlight=False,
    )
    if report.bad or report.unmatched:
        raise typer.Exit(EXIT_PARTIAL)


@replies_app.command("import")
def replies_import_command(
    path: Annotated[Path, typer.Argument(help="An .eml file, an mbox file or a Maildir folder.")],
    now: NowOption = None,
) -> None:
    """Read raw messages from files and ingest them like `replies poll` does.

    Each message is classified (human reply, auto-reply, bounce, unsubscribe),
    matched to the touch it answers and stored; the next `outreach run`
    applies what it means. Importing the same messages again records nothing
    new.
    """
    from outreach.inbound.files import read_messages
    from outreach.inbound.intake import ingest_messages

    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    engine = _engine(settings)
    try:
        report = ingest_messages(engine, read_messages(path), now=clock.now(), config=config)
    except InputError as exc:
        raise _fail(str(exc)) from None
    _print_intake(str(path), report)
    if report.errors:
        raise typer.Exit(EXIT_PARTIAL)


@replies_app.command("poll")
def replies_poll_command(now: NowOption = None) -> None:
    """Fetch new mail from the reply mailbox (OUTREACH_IMAP_*) and ingest it.

    Only messages after the last one handled are fetched (UID and UIDVALIDITY
    kept in the store); handled messages are flagged $OutreachProcessed.
    """
    from outreach.inbound.poll import mailbox_from_settings

    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    if mailbox_from_settings(settings) is None:
        raise _fail(
            "no reply mailbox: set OUTREACH_IMAP_HOST, OUTREACH_IMAP_USER and "
            "OUTREACH_IMAP_PASSWORD"
        )
    engine = _engine(settings)
    if not _poll_replies(engine, settings, config, clock):
        raise typer.Exit(EXIT_PARTIAL)


def _poll_replies(engine, settings: Settings, config: CadenceConfig, clock: Clock) -> bool:
    """Poll the reply mailbox, print what came in; False when something went wrong."""
    from outreach.inbound.imap import MailboxError
    from outreach.inbound.poll import mailbox_from_settings, poll_mailbox

    mailbox = mailbox_from_settings(settings)
    if mailbox is None:
        return True
    try:
        report = poll_mailbox(engine, mailbox, now=clock.now(), config=config)
    except MailboxError as exc:
        err.print(f"[red]reply mailbox:[/] {exc}", highlight=False)
        return False
    if report.restarted:
        err.print(
            "[yellow]reply mailbox: UIDVALIDITY changed, the folder was read again "
            "(messages seen before are not counted twice)[/]",
            highlight=False,
        )
    _print_intake(f"{settings.imap_folder} on {settings.imap_host}", report.intake)
    return not report.intake.errors


def _print_intake(where: str, report) -> None:
    from rich.markup import escape

    for problem in report.errors:
        err.print(f"[red]bad message:[/] {escape(problem)}", highlight=False)
    kinds = report.kinds
    out.print(
        f"{where}: {report.read} messages, {report.stored} new, "
        f"{report.duplicates} seen before; {kinds['human']} replies, "
        f"{kinds['auto']} auto-replies ({report.out_of_office} out of office), "
        f"{kinds['bounce']} bounces ({report.soft_bounces} soft), "
        f"{kinds['unsubscribe']} unsubscribes, {kinds['invalid']} unreadable; "
        f"{report.unmatched} matched no one",
        highlight=False,
    )


@replies_app.command("list")
def replies_list_command(
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="human, auto, bounce, unsubscribe, invalid, or unmatched."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only messages received from then, ISO-8601.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """What came in, how each message was classified and what it matched."""
    from outreach.inbound.listing import KINDS, LIST_COLUMNS, iter_inbound

    if kind is not None and kind not in KINDS:
        raise _fail(f"--kind {kind!r} is not a kind; use one of {', '.join(KINDS)}")
    if fmt not in ("table", "json", "csv"):
        raise _fail(f"--format {fmt!r} is not supported; use table, json or csv")
    start = None
    if since is not None:
        try:
            start = parse_instant(since)
        except ValueError as exc:
            raise _fail(f"--since: {exc}") from None
    settings = _settings()
    engine = _engine(settings)
    rows = iter_inbound(engine, kind=kind, since=start)
    if fmt == "json":
        _print_json(rows)
        return
    if fmt == "csv":
        from outreach.csvsafe import SafeCsvWriter

        writer = SafeCsvWriter(sys.stdout)
        writer.writerow(LIST_COLUMNS)
        for row in rows:
            writer.writerow(row[c] for c in LIST_COLUMNS)
        return
    table = Table(header_style="bold")
    for column in ("id", "received (UTC)", "kind", "matched", "person", "rule", "text"):
        table.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        count += 1
        what = row["kind"] + (" (out of office)" if row["out_of_office"] else "")
        if row["returns_on"]:
            what += f", back {row['returns_on']}"
        if row["bounce_status"]:
            what += f" {row['bounce_status']}"
        text = (row["error"] or row["new_text"] or "").strip().replace("\n", " ")
        table.add_row(
            str(row["id"]),
            row["received_at"].strftime("%Y-%m-%d %H:%M"),
            what,
            row["matched_by"] or "no one",
            str(row["person_id"] or "-"),
            row["rule"] or "-",
            text[:80] + ("..." if len(text) > 80 else ""),
            end_section=False,
        )
    out.print(table)
    out.print(f"{count} message(s)", highlight=False)


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any).")] = 8080,
    threads: Annotated[
        int, typer.Option("--threads", min=1, max=256, help="Requests handled at once.")
    ] = 8,
    connection_limit: Annotated[
        int,
        typer.Option(
            "--connection-limit", min=1, help="Open connections at most (idle ones included)."
        ),
    ] = 10_000,
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            min=0.1,
            help="Seconds a request may take to arrive (and a connection may sit idle).",
        ),
    ] = 30.0,
) -> None:
    """Webhook receiver: SendGrid events and Inbound Parse, Twilio SMS and status callbacks,
    Greenhouse, Lever and HubSpot stage changes, Mailchimp Transactional events.

    Signed requests only (SENDGRID_WEBHOOK_PUBLIC_KEY; TWILIO_AUTH_TOKEN and
    MAILCHIMP_WEBHOOK_KEY over OUTREACH_PUBLIC_URL; GREENHOUSE_WEBHOOK_SECRET,
    LEVER_WEBHOOK_TOKEN, HUBSPOT_CLIENT_SECRET); Inbound Parse by its token
    (SENDGRID_INBOUND_TOKEN). What arrives is recorded as events; the next `outreach
    run` applies them, except that an email reply or out-of-office notice stops its
    cadence and cancels what SendGrid or Twilio holds for that person at once, and a
    CRM's stage change starts or stops cadences at once. Ctrl-C or
    TERM stops it: no new connections, requests that arrived finish, then it exits.

    Runs on waitress: a slow client costs a socket, not a thread, and is cut off
    after --read-timeout; headers past 64 KB get 431, bodies past 40 MB 413.
    """
    from outreach.http_server import ServerLimits, raise_open_files_limit
    from outreach.serve import make_app, serve

    limits = ServerLimits(
        threads=threads, connection_limit=connection_limit, read_timeout=read_timeout
    )
    raise_open_files_limit(connection_limit + 256)

    settings = _settings()
    config = _config(settings)
    engine = _engine(settings)
    clock = SystemClock()
    channels = _live_channels(settings, config, clock)
    app_ = make_app(engine, settings, config, clock, channels)
    for problem in app_.problems:
        err.print(f"[yellow]warning:[/] {problem}", highlight=False)
    try:
        with _stop_on_signals() as stop:
            serve(
                app_,
                host,
                port,
                stop,
                limits=limits,
                on_ready=lambda bound: err.print(
                    f"listening on http://{host}:{bound} (POST /webhooks/sendgrid/events, "
                    "/webhooks/sendgrid/inbound, /webhooks/twilio/inbound, "
                    "/webhooks/twilio/status, /webhooks/greenhouse, /webhooks/lever, "
                    "/webhooks/hubspot, /webhooks/mailchimp)",
                    highlight=False,
                ),
            )
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc}") from None
    finally:
        for channel in channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()
        engine.dispose()


@app.command("demo")
def demo_command(
    nights: Annotated[
        int, typer.Option("--nights", min=1, max=120, help="Simulated nights to play.")
    ] = 30,
    people: Annotated[
        int, typer.Option("--people", min=50, help="Seeded candidates across the CRMs.")
    ] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Seed of candidates and the script.")] = 7,
    report_file: Annotated[
        Path,
        typer.Option(
            "--report",
            help="Where to write the month's HTML report (self-contained, opens offline).",
        ),
    ] = Path("report.html"),
) -> None:
    """The whole nightly job against the built-in sandbox: no credentials, no setup.

    Starts the fake providers on loopback, uses a throwaway SQLite database, plays
    NIGHTS nights of sync, run and CRM write-back while the fake CRMs move candidates
    through stages, then prints what went out, what waited and what came back, ends with
    the month's report and writes it as HTML to --report.
    """
    from outreach.demo import Demo, mismatches, render
    from outreach.reports.render_html import write_html

    _check_writable(report_file, "--report")
    # The in-process webhook receiver logs every post it takes; the summary says it all.
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("outreach.serve").setLevel(logging.WARNING)

    progress: Progress | None = None
    task = None

    def on_night(night: int, summary) -> None:
        sent = summary.total("sent")
        tasks = summary.total("tasks")
        if progress is not None:
            progress.update(task, completed=night + 1)
        else:
            out.print(
                f"night {night + 1}/{nights} {summary.now:%a %d %b}: {sent} sent, "
                f"{tasks} tasks, {sum(summary.total_reasons('deferred').values())} deferred",
                highlight=False,
            )

    try:
        demo = Demo(nights=nights, people=people, seed=seed, on_night=on_night)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if out.is_terminal:
        progress = Progress(
            TextColumn("simulated nights"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        task = progress.add_task("nights", total=nights)
        progress.start()
    try:
        report = demo.run()
    finally:
        if progress is not None:
            progress.stop()
    render(report, out)
    try:
        write_html(report.kpis, report_file)
    except (InputError, OSError) as exc:
        raise _fail(f"--report {report_file}: {exc}") from None
    out.print(
        f"\nThe report with its charts: {report_file.resolve()} (one file; it opens offline "
        "in any browser). `outreach report` prints the same for your own store.",
        highlight=False,
    )
    if mismatches(report):
        raise typer.Exit(EXIT_PARTIAL)


@app.command("run")
def run_command(
    now: NowOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Plan and render everything, send and write nothing."),
    ] = False,
    horizon: Annotated[
        str,
        typer.Option(
            "--horizon",
            help="Hand over touches due up to this far ahead, scheduled at their allowed "
            "time (a nightly job: 24h).",
        ),
    ] = "24h",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Start N worker processes sharing the database (PostgreSQL only) and the "
            "provider rate limits; prints each one's summary and their totals.",
        ),
    ] = 1,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="Due enrollments claimed at a time. A worker sends what it claimed at the "
            "channels' rate before it claims more: smaller batches share paced work "
            "between --workers sooner.",
        ),
    ] = 2000,
    worker_of: Annotated[
        int | None,
        typer.Option(
            "--worker-of",
            min=1,
            help="This run is one of N started separately (cron on N machines): should the "
            "shared rate limits become unreachable, it keeps to 1/N of each.",
        ),
    ] = None,
    spawned: Annotated[bool, typer.Option("--spawned", hidden=True)] = False,
    summary_out: Annotated[Path | None, typer.Option("--summary-out", hidden=True)] = None,
) -> None:
    """One tick: enroll, plan, throttle, route, send, and print a summary."""
    from outreach.cadence import parse_duration
    from outreach.engine.runner import run_tick

    try:
        window = parse_duration(horizon)
    except Exception:
        raise _fail(f"--horizon {horizon!r} is not a duration; use e.g. 24h, 30m, 2d") from None
    if workers > 1 and dry_run:
        raise _fail(
            "--workers with --dry-run: a dry run writes nothing, so workers cannot share "
            "the work; run the dry run without --workers"
        )
    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    engine = _engine(settings)
    if workers > 1:
        if engine.dialect.name != "postgresql":
            raise _fail(
                f"--workers {workers} needs PostgreSQL: OUTREACH_DATABASE_URL is "
                f"{engine.dialect.name}, which takes one writer at a time, so more workers "
                "would only wait for each other; run without --workers, or set "
                "OUTREACH_DATABASE_URL=postgresql+psycopg://…"
            )
        # Replies first, once for all workers: nobody is sent a touch after answering.
        mailbox_ok = _poll_replies(engine, settings, config, clock)
        engine.dispose()
        code = _run_workers(workers, now, horizon, batch_size)
        raise typer.Exit(max(code, EXIT_PARTIAL if not mailbox_ok else EXIT_OK))
    if not settings.public_url:
        from outreach.templates import NO_PUBLIC_URL, steps_needing_public_url

        if needing := steps_needing_public_url(config):
            err.print(
                f"[yellow]note:[/] {', '.join(needing)} use touch.rating_urls, but {NO_PUBLIC_URL}",
                highlight=False,
            )
    # Replies first: a candidate who answered overnight is not sent the next touch (a
    # worker of --workers leaves that to the command that started it).
    mailbox_ok = dry_run or spawned or _poll_replies(engine, settings, config, clock)
    channels = {} if dry_run else _live_channels(settings, config, clock)
    limits = None if dry_run else _limiters(engine, settings, worker_of or 1)
    from outreach.engine.shared_limits import BucketUnavailable

    try:
        summary = run_tick(
            engine,
            config,
            clock,
            channels,
            dry_run=dry_run,
            horizon=window,
            reply_to=settings.reply_to,
            mail_domain=_mail_domain(settings),
            public_url=settings.public_url,
            limiters=limits,
            batch_size=batch_size,
        )
    except BucketUnavailable as exc:
        # A shared rate limit is out of reach and this worker has no safe share of it: it
        # stops; what it claimed and did not send is released by the next run.
        err.print(f"[red]stopped:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_PARTIAL) from None
    finally:
        for channel in channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()
        close_limits = getattr(limits, "close", None)
        if close_limits is not None:
            close_limits()
    _print_summary(summary, dry_run=dry_run)
    faults: dict[str, str] = getattr(limits, "faults", {})
    for bucket, why in faults.items():
        err.print(
            f"[yellow]rate limit {bucket}:[/] the shared bucket was unreachable ({why}); "
            f"this worker paced {bucket} alone at 1/{worker_of or 1} of the limit",
            highlight=False,
        )
    problems = (
        summary.total("failed")
        + summary.total("ambiguous")
        + summary.recovery.handed_over  # sends nobody can confirm: a person must check
        + (not mailbox_ok)
    )
    if not dry_run:
        from outreach.writeback import process_write_backs

        connectors = _connectors(settings, SOURCES, clock, quiet=True)
        try:
            written = process_write_backs(engine, {c.name: c for c in connectors}, clock)
        finally:
            for connector in connectors:
                connector.close()
        if written.done or written.retrying or written.failed or written.blocked:
            out.print(
                f"write-back: {sum(written.done.values())} done, "
                f"{sum(written.retrying.values())} to retry, {len(written.failed)} failed",
                highlight=False,
            )
        for problem in written.failed:
            err.print(f"[red]write-back failed:[/] {problem}", highlight=False)
        for source, problem in written.blocked.items():
            err.print(f"[red]write-back to {source} waits:[/] {problem}", highlight=False)
        # A CRM refusing the token or a note that failed is worth a look: partial, exit 1.
        problems += len(written.failed) + len(written.blocked) + sum(written.retrying.values())
    problems += summary.total_reasons("skipped").get("template error", 0)
    if summary_out is not None:
        summary_out.write_text(json.dumps(_summary_counts(summary, faults)), encoding="utf-8")
    if problems:
        raise typer.Exit(EXIT_PARTIAL)


def _limiters(engine, settings: Settings, workers: int) -> Any:
    """The channels' rate limiters: shared by all workers on PostgreSQL or Redis."""
    from outreach.engine.shared_limits import limiters_for

    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    try:
        return limiters_for(engine, redis_url=redis_url, workers=workers)
    except ValueError:
        # The URL itself is never echoed: it may carry a password.
        raise _fail(
            "OUTREACH_REDIS_URL is not a Redis URL; use e.g. redis://127.0.0.1:6379/0"
        ) from None


_COUNTS = ("sent", "tasks", "failed", "ambiguous", "replanned")


def _summary_counts(summary, faults: dict[str, str]) -> dict[str, Any]:
    """What a worker of ``--workers`` reports to the command that started it."""
    counts: dict[str, Any] = {name: summary.total(name) for name in _COUNTS}
    counts["deferred"] = sum(summary.total_reasons("deferred").values())
    counts["skipped"] = sum(summary.total_reasons("skipped").values())
    counts["rate_limit_faults"] = faults
    return counts


def _run_workers(workers: int, now: str | None, horizon: str, batch_size: int) -> int:
    """Run ``workers`` ``outreach run`` processes at once; print theirs and the totals.

    Each worker is a normal run on the shared database (claims with SKIP LOCKED, shared
    rate limits); the exit code is the worst of theirs: 2 if any found bad input, else 1
    if any had a partial failure or died.
    """
    import subprocess
    import tempfile

    args = [sys.executable, "-m", "outreach", "run", "--horizon", horizon]
    args += ["--batch-size", str(batch_size)]
    if now is not None:
        args += ["--now", now]
    with tempfile.TemporaryDirectory(prefix="outreach-workers-") as tmp:
        folder = Path(tmp)
        procs = []
        for index in range(workers):
            files = [open(folder / f"{index}.{kind}", "w+b") for kind in ("out", "err")]  # noqa: SIM115
            command = [
                *args,
                "--worker-of",
                str(workers),
                "--spawned",
                "--summary-out",
                str(folder / f"{index}.json"),
            ]
            procs.append((subprocess.Popen(command, stdout=files[0], stderr=files[1]), files))
        try:
            codes = [proc.wait() for proc, _ in procs]
        except BaseException:
            for proc, _ in procs:
                proc.terminate()
            for proc, _ in procs:
                proc.wait()
            raise
        totals: dict[str, int] = dict.fromkeys((*_COUNTS, "deferred", "skipped"), 0)
        reported = 0
        for index, ((_proc, files), code) in enumerate(zip(procs, codes, strict=True)):
            out.print(f"[bold]worker {index + 1}/{workers}[/] (exit {code})", highlight=False)
            for handle, console in zip(files, (out, err), strict=True):
                handle.seek(0)
                text = handle.read().decode("utf-8", "replace").rstrip()
                handle.close()
                if text:
                    console.print(text, highlight=False, markup=False)
            summary_file = folder / f"{index}.json"
            if summary_file.exists():
                reported += 1
                counts = json.loads(summary_file.read_text(encoding="utf-8"))
                for name in totals:
                    totals[name] += int(counts.get(name, 0))
    out.print(
        f"[bold]{workers} workers[/] (exit codes {', '.join(map(str, codes))}"
        + (f"; {workers - reported} reported no summary" if reported < workers else "")
        + "): "
        + ", ".join(f"{name} {totals[name]}" for name in ("sent", "tasks", "deferred"))
        + f", skipped {totals['skipped']}, failed {totals['failed']}"
        + (f" ({totals['replanned']} re-planned for a later run)" if totals["replanned"] else "")
        + f", ambiguous {totals['ambiguous']}",
        highlight=False,
    )
    if any(code == EXIT_BAD_INPUT for code in codes):
        return EXIT_BAD_INPUT
    return EXIT_PARTIAL if any(codes) or reported < workers else EXIT_OK


def _mail_domain(settings: Settings) -> str | None:
    """The domain of the Message-IDs the engine assigns: the reply or sender domain."""
    for address in (settings.reply_to, settings.sendgrid_from_email):
        if address and "@" in address:
            return address.rsplit("@", 1)[1].strip().strip(">") or None
    return None


def _live_channels(settings: Settings, config: CadenceConfig, clock: Clock) -> dict[str, Any]:
    """The email and SMS channels the settings turn on; says once why the others are off."""
    from channels.factory import build_channels

    built, off = build_channels(settings, config, clock)
    for name, why in off.items():
        err.print(f"[yellow]{name}: off[/] ({why})", highlight=False)
    return dict(built)


def _print_recovery(recovery) -> None:
    """What an interrupted run left and what the providers said of ambiguous sends."""
    parts = []
    if recovery.released or recovery.dropped:
        parts.append(
            f"released {recovery.released} touches an interrupted run had claimed but never "
            "requested (due again)"
            + (f", {recovery.dropped} not resumed (cadence stopped)" if recovery.dropped else "")
        )
    if recovery.interrupted:
        parts.append(f"{recovery.interrupted} were in flight when their run stopped")
    if recovery.confirmed or recovery.absent:
        parts.append(
            f"ambiguous sends reconciled: {recovery.confirmed} delivered, "
            f"{recovery.absent} never received (due again)"
        )
    if recovery.waiting:
        parts.append(f"{recovery.waiting} ambiguous to ask again next run")
    if parts:
        out.print("recovery: " + "; ".join(parts), highlight=False)
    if recovery.handed_over:
        why = ", ".join(f"{n} {r}" for r, n in recovery.reasons.most_common())
        err.print(
            f"[yellow]{recovery.handed_over} ambiguous sends could not be reconciled[/] "
            f"({why}): a 'check' task each, in outreach tasks and the CRM",
            highlight=False,
        )
    for problem in recovery.problems:
        err.print(f"[yellow]reconcile:[/] {problem}", highlight=False)


def _print_summary(summary, *, dry_run: bool) -> None:
    enroll = summary.enroll
    head = f"tick at {summary.now.isoformat()}" + (
        " (dry run: nothing sent or written)" if dry_run else ""
    )
    out.print(f"[bold]{head}[/]", highlight=False)
    out.print(
        f"events processed: {enroll.events}; enrolled: {sum(enroll.enrolled.values())}; "
        f"stopped: {sum(enroll.stopped.values())}"
        + (f"; suppressed contact points: {enroll.suppressed}" if enroll.suppressed else "")
        + (f"; paused (out of office): {enroll.paused}" if enroll.paused else ""),
        highlight=False,
    )
    _print_recovery(summary.recovery)
    recall = summary.recall
    unrecallable = sum(recall.unrecallable.values())
    if recall.requested or recall.cancelled or recall.retrying or unrecallable:
        out.print(
            f"scheduled touches recalled: {recall.cancelled} cancelled, "
            f"{recall.retrying} to retry, {unrecallable} could not be recalled"
            + (
                " (" + ", ".join(f"{n} {why}" for why, n in recall.unrecallable.items()) + ")"
                if unrecallable
                else ""
            ),
            highlight=False,
        )
    for problem in recall.problems:
        err.print(f"[yellow]recall:[/] {problem}", highlight=False)
    table = Table(header_style="bold")
    for column in (
        "cadence",
        "step",
        "sent",
        "tasks",
        "deferred",
        "skipped",
        "failed",
        "ambiguous",
    ):
        table.add_column(column, overflow="fold")

    def reasons(counter) -> str:
        return ", ".join(f"{n} {r}" for r, n in counter.most_common())

    for (cadence, step), counts in sorted(summary.steps.items()):
        table.add_row(
            cadence,
            step,
            str(counts.sent),
            str(counts.tasks),
            reasons(counts.deferred),
            reasons(counts.skipped),
            f"{counts.failed} ({counts.replanned} re-planned)"
            if counts.replanned
            else str(counts.failed),
            str(counts.ambiguous),
        )
    if summary.steps:
        out.print(table)
    out.print(
        f"sent {summary.total('sent')}, tasks {summary.total('tasks')}, "
        f"deferred {sum(summary.total_reasons('deferred').values())}, "
        f"skipped {sum(summary.total_reasons('skipped').values())}, "
        f"failed {summary.total('failed')}"
        + (
            f" ({summary.total('replanned')} re-planned for a later run)"
            if summary.total("replanned")
            else ""
        )
        + f", ambiguous {summary.total('ambiguous')}",
        highlight=False,
    )


@app.command("preview")
def preview_command(
    candidate: Annotated[
        str | None,
        typer.Option(
            "--candidate", help="Person id, or SOURCE:EXTERNAL_ID of one of their records."
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Days to simulate.")] = 14,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    now: NowOption = None,
) -> None:
    """What would be sent to whom, when, on which channel and why; sends and writes nothing."""
    from outreach.engine.runner import preview

    if fmt not in ("table", "json"):
        raise _fail(f"--format {fmt!r} is not supported; use table or json")
    settings = _settings()
    clock = _clock(now)
    config = _config(settings)
    engine = _engine(settings)
    person_ids = None
    if candidate is not None:
        person_ids = {_find_person(engine, candidate)}
    entries = preview(
        engine, config, clock, days=days, person_ids=person_ids, public_url=settings.public_url
    )
    rows = [_preview_row(entry) for entry in entries]
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(header_style="bold")
    for column in (
        "local time",
        "person",
        "cadence / step",
        "channel",
        "template",
        "status",
        "rule",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            row["local_time"][:16].replace("T", " ") + f" {row['timezone']}",
            f"{row['person_id']} {row['name']}",
            f"{row['cadence']} / {row['step']}"
            + (f" #{row['occurrence']}" if row["occurrence"] else ""),
            row["channel"] or "-",
            (row["template"] or "-") + (f" ({row['variant']})" if row["variant"] else ""),
            row["status"],
            row["rule"],
        )
    out.print(table)
    out.print(
        f"{len(rows)} planned touches over {days} days (simulated; nothing sent)", highlight=False
    )


def _find_person(engine, candidate: str, *, option: str = "--candidate") -> int:
    from sqlalchemy import select

    from outreach.store.schema import CandidateRecord, Person

    with engine.connect() as conn:
        if candidate.isdigit():
            found = conn.execute(select(Person.id).where(Person.id == int(candidate))).scalar()
        elif ":" in candidate:
            source, external_id = candidate.split(":", 1)
            found = conn.execute(
                select(CandidateRecord.person_id).where(
                    CandidateRecord.source == source, CandidateRecord.external_id == external_id
                )
            ).scalar()
        else:
            found = None
    if found is None:
        raise _fail(
            f"{option} {candidate!r}: no such person; give a person id from "
            "`outreach candidates` or SOURCE:EXTERNAL_ID"
        )
    return int(found)


def _preview_row(entry) -> dict[str, Any]:
    from zoneinfo import ZoneInfo

    return {
        "at": entry.at.isoformat(),
        "local_time": entry.at.astimezone(ZoneInfo(entry.timezone)).isoformat(),
        "timezone": entry.timezone,
        "person_id": entry.person_id,
        "name": entry.name,
        "cadence": entry.cadence_id,
        "step": entry.step_id,
        "occurrence": entry.occurrence,
        "channel": entry.channel,
        "template": entry.template,
        "variant": entry.variant,
        "status": entry.status,
        "rule": entry.rule,
    }


def _print_json(people) -> None:
    write = sys.stdout.write
    write("[")
    count = 0
    for person in people:
        write(("\n" if count == 0 else ",\n") + json.dumps(person, default=_json_default))
        count += 1
    write("\n]\n" if count else "]\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


_CSV_COLUMNS = [
    "person_id",
    "first_name",
    "last_name",
    "stage",
    "stage_entered_at",
    "records",
    "email",
    "phone",
    "linkedin_url",
    "x_url",
    "facebook_url",
    "sms_consent",
    "suppressed",
    "global_opt_out",
]


def _print_csv(people) -> None:
    from outreach.csvsafe import SafeCsvWriter

    writer = SafeCsvWriter(sys.stdout)
    writer.writerow(_CSV_COLUMNS)
    for person in people:
        flat = _flatten(person)
        writer.writerow([flat[c] for c in _CSV_COLUMNS])


def _flatten(person: dict[str, Any]) -> dict[str, Any]:
    def values(kind: str) -> str:
        return ";".join(c["value"] for c in person["contacts"] if c["kind"] == kind)

    phones = [c for c in person["contacts"] if c["kind"] == "phone"]
    consent = {c["sms_consent"] for c in phones}
    return {
        "person_id": person["id"],
        "first_name": person["first_name"] or "",
        "last_name": person["last_name"] or "",
        "stage": person["stage"] or "",
        "stage_entered_at": person["stage_entered_at"].isoformat()
        if person["stage_entered_at"]
        else "",
        "records": ";".join(f"{r['source']}:{r['external_id']}" for r in person["records"]),
        "email": values("email"),
        "phone": values("phone"),
        "linkedin_url": values("linkedin"),
        "x_url": values("x"),
        "facebook_url": values("facebook"),
        "sms_consent": "" if not phones or None in consent else str(all(consent)).lower(),
        "suppressed": ";".join(
            f"{c['kind']}:{c['suppressed_reason'] or 'suppressed'}"
            for c in person["contacts"]
            if c["suppressed"]
        ),
        "global_opt_out": str(person["global_opt_out"]).lower(),
    }


def _print_table(people) -> None:
    table = Table(show_lines=False, header_style="bold")
    for column in (
        "id",
        "name",
        "stage",
        "since",
        "records",
        "email",
        "phone",
        "linkedin",
        "flags",
    ):
        table.add_column(column, overflow="fold")
    count = 0
    for person in people:
        count += 1
        flat = _flatten(person)
        flags = []
        if person["global_opt_out"]:
            flags.append("opted out")
        if flat["suppressed"]:
            flags.append("suppressed " + flat["suppressed"])
        if flat["sms_consent"] == "true":
            flags.append("sms ok")
        if any(c["shared"] for c in person["contacts"]):
            flags.append("shared phone")
        table.add_row(
            str(person["id"]),
            " ".join(p for p in (flat["first_name"], flat["last_name"]) if p),
            flat["stage"],
            flat["stage_entered_at"][:16].replace("T", " "),
            flat["records"].replace(";", "\n"),
            flat["email"].replace(";", "\n"),
            flat["phone"].replace(";", "\n"),
            flat["linkedin_url"].replace(";", "\n"),
            ", ".join(flags),
        )
    out.print(table)
    out.print(f"{count} people", highlight=False)


def _print_explanation(person: dict[str, Any]) -> None:
    out.print(
        f"person {person['id']}"
        + (" (opted out of everything)" if person["global_opt_out"] else ""),
        highlight=False,
    )
    records = Table(header_style="bold", title="records")
    for column in ("record", "name", "email", "phone", "linkedin", "sms consent"):
        records.add_column(column, overflow="fold")
    for r in person["records"]:
        consent = "" if r["sms_consent"] is None else str(r["sms_consent"]).lower()
        if consent and r["sms_consent_at"]:
            consent += f" since {r['sms_consent_at'].isoformat()[:16].replace('T', ' ')}"
        records.add_row(
            f"{r['source']}:{r['external_id']}",
            " ".join(p for p in (r["first_name"], r["last_name"]) if p),
            r["email"] or "",
            r["phone"] or "",
            r["linkedin_url"] or "",
            consent,
        )
    out.print(records)
    if len(person["records"]) > 1:
        out.print("why these records are one person:", highlight=False)
        for link in person["links"]:
            out.print(f"  {' + '.join(link['records'])}: {', '.join(link['why'])}", highlight=False)
        if not person["links"]:
            out.print("  (joined through records since changed)", highlight=False)
    if person["merges"]:
        merged = ", ".join(str(p) for p in person["merges"])
        out.print(f"merged into this person: {merged}", highlight=False)
    contacts = Table(header_style="bold", title="contact points")
    for column in ("kind", "value", "state", "suppression list"):
        contacts.add_column(column, overflow="fold")
    for c in person["contacts"]:
        state = []
        if c["shared_with"]:
            state.append("shared with person " + ", ".join(str(p) for p in c["shared_with"]))
        if not c["valid"]:
            state.append("invalid")
        if c["sms_consent"] is not None:
            state.append(
                f"sms consent {str(c['sms_consent']).lower()}"
                + (f" ({c['consent_source']})" if c["consent_source"] else "")
            )
        if c["suppressed"]:
            state.append(f"suppressed: {c['suppressed_reason'] or 'suppressed'}")
        contacts.add_row(
            c["kind"],
            c["value"],
            "; ".join(state),
            "; ".join(f"{e['reason']} ({e['scope']}, {e['source']})" for e in c["suppressions"]),
        )
    out.print(contacts)


def _count_lines(path: Path) -> int | None:
    if not out.is_terminal:
        return None
    with path.open("rb") as handle:
        return max(
            sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1, 0
        )


class _progress:
    """A Rich progress bar on a terminal; periodic plain log lines otherwise."""

    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.bar: Progress | None = None
        self.next_log = 10_000
        self.next_bar = 0

    def __enter__(self):
        if out.is_terminal:
            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self.bar.start()
            task = self.bar.add_task(self.label, total=self.total)

            def advance(done: int) -> None:
                if done >= self.next_bar:
                    self.bar.update(task, completed=done)
                    self.next_bar = done + 500

            return advance

        def log_line(done: int) -> None:
            if done >= self.next_log:
                log.info("%s: %d rows", self.label, done)
                self.next_log += 10_000

        return log_line

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def main() -> None:
    """Entry point of the ``outreach`` script."""
    try:
        app()
    except (ConfigError, InputError, StoreError) as exc:  # pragma: no cover - safety net
        err.print(f"error: {exc}", highlight=False, markup=False)
        raise SystemExit(EXIT_BAD_INPUT) from None
