"""`jupyter lcm demo`: Jupyter with the extension against the simulated provider, offline.

The demo keeps everything in a folder of its own (`--data-dir`): its database and secret,
apart from the user's real ones, and the example notebooks, copied there from the package
(`lcm_jupyter/notebooks/`, shipped in the wheel) so that Lab opens the dashboard notebook
wherever the demo runs from. The demo's settings are given to Jupyter on its command line,
which beats any config file: the user's `c.LCMExtension.db_path` is not the demo's.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Config

from ..core.money import format_count, format_money
from ..core.providers import PROVIDERS
from ..core.settings import OPTIONS, Settings
from ..server.config import ExtensionOptions, build_settings
from ._base import CommandError, LCMCommand
from ._keys import _create_key

DEMO_PROVIDER_KEY = "sk-lcm-demo-simulated"
DEMO_HISTORY_DAYS = 30
DASHBOARD = "dashboard.ipynb"
PACKAGE_NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"  # package data
_COPIED = ".lcm-demo-copied.json"  # what the demo copied, so a notebook you edited is kept


def example_notebooks() -> Path | None:
    """Where the example notebooks are: the package's own (`lcm_jupyter/notebooks/`, in the
    wheel as in a checkout); None when an install left them out."""
    return PACKAGE_NOTEBOOKS if (PACKAGE_NOTEBOOKS / DASHBOARD).is_file() else None


def copy_notebooks(source: Path, target: Path) -> list[str]:
    """Copy the notebooks of `source` into `target`: those missing there, and those the
    demo copied before and you have not changed since (a newer version replaces them);
    the names copied."""
    target.mkdir(parents=True, exist_ok=True)
    record = target / _COPIED
    try:
        copied = json.loads(record.read_text("utf-8"))
    except (OSError, ValueError):
        copied = {}
    done = []
    for notebook in sorted(source.glob("*.ipynb")):
        there = target / notebook.name
        new = _digest(notebook)
        if there.exists() and (
            _digest(there) != copied.get(notebook.name) or _digest(there) == new
        ):
            continue  # yours (edited), or already this version
        shutil.copyfile(notebook, there)
        copied[notebook.name] = new
        done.append(notebook.name)
    record.write_text(json.dumps(copied, indent=1), "utf-8")
    return done


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dashboard_notebook(root: Path) -> str | None:
    """The dashboard notebook's path under the Jupyter root, when it is there."""
    return DASHBOARD if (root / DASHBOARD).is_file() else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise CommandError(f"the process for {url} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: that is all we wait for
        except OSError:
            time.sleep(0.2)
    raise CommandError(f"{url} did not answer within {timeout:g}s")


def _seed_demo_history(settings: Settings) -> None:
    """Fill an empty demo database with made-up history, so the dashboard has data to show."""
    from ..store.db import open_database
    from ..testing.history import seed_history

    db_path = Path(settings.db_path)
    db = open_database(db_path)
    try:
        if db.execute("SELECT 1 FROM proxy_logs LIMIT 1").fetchone():
            return  # the demo ran here before: keep what it has
    finally:
        db.close()
    history = seed_history(
        db_path,
        db_url=settings.db_url or "",
        secret_key_file=settings.secret_key_file,
        days=DEMO_HISTORY_DAYS,
        provider_api_key=DEMO_PROVIDER_KEY,
    )
    print(
        f"Seeded {DEMO_HISTORY_DAYS} days of made-up history: {format_count(history.calls)} "
        f"calls of {len(history.keys)} keys, {format_money(history.cost_usd)} "
        "(--no-history to start empty).",
        flush=True,
    )


class DemoApp(LCMCommand):
    """Run Jupyter with the proxy against a simulated provider, offline."""

    name = "jupyter-lcm-demo"
    description = (
        "Run Jupyter with the extension against the built-in simulated provider, offline: "
        "a demo database with 30 days of made-up history, a demo key, and the dashboard "
        "notebook open."
    )
    examples = "jupyter lcm demo --no-history\njupyter lcm demo --check --server-only"

    port = Integer(0, config=True, help="Jupyter's port (0: a free one).")
    sim_port = Integer(0, config=True, help="The simulated provider's port (0: a free one).")
    latency = Float(0.05, config=True, help="The simulated provider's latency, seconds.")
    data_dir = Unicode(
        str(Path.home() / ".local/share/jupyter/lcm-demo"),
        config=True,
        help="The demo's own folder: its database and secret (not your real ones), and the "
        "notebooks.",
    )
    notebook_dir = Unicode(
        "",
        config=True,
        help="Jupyter's root directory, where the example notebooks are copied "
        "(default: DATA_DIR/notebooks).",
    )
    token = Unicode(None, allow_none=True, config=True, help="Jupyter's token (default: random).")
    server_only = Bool(False, config=True, help="Jupyter Server, not JupyterLab.")
    no_browser = Bool(False, config=True, help="Do not open a browser.")
    no_history = Bool(False, config=True, help="Do not seed an empty demo database.")
    check = Bool(False, config=True, help="Make one call per provider, show the log, and stop.")

    aliases = {
        **LCMCommand.aliases,
        **{
            flag: f"DemoApp.{flag.replace('-', '_')}"
            for flag in ("port", "sim-port", "latency", "data-dir", "notebook-dir", "token")
        },
    }
    flags = {
        **LCMCommand.flags,
        **{
            flag: ({"DemoApp": {flag.replace("-", "_"): True}}, help)
            for flag, help in (
                ("server-only", "Jupyter Server, not JupyterLab."),
                ("no-browser", "Do not open a browser."),
                ("no-history", "Start with an empty demo database (no made-up history)."),
                ("check", "Make one call per provider, show the log, and stop."),
            )
        },
    }

    def demo_options(self, data_dir: Path, sim_url: str) -> dict[str, str]:
        """The extension options the demo runs with, whatever the config files say."""
        return {
            "db_path": str(data_dir / "lcm.sqlite3"),
            "db_url": "",  # its own SQLite file: never a team's PostgreSQL
            "secret_key_file": str(data_dir / "secret.key"),
            "secret_key": "",
            "redis_url": "",  # in-memory counters: never the real Redis
            **{f"{p}_base_url": sim_url for p in PROVIDERS},
        }

    def start(self) -> int:  # type: ignore[override]
        data_dir = Path(self.data_dir).expanduser()
        data_dir.mkdir(parents=True, exist_ok=True)
        root = Path(self.notebook_dir).expanduser() if self.notebook_dir else data_dir / "notebooks"
        sim_port = self.sim_port or _free_port()
        port = self.port or _free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        options = self.demo_options(data_dir, sim_url)
        settings = build_settings(ExtensionOptions(config=Config(LCMExtension=options)))
        env = dict(os.environ)
        env.update({o.env: options[o.name] for o in OPTIONS if o.name in options})
        env["LCM_DEMO"] = "1"  # the notebooks then show this server's data
        procs: list[subprocess.Popen] = []
        # A SIGTERM (a process manager, `kill`) stops the demo as Ctrl-C does: the `finally`
        # below then stops the simulated provider and Jupyter instead of leaving them running.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            sim = subprocess.Popen(
                [
                    sys.executable, "-m", "lcm_jupyter.testing", "--port", str(sim_port),
                    "--latency", str(self.latency), "--api-key", DEMO_PROVIDER_KEY,
                ],
                env=env,
            )  # fmt: skip
            procs.append(sim)
            _wait_http(f"{sim_url}/_sim/requests", proc=sim)

            if not self.no_history:
                _seed_demo_history(settings)
            record, plain = _create_key(
                settings,
                name=f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}",
                provider="auto",
                provider_api_keys={p: DEMO_PROVIDER_KEY for p in PROVIDERS},
            )
            source = example_notebooks()
            if source is not None:
                copy_notebooks(source, root)
            else:
                root.mkdir(parents=True, exist_ok=True)
                print(
                    f"The example notebooks are missing from this install ({PACKAGE_NOTEBOOKS}); "
                    'reinstall it (pip install --force-reinstall "lcm-jupyter[lab]").',
                    file=sys.stderr,
                )
            token = self.token if self.token is not None else os.urandom(16).hex()
            use_lab = not self.server_only and importlib.util.find_spec("jupyterlab") is not None
            dashboard = _dashboard_notebook(root) if use_lab else None
            cmd = [
                sys.executable, "-m", "jupyterlab" if use_lab else "jupyter_server",
                f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={token}",
                "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
                f"--ServerApp.root_dir={root}",
                *(f"--LCMExtension.{name}={value}" for name, value in options.items()),
            ]  # fmt: skip
            if self.no_browser or self.check:
                cmd.append("--no-browser")
            if dashboard:
                cmd.append(f"--LabApp.default_url=/lab/tree/{dashboard}")
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.append("--allow-root")  # these machines run everything as root
            server = subprocess.Popen(cmd, env=env)
            procs.append(server)
            base = f"http://127.0.0.1:{port}/"
            _wait_http(f"{base}api/status?token={token}", proc=server)
            _print_demo(base, token, plain, record.id, sim_url, use_lab, dashboard, root)
            if self.check:
                return _demo_check(base, plain, record.id, token)
            server.wait()
            return server.returncode or 0
        except KeyboardInterrupt:
            return 0
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    # SIGTERM, not SIGINT: a process started in the background ignores
                    # SIGINT, and Jupyter handles SIGINT only on a terminal.
                    proc.terminate()
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()


def _print_demo(
    base: str,
    token: str,
    key: str,
    key_id: int,
    sim: str,
    lab: bool,
    dashboard: str | None,
    root: Path,
) -> None:
    opened = f"{base}lab/tree/{dashboard}" if dashboard else f"{base}{'lab' if lab else ''}"
    print(
        f"""
lcm-jupyter demo is running (offline: every provider is simulated at {sim}).

  {"JupyterLab" if lab else "Jupyter Server"}: {opened}?token={token}
  Notebooks: {root}
  Demo proxy key (id {key_id}, shown once): {key}

In a notebook:

  from openai import OpenAI
  client = OpenAI(base_url="{base}lcm/proxy/openai/v1", api_key="{key}")
  client.chat.completions.create(model="gpt-4o-mini",
      messages=[{{"role": "user", "content": "Hello"}}])

  import anthropic
  anthropic.Anthropic(base_url="{base}lcm/proxy/anthropic", api_key="{key}")

  from google import genai
  genai.Client(api_key="{key}", http_options={{"base_url": "{base}lcm/proxy/google"}})

Every call is logged with tokens and cost: {base}lcm/api/logs?token={token}
Press Ctrl-C to stop.
""",
        flush=True,
    )


def _demo_check(base: str, key: str, key_id: int, token: str) -> int:
    """One call per provider through the proxy, then the log: the demo works end to end."""
    calls = [
        (
            "lcm/proxy/openai/v1/chat/completions",
            "Authorization",
            f"Bearer {key}",
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]},
        ),
        (
            "lcm/proxy/anthropic/v1/messages",
            "x-api-key",
            key,
            {
                "model": "claude-3-5-haiku-latest",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Hello"}],
            },
        ),
        (
            "lcm/proxy/google/v1beta/models/gemini-2.0-flash:generateContent",
            "x-goog-api-key",
            key,
            {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]},
        ),
    ]
    for path, header, value, body in calls:
        req = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Content-Type": "application/json",
                header: value,
                "anthropic-version": "2023-06-01",
            },
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            print(f"  {path}: {resp.status}, request id {resp.headers['x-lcm-request-id']}")
    deadline = time.monotonic() + 10
    logs: list = []
    while time.monotonic() < deadline and len(logs) < len(calls):
        url = f"{base}lcm/api/logs?key_id={key_id}&limit=3&token={token}"  # not the history's
        with urllib.request.urlopen(url) as resp:
            logs = json.load(resp)["logs"]
        time.sleep(0.3)
    for row in logs:
        print(
            f"  logged {row['provider']:9} {row['model']:28} in={row['input_tokens']:4} "
            f"out={row['output_tokens']:4} cost={format_money(row['cost_usd'])}"
        )
    ok = len(logs) == len(calls) and all(r["cost_usd"] for r in logs)
    print("demo check:", "OK" if ok else "FAILED")
    return 0 if ok else 1
