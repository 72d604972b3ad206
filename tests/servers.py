"""Jupyter servers with the extension in processes of their own, for tests that need several
servers or a client that blocks (a sync SDK would deadlock a server on the test's own loop)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "t"


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(tmp_path: Path, **lcm: str) -> dict[str, str]:
    """An environment with its own Jupyter dirs and the given LCM_* settings."""
    return {
        **os.environ,
        "LCM_DB_PATH": str(tmp_path / "shared.sqlite3"),
        "LCM_SECRET_KEY_FILE": str(tmp_path / "secret.key"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
        "JUPYTER_DATA_DIR": str(tmp_path / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
        **lcm,
    }


def start_server(port: int, env: dict, root: Path) -> subprocess.Popen:
    """Start `jupyter server` with the extension on `port` (token TOKEN)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
            "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
            f"--ServerApp.root_dir={root}", "--allow-root", "--no-browser",
            "--ServerApp.log_level=WARN",
        ],
        env=env, stdout=_log(root, port), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _log(root: Path, port: int):
    """Where a server's output goes: a file beside its data when LCM_TEST_SERVER_LOGS is set."""
    if not os.environ.get("LCM_TEST_SERVER_LOGS"):
        return subprocess.DEVNULL
    return open(root / f"server-{port}.log", "w")  # the process owns it


async def wait_ready(url: str, proc: subprocess.Popen) -> None:
    """Wait until the server at `url` answers."""
    # A generous deadline: a loaded 2-core machine has taken over 30 s to start one.
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "server exited"
            try:
                await http.get(f"{url}api/status?token={TOKEN}")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not start")


def stop(procs: list[subprocess.Popen]) -> None:
    """Stop servers and wait for them."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(15)
