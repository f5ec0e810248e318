"""A real Dovecot IMAP server for tests, in a throwaway directory, on free loopback ports.

::

    with Dovecot() as server:
        user, password = server.add_user()
        server.deliver(user, b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
        # IMAP on 127.0.0.1:server.port, IMAPS on server.ssl_port (server.ssl_context() trusts it)

Everything (config, sockets, state, logs, mail) lives in the temporary directory, so it never
touches a system Dovecot. It runs unprivileged as the current user; run as root, the login
processes run as ``dovenull`` (or ``nobody``) and mail belongs to ``nobody``, because Dovecot
refuses root for both.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from imapclient import IMAPClient

__all__ = ["Account", "Dovecot", "DovecotError"]

INSTALL_HINT = (
    "the dovecot binary was not found (looked on PATH and in /usr/sbin): install the "
    "'dovecot-imapd' package (apt-get install -y dovecot-imapd); .ci/run installs it"
)
STARTUP_SECONDS = 10.0


class DovecotError(RuntimeError):
    """Dovecot is missing or did not come up; the message says why (with its log)."""


class Account(NamedTuple):
    """A mailbox user on the test server."""

    user: str
    password: str


def find_dovecot() -> str:
    """The path of the dovecot binary, or :class:`DovecotError` naming the package to install."""
    found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise DovecotError(INSTALL_HINT)
    return found


class Dovecot:
    """One Dovecot instance: plain IMAP on :attr:`port`, IMAP over TLS on :attr:`ssl_port`.

    ``tls=False`` leaves TLS out (no certificate is made and :attr:`ssl_port` is None).
    """

    host = "127.0.0.1"

    def __init__(self, *, tls: bool = True, binary: str | None = None) -> None:
        self.binary = binary or find_dovecot()
        self.tls = tls
        self.root = Path(tempfile.mkdtemp(prefix="outreach-dovecot-"))
        self.port = 0
        self.ssl_port: int | None = None
        self.cert_path = self.root / "cert.pem"
        self.log_path = self.root / "dovecot.log"
        self.users: dict[str, str] = {}
        """user → password of every account made with :meth:`add_user`."""
        self._passwd = self.root / "passwd"
        self._output = self.root / "dovecot.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._counter = 0

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Dovecot:
        """Write the config, start ``dovecot -F`` and wait until it greets on its port."""
        try:
            self._prepare()
            for attempt in range(3):
                self._pick_ports()
                self._write_config()
                if self._launch():
                    return self
                # Another process took a port between picking and binding: try new ones.
                if "in use" not in self.log() or attempt == 2:
                    raise DovecotError(
                        f"dovecot did not start within {STARTUP_SECONDS:g} s; "
                        f"log {self.log_path}:\n{self.log()}"
                    )
        except BaseException:
            self.close()
            raise
        return self  # pragma: no cover

    def close(self) -> None:
        """Stop the server (terminate, then kill its process group) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            self._stop(proc)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        """Dovecot's log and its standard output/error so far."""
        parts = []
        for path in (self.log_path, self._output):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- accounts and mail ----------------------------------------------------------------

    def add_user(self, user: str | None = None, password: str | None = None) -> Account:
        """Create an account (a fresh name and password unless given) and return it."""
        if user is None:
            self._counter += 1
            user = f"user{self._counter}-{secrets.token_hex(3)}"
        password = password or f"pw-{secrets.token_hex(8)}"
        if ":" in user + password or "\n" in user + password or "/" in user:
            raise ValueError("user and password must not contain ':' or newlines, user no '/'")
        # One passwd-file per user: Dovecot opens a new user's file at its first login, where
        # a shared file is re-read at most once a second (a user added meanwhile is unknown).
        (self._passwd / user).write_text(f"{user}:{{PLAIN}}{password}::::::\n")
        self.users[user] = password
        return Account(user, password)

    @contextlib.contextmanager
    def client(self, user: str) -> Iterator[IMAPClient]:
        """A logged-in imapclient connection (plain IMAP) for arranging a test's mailbox."""
        imap = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        try:
            imap.login(user, self.users[user])
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def deliver(
        self,
        user: str,
        raw: bytes,
        folder: str = "INBOX",
        *,
        flags: Iterable[bytes] = (),
        when: datetime | None = None,
    ) -> int:
        """APPEND one message to ``folder`` (created if missing); return its UID."""
        return self.deliver_all(user, [raw], folder, flags=flags, when=when)[0]

    def deliver_all(
        self,
        user: str,
        raws: Iterable[bytes],
        folder: str = "INBOX",
        *,
        flags: Iterable[bytes] = (),
        when: datetime | None = None,
    ) -> list[int]:
        """APPEND several messages over one connection; return their UIDs in order."""
        flags = tuple(flags)
        uids = []
        with self.client(user) as imap:
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
            for raw in raws:
                reply = imap.append(folder, raw, flags=flags, msg_time=when)
                match = re.search(rb"APPENDUID \d+ (\d+)", reply)
                if match is None:
                    raise DovecotError(f"APPEND gave no APPENDUID: {reply!r}")
                uids.append(int(match.group(1)))
        return uids

    def kick(self, user: str) -> None:
        """Disconnect every session of ``user`` (``doveadm kick``), as a server restart would."""
        doveadm = shutil.which("doveadm") or shutil.which("doveadm", path="/usr/sbin:/usr/bin")
        if doveadm is None:
            raise DovecotError("doveadm not found: install the 'dovecot-core' package")
        subprocess.run(
            [doveadm, "-c", str(self.root / "dovecot.conf"), "kick", user],
            check=True,
            capture_output=True,
        )

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir directory of a user's folder on disk (Dovecot's Maildir++ layout)."""
        base = self.root / "home" / user / "Maildir"
        return base if folder.upper() == "INBOX" else base / f".{folder}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts exactly this server's self-signed certificate."""
        if not self.tls:
            raise DovecotError("this Dovecot was started without TLS")
        return ssl.create_default_context(cafile=str(self.cert_path))

    # -- internals ------------------------------------------------------------------------

    def _prepare(self) -> None:
        for name in ("run", "state", "home"):
            (self.root / name).mkdir()
        self._passwd.mkdir()
        if os.geteuid() == 0:
            # Dovecot's login processes and mail processes must not run as root.
            self.root.chmod(0o755)
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root / "home", nobody.pw_uid, nobody.pw_gid)
        if self.tls:
            self._make_certificate()

    def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise DovecotError("the openssl command is needed to make the test certificate")
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=localhost",
                "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                "-keyout", str(self.root / "key.pem"), "-out", str(self.cert_path),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def _pick_ports(self) -> None:
        self.port = _free_port()
        self.ssl_port = _free_port() if self.tls else None

    def _write_config(self) -> None:
        me = pwd.getpwuid(os.getuid()).pw_name
        my_group = grp.getgrgid(os.getgid()).gr_name
        if os.geteuid() == 0:
            login_user = _first_user("dovenull", "nobody")
            nobody = pwd.getpwnam("nobody")
            mail_uid, mail_gid = nobody.pw_uid, nobody.pw_gid
        else:
            login_user = me
            mail_uid, mail_gid = os.getuid(), os.getgid()
        if self.tls:
            ssl_settings = (
                f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{self.root / 'key.pem'}\n"
            )
            imaps = f"  inet_listener imaps {{\n    port = {self.ssl_port}\n    ssl = yes\n  }}\n"
        else:
            ssl_settings = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        conf = f"""\
protocols = imap
listen = {self.host}
base_dir = {self.root / "run"}
state_dir = {self.root / "state"}
log_path = {self.log_path}
info_log_path = {self.log_path}
{ssl_settings}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {me}
default_internal_group = {my_group}
first_valid_uid = {min(mail_uid, 500)}
mail_location = maildir:~/Maildir
mail_plugins =
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self._passwd}/%u
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={self.root / "home"}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.port}
  }}
{imaps}}}
service anvil {{
  chroot =
  # No anvil-auth-penalty socket: no growing delay after the wrong-password tests.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth-worker {{
  user = $default_internal_user
}}
"""
        (self.root / "dovecot.conf").write_text(conf)

    def _launch(self) -> bool:
        """Start the master process; True once it greets, False if it exits or stays silent."""
        for path in (self.log_path, self._output):
            path.unlink(missing_ok=True)
        with self._output.open("wb") as out:
            proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.root / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _greets(self.host, self.port):
                self._proc = proc
                return True
            time.sleep(0.05)  # the one bounded wait: the server is starting
        self._stop(proc)
        return False

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                # The master and the children it started share its process group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _greets(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _first_user(*names: str) -> str:
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise DovecotError(f"none of the users {', '.join(names)} exists for the login processes")
