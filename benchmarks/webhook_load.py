"""Benchmark: ``outreach serve`` under signed SendGrid Event Webhook posts while 1,000 slow
clients hold connections open.

Run: ``python benchmarks/webhook_load.py [--duration 20] [--slow 1000] [--clients 8]
[--events-per-post 1] [--read-timeout 30] [--database sqlite|postgresql]``.

Loopback only, bounded by ``--duration`` (at most 120 s) and ``--max-posts``. Sets up a
throwaway store (SQLite by default; PostgreSQL on the tests' server with
``--database postgresql``) with ``--people`` candidates (``outreach db upgrade`` and
``outreach import``), starts ``outreach serve`` as a subprocess with a SendGrid
verification key, then:

1. opens ``--slow`` connections that each send the start of a request and then one more
   header line every few seconds, never finishing it (a connection the server cuts off is
   opened again, so the count stays up);
2. from ``--clients`` keep-alive connections (raw sockets, requests pre-signed with ECDSA
   P-256 as SendGrid signs them, so the client's CPU goes to sending) posts batches of
   ``bounce``/``unsubscribe`` events for the candidates, each with its own
   ``sg_event_id``, for ``--duration`` seconds;
3. prints posts/s, events/s, latency p50/p99, the server's RSS at start, middle and end,
   how many slow connections were open at the end and how many the server had cut, the
   load average; then stops the server with SIGTERM (it must exit 0) and checks that every
   event of every post answered 2xx is in the store.

Aim: >= 500 posts/s on a 2-core machine (client and server share it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PATH = "/webhooks/sendgrid/events"
SLOW_START = b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
#: each slow connection sends one more header line this often (seconds)
TRICKLE_EVERY = 5.0


def _outreach(env: dict[str, str], *args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "outreach", *args],
        env=env,
        cwd=cwd,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _people_csv(path: Path, count: int) -> list[str]:
    emails = [f"load{i}@bench.example.com" for i in range(count)]
    lines = ["source,external_id,first_name,last_name,email,stage"]
    lines += [f"import,L{i},Ann,Load{i},{email},applied" for i, email in enumerate(emails)]
    path.write_text("\n".join(lines) + "\n")
    return emails


def _requests(signer, emails: list[str], posts: int, per_post: int) -> list[tuple[bytes, list]]:
    """``posts`` pre-signed HTTP requests, each with the event ids it carries."""
    stamp = int(time.time())
    run = base64.b32encode(os.urandom(5)).decode().lower()
    out = []
    for n in range(posts):
        ids = [f"{run}-{n}-{k}" for k in range(per_post)]
        items = [
            {
                "email": emails[(n * per_post + k) % len(emails)],
                "timestamp": stamp - 30,
                "event": "bounce" if k % 2 == 0 else "unsubscribe",
                "type": "bounce",
                "sg_event_id": event_id,
                "sg_message_id": f"m{n}.{k}",
                "status": "5.1.1",
            }
            for k, event_id in enumerate(ids)
        ]
        body = json.dumps(items, separators=(",", ":")).encode()
        headers = signer.sign_events(body, stamp)
        head = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nUser-Agent: SendGrid Event API\r\n"
            + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            + "\r\n"
        )
        out.append((head.encode() + body, ids))
    return out


class SlowClients:
    """``count`` connections that never finish their request; reopened when cut off."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.socks: list[socket.socket] = []
        self.cut = 0
        self.failed_opens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(SLOW_START)
            sock.setblocking(False)
            return sock
        except OSError:
            self.failed_opens += 1
            return None

    def start(self) -> None:
        for _ in range(self.count):
            sock = self._open()
            if sock is not None:
                self.socks.append(sock)
        self._thread.start()

    def _trickle(self) -> None:
        line = 0
        while not self._stop.wait(TRICKLE_EVERY / 10):
            # a tenth of the connections each tick: every one sends every TRICKLE_EVERY s
            step = max(1, len(self.socks) // 10)
            for i in range(line, min(line + step, len(self.socks))):
                try:
                    self.socks[i].send(f"X-Wait-{i}: {time.monotonic():.0f}\r\n".encode())
                except OSError:
                    self._replace(i)
            line = 0 if line + step >= len(self.socks) else line + step
            self._reap()

    def _reap(self) -> None:
        """Reopen the connections the server closed (they turn readable: EOF)."""
        poller = select.poll()
        index = {}
        for i, sock in enumerate(self.socks):
            poller.register(sock, select.POLLIN)
            index[sock.fileno()] = i
        for fd, _ in poller.poll(0):
            self._replace(index[fd])

    def _replace(self, i: int) -> None:
        self.cut += 1
        self.socks[i].close()
        sock = self._open()
        if sock is not None:
            self.socks[i] = sock

    def open_now(self) -> int:
        """Connections still open (not closed by the server) right now."""
        poller = select.poll()
        for sock in self.socks:
            poller.register(sock, select.POLLIN)
        closed = len(poller.poll(0))
        return len(self.socks) - closed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def _client(port: int, requests: list, until: float, results: list, lock) -> None:
    """Post ``requests`` in order over one keep-alive connection until ``until``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    mine = []
    try:
        for data, ids in requests:
            if time.perf_counter() >= until:
                break
            started = time.perf_counter()
            sock.sendall(data)
            status = int(reader.readline().split(b" ", 2)[1])
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = reader.read(length)
            mine.append((time.perf_counter() - started, status, ids, body))
    finally:
        reader.close()
        sock.close()
        with lock:
            results.extend(mine)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_listening(log: Path, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"outreach serve exited early:\n{log.read_text()[-2000:]}")
        for line in log.read_text().splitlines():
            if "listening on http://127.0.0.1:" in line:
                return int(line.split("listening on http://127.0.0.1:")[1].split()[0])
        time.sleep(0.05)
    raise SystemExit("outreach serve did not start listening")


def _stored(url: str, ids: set[str]) -> set[str]:
    from sqlalchemy import select

    from outreach.store import make_engine
    from outreach.store.schema import Event

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            keys = conn.execute(
                select(Event.dedupe_key).where(Event.type.in_(("bounce", "unsubscribe")))
            ).scalars()
            found = {key.removeprefix("inbound:") for key in keys}
    finally:
        engine.dispose()
    return ids & found


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (<=120)")
    parser.add_argument("--max-posts", type=int, default=60_000, help="posts at most")
    parser.add_argument("--slow", type=int, default=1000, help="slow connections held open")
    parser.add_argument("--clients", type=int, default=8, help="keep-alive posting connections")
    parser.add_argument("--events-per-post", type=int, default=1)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8, help="outreach serve --threads")
    parser.add_argument("--read-timeout", type=float, default=30.0)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    if not 1 <= args.duration <= 120:
        parser.error("--duration must be between 1 and 120 seconds")
    if not 1 <= args.clients <= 64 or not 0 <= args.slow <= 20_000:
        parser.error("--clients must be 1..64 and --slow 0..20000")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.slow + args.clients + 256
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    os.environ["OUTREACH_TEST_DATABASE"] = args.database
    from throwaway_db import throwaway_database

    from outreach.sandbox.sendgrid import FakeSendGrid

    signer = FakeSendGrid()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="webhook-load-")))
        url = stack.enter_context(throwaway_database(work))
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OUTREACH_", "SENDGRID_", "TWILIO_"))
        }
        env.update(
            OUTREACH_DATABASE_URL=url,
            SENDGRID_WEBHOOK_PUBLIC_KEY=signer.webhook_public_key,
            PYTHONPATH=str(ROOT),
        )
        emails = _people_csv(work / "people.csv", args.people)
        _outreach(env, "db", "upgrade", cwd=work)
        _outreach(env, "import", str(work / "people.csv"), cwd=work)
        posts = min(args.max_posts, int(args.duration * 3000))
        prepared = _requests(signer, emails, posts, args.events_per_post)

        log = work / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "outreach",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--threads",
                    str(args.threads),
                    "--read-timeout",
                    str(args.read_timeout),
                ],
                env=env,
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        try:
            port = _wait_listening(log, proc)
            slow = SlowClients(port, args.slow)
            slow.start()
            rss = [("start", _rss_mb(proc.pid))]
            results: list = []
            lock = threading.Lock()
            share = [prepared[i :: args.clients] for i in range(args.clients)]
            server_cpu = _cpu_s(proc.pid)
            client_cpu = time.process_time()
            started = time.perf_counter()
            until = started + args.duration
            threads = [
                threading.Thread(target=_client, args=(port, share[i], until, results, lock))
                for i in range(args.clients)
            ]
            for thread in threads:
                thread.start()
            time.sleep(args.duration / 2)
            rss.append(("middle", _rss_mb(proc.pid)))
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            server_cpu = _cpu_s(proc.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
            rss.append(("end", _rss_mb(proc.pid)))
            load = os.getloadavg()
            open_at_end = slow.open_now()
            slow.stop()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = -9

        ok = [r for r in results if 200 <= r[1] < 300]
        answered = {event_id for r in ok for event_id in r[2]}
        recorded = sum(json.loads(r[3])["recorded"] for r in ok)
        stored = _stored(url, answered)
        latencies = [r[0] * 1000 for r in results]
        statuses: dict[int, int] = {}
        for r in results:
            statuses[r[1]] = statuses.get(r[1], 0) + 1
        print(
            f"outreach serve, {args.database}: {len(results)} signed SendGrid posts "
            f"({args.events_per_post} event each) in {elapsed:.1f} s from {args.clients} "
            f"keep-alive clients, server --threads {args.threads}"
        )
        print(
            f"  {len(results) / elapsed:.0f} posts/s, "
            f"{len(results) * args.events_per_post / elapsed:.0f} events/s; "
            f"latency p50 {_percentile(latencies, 0.5):.1f} ms, "
            f"p99 {_percentile(latencies, 0.99):.1f} ms; statuses {statuses}"
        )
        done = max(1, len(results))
        print(
            f"  CPU: server {server_cpu:.1f} s ({server_cpu / done * 1000:.2f} ms per post, "
            f"{server_cpu / elapsed:.0%} of a core), client {client_cpu:.1f} s "
            f"({client_cpu / done * 1000:.2f} ms per post)"
        )
        print("  server RSS " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in rss))
        print(
            f"  slow connections: {open_at_end}/{args.slow} open at the end, "
            f"{slow.cut} cut by the server's read timeout ({args.read_timeout:g} s) and "
            f"reopened, {slow.failed_opens} could not open"
        )
        print(f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
        print(
            f"  stored: {len(stored)}/{len(answered)} events of 2xx-answered posts "
            f"(answers said {recorded} recorded); serve exit code on SIGTERM: {code}"
        )
        failures = []
        if stored != answered:
            failures.append(f"{len(answered - stored)} acknowledged events are not in the store")
        if code != 0:
            failures.append(f"outreach serve exited {code} on SIGTERM")
        if len(ok) != len(results):
            failures.append(f"{len(results) - len(ok)} posts were not answered 2xx")
        if failures:
            print("FAILED: " + "; ".join(failures))
            print(log.read_text()[-3000:])
            raise SystemExit(1)
        shutil.rmtree(work / "unused", ignore_errors=True)


if __name__ == "__main__":
    random.seed(7)
    main()
