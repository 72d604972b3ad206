"""Pytest fixtures for a real PostgreSQL: one server per session, from the system's binaries.

The binaries (initdb, postgres) come from PATH or the highest /usr/lib/postgresql/*/bin.
`LCM_TEST_DB_URL` (postgresql://user@host:5432/postgres) points the tests at an existing
server instead; then nothing is started. Without either the tests skip, or fail when
`LCM_REQUIRE_POSTGRES=1` (CI sets it). `pg_url` is a fresh, empty database per test;
`new_database(server)` makes one for wider-scoped fixtures.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ENV_URL = "LCM_TEST_DB_URL"
ENV_REQUIRE = "LCM_REQUIRE_POSTGRES"
SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _version(bindir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """The directory holding initdb and postgres: PATH first, else the highest Debian version."""
    on_path = shutil.which("initdb")
    # /usr/local/bin may hold symlinks: postgres must sit next to initdb after resolving them.
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres")):
            return bindir
    return None


def _answers(url: str) -> bool:
    """True when a fresh connection gets through (not "the database system is starting up")."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


class PostgresServer:
    """A throwaway cluster (trust auth, no durability) on 127.0.0.1 and a private unix socket.

    initdb and postgres refuse to run as root: under root they run as the `postgres` system
    user, in a temp dir that user owns (pytest's own temp dirs are root-only, 0700).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="lcm-pg-"))
        self.datadir = self.workdir / "data"
        # The default socket directory (/var/run/postgresql) is not ours to write.
        self.sockdir = self.workdir / "sock"
        self.sockdir.mkdir()
        self.port = _free_port()
        self.url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        self._as_user: dict[str, object] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.workdir)
                raise RuntimeError("running as root, but there is no `postgres` user") from None
            for path in (self.workdir, self.sockdir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the process is up."""
        return self._proc is not None and self._proc.poll() is None

    def _log_tail(self) -> str:
        log = self.workdir / "postgres.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def initdb(self) -> None:
        """Create the cluster (once)."""
        out = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "-A", "trust",
                "-E", "UTF8",
                "--locale", "C",
                "--no-sync",
            ],
            cwd=self.workdir,  # the postgres user may not be allowed into ours
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            **self._as_user,  # type: ignore[arg-type]
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{out.stdout}{out.stderr}")

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (on the same port as before) and wait until it accepts connections."""
        if self.running:
            return
        if not self.datadir.exists():
            self.initdb()
        with open(self.workdir / "postgres.log", "ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D", str(self.datadir),
                    "-p", str(self.port),
                    "-k", str(self.sockdir),
                    "-c", "listen_addresses=127.0.0.1",
                    # Nothing here must survive a crash: skip the disk flushes.
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    # Several Jupyter servers, each with a pool, connect at once.
                    "-c", "max_connections=300",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **self._as_user,  # type: ignore[arg-type]
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _answers(self.url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"postgres did not start on port {self.port}:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected) and wait until it is gone."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True)
class ExternalPostgres:
    """The server LCM_TEST_DB_URL names: used as it is, never started or stopped."""

    url: str


def new_database(server: PostgresServer | ExternalPostgres) -> str:
    """Create a fresh, empty database on `server` and return its URL."""
    import psycopg
    from psycopg import sql

    name = f"lcm_test_{uuid.uuid4().hex[:16]}"
    # template0: empty even if someone filled template1, and nobody is ever connected to it.
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return urlsplit(server.url)._replace(path=f"/{name}").geturl()


def drop_database(server: PostgresServer | ExternalPostgres, url: str) -> None:
    """Drop a database new_database made, disconnecting whoever is still on it."""
    import psycopg
    from psycopg import sql

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _unavailable(reason: str) -> None:
    """Skip, or fail when CI requires PostgreSQL: a silent skip there would hide the tests."""
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{reason} ({ENV_REQUIRE}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL: a PostgresServer, or ExternalPostgres from LCM_TEST_DB_URL."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg (the PostgreSQL driver) is not installed")
    if os.environ.get(ENV_URL):
        yield ExternalPostgres(os.environ[ENV_URL])
        return
    bindir = find_bindir()
    if bindir is None:
        _unavailable(
            "no PostgreSQL server binaries (initdb, postgres) on PATH or under "
            f"/usr/lib/postgresql/*/bin, and {ENV_URL} is not set"
        )
    try:
        server = PostgresServer(bindir)
    except RuntimeError as exc:
        _unavailable(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(pg_server):
    """The URL of a fresh, empty database (TCP, so that other processes reach it too)."""
    url = new_database(pg_server)
    yield url
    drop_database(pg_server, url)
