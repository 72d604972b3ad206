"""`jupyter lcm ...`: the demo, key management and the price table from a terminal."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from fnmatch import fnmatchcase
from pathlib import Path

from .core.providers import PROVIDERS

DEMO_PROVIDER_KEY = "sk-lcm-demo-simulated"


def _settings(args: argparse.Namespace):
    from .server.app import LCMExtension

    app = LCMExtension()
    if getattr(args, "db_path", None):
        app.db_path = args.db_path
    return app.lcm_settings()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers: that is all we wait for
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:g}s")


def _create_key(settings, **fields):
    from .core.keyspec import validate_key_fields
    from .core.secretbox import SecretBox, load_or_create_key
    from .store.db import open_database
    from .store.keys import create_key

    box = SecretBox(settings.secret_key or load_or_create_key(settings.secret_key_file))
    db = open_database(settings.db_path)
    try:
        return create_key(db, box, validate_key_fields(fields, partial=False))
    finally:
        db.conn.close()


# -- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Run Jupyter with the extension against the simulated provider, offline."""
    data_dir = Path(args.data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    sim_port = args.sim_port or _free_port()
    port = args.port or _free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = dict(os.environ)
    env.update(
        LCM_DB_PATH=str(data_dir / "lcm.sqlite3"),
        LCM_SECRET_KEY_FILE=str(data_dir / "secret.key"),
        LCM_OPENAI_BASE_URL=sim_url,
        LCM_ANTHROPIC_BASE_URL=sim_url,
        LCM_GOOGLE_BASE_URL=sim_url,
        # notebooks/dashboard.ipynb then shows this server's data instead of its own demo.
        LCM_DEMO="1",
    )
    os.environ.update({k: env[k] for k in env if k.startswith("LCM_")})
    procs: list[subprocess.Popen] = []
    # A SIGTERM (a process manager, `kill`) stops the demo as Ctrl-C does: the `finally`
    # below then stops the simulated provider and Jupyter instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lcm_jupyter.testing",
                "--port",
                str(sim_port),
                "--latency",
                str(args.latency),
                "--api-key",
                DEMO_PROVIDER_KEY,
            ],
            env=env,
        )
        procs.append(sim)
        _wait_http(f"{sim_url}/_sim/requests", proc=sim)

        settings = _settings(argparse.Namespace())
        if not args.no_history:
            _seed_demo_history(settings)
        record, plain = _create_key(
            settings,
            name=f"demo {time.strftime('%Y-%m-%d %H:%M:%S')}",
            provider="auto",
            provider_api_keys={p: DEMO_PROVIDER_KEY for p in PROVIDERS},
        )
        token = args.token if args.token is not None else os.urandom(16).hex()
        use_lab = not args.server_only and shutil.which("jupyter-lab") is not None
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab" if use_lab else "jupyter_server",
            f"--ServerApp.port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
            f"--ServerApp.root_dir={args.notebook_dir or os.getcwd()}",
        ]
        if args.no_browser or args.check:
            cmd.append("--no-browser")
        dashboard = _dashboard_notebook(Path(args.notebook_dir or os.getcwd())) if use_lab else None
        if dashboard:
            cmd.append(f"--LabApp.default_url=/lab/tree/{dashboard}")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # these machines run everything as root
        server = subprocess.Popen(cmd, env=env)
        procs.append(server)
        base = f"http://127.0.0.1:{port}/"
        _wait_http(f"{base}api/status?token={token}", proc=server)
        _print_demo(base, token, plain, record.id, sim_url, use_lab, dashboard)
        if args.check:
            return _demo_check(base, plain, record.id, token)
        server.wait()
        return server.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                # SIGTERM, not SIGINT: a process started in the background ignores SIGINT,
                # and Jupyter handles SIGINT only on a terminal; it stops cleanly on SIGTERM.
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


DASHBOARD_NOTEBOOK = "notebooks/dashboard.ipynb"
DEMO_HISTORY_DAYS = 30


def _seed_demo_history(settings) -> None:
    """Fill an empty demo database with made-up history, so the dashboard has data to show."""
    from .store.db import open_database
    from .testing.history import seed_history

    db_path = Path(settings.db_path)
    db = open_database(db_path)
    try:
        if db.execute("SELECT 1 FROM proxy_logs LIMIT 1").fetchone():
            return  # the demo ran here before: keep what it has
    finally:
        db.close()
    history = seed_history(
        db_path,
        secret_key_file=settings.secret_key_file,
        days=DEMO_HISTORY_DAYS,
        provider_api_key=DEMO_PROVIDER_KEY,
    )
    print(
        f"Seeded {DEMO_HISTORY_DAYS} days of made-up history: {history.calls:,} calls of "
        f"{len(history.keys)} keys, ${history.cost_usd:,.2f} (--no-history to start empty).",
        flush=True,
    )


def _dashboard_notebook(root: Path) -> str | None:
    """The dashboard notebook's path under the Jupyter root, when it is there (a checkout)."""
    return DASHBOARD_NOTEBOOK if (root / DASHBOARD_NOTEBOOK).is_file() else None


def _print_demo(
    base: str, token: str, key: str, key_id: int, sim: str, lab: bool, dashboard: str | None
) -> None:
    opened = f"{base}lab/tree/{dashboard}" if dashboard else f"{base}{'lab' if lab else ''}"
    print(
        f"""
lcm-jupyter demo is running (offline: every provider is simulated at {sim}).

  {"JupyterLab" if lab else "Jupyter Server"}: {opened}?token={token}
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
            f"out={row['output_tokens']:4} cost=${row['cost_usd']:.8f}"
        )
    ok = len(logs) == len(calls) and all(r["cost_usd"] for r in logs)
    print("demo check:", "OK" if ok else "FAILED")
    return 0 if ok else 1


# -- keys and pricing -------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    """List, create or revoke proxy keys in the database directly."""
    from .core.errors import LCMError
    from .core.secretbox import SecretBox, load_or_create_key
    from .store.db import open_database
    from .store.keys import list_keys, revoke_key

    settings = _settings(args)
    if args.action == "create":
        provider_keys = dict(kv.split("=", 1) for kv in args.provider_key or [])
        try:
            record, plain = _create_key(
                settings,
                name=args.name,
                provider=args.provider,
                provider_api_keys=provider_keys,
                monthly_budget_usd=args.budget,
            )
        except LCMError as err:
            print(f"error: {err.message}", file=sys.stderr)
            return 2
        print(json.dumps({**record.public(), "key": plain}, indent=2))
        print("Copy the key now: it is not stored and cannot be shown again.", file=sys.stderr)
        return 0
    box = SecretBox(settings.secret_key or load_or_create_key(settings.secret_key_file))
    db = open_database(settings.db_path)
    try:
        if args.action == "revoke":
            record = revoke_key(db, box, args.id)
            if record is None:
                print(f"error: no key {args.id}", file=sys.stderr)
                return 1
            print(f"revoked key {record.id} ({record.name})")
            return 0
        for r in list_keys(db, box):
            state = "revoked" if r.revoked else "active"
            budget = f"${r.monthly_budget_usd:,.2f}/month" if r.monthly_budget_usd else "no budget"
            print(f"{r.id:4}  {r.key_prefix}...  {r.provider:9}  {state:7}  {budget:16}  {r.name}")
        return 0
    finally:
        db.conn.close()


def cmd_pricing(args: argparse.Namespace) -> int:
    """Print the price catalog with the database's overrides, or update the catalog."""
    if args.action == "update":
        return cmd_pricing_update(args)
    from .core.catalog import Catalog
    from .core.pricing import PriceTable
    from .store.db import open_database
    from .store.pricing import load_overrides

    settings = _settings(args)
    db = open_database(settings.db_path)
    try:
        table = PriceTable(Catalog.load(settings.price_catalog_file), load_overrides(db))
    finally:
        db.conn.close()
    print(f"prices {table.version} (USD per 1M tokens; * marks your overrides)")
    print(f"{'provider':10} {'model':34} {'input':>9} {'output':>9} {'cached':>9} {'cache-w':>9}")
    for card in table.rows():
        if args.provider and card.provider != args.provider:
            continue
        if args.model and not fnmatchcase(card.model, args.model):
            continue
        p = card.to_dict()
        cells = [
            p[k] if p[k] is not None else "-"
            for k in ("input", "output", "cached_input", "cache_write")
        ]
        mark = " *" if card.source == "override" else ""
        print(f"{card.provider:10} {card.model:34} " + " ".join(f"{c:>9}" for c in cells) + mark)
    return 0


def cmd_pricing_update(args: argparse.Namespace) -> int:
    """Fetch the maintained price data, store it for the server, and print what changed."""
    from .core.catalog import Catalog, diff_catalogs, fetch_document

    settings = _settings(args)
    target = settings.price_catalog_file
    if target is None:
        print("error: no price_catalog_file is configured", file=sys.stderr)
        return 1
    source = args.source
    try:
        doc = fetch_document(source)
    except (OSError, ValueError) as exc:
        where = source or "the genai-prices repository"
        print(
            f"could not fetch prices from {where} ({exc}); the current prices stay in use "
            f"({Catalog.load(target).version}).",
            file=sys.stderr,
        )
        return 0 if args.offline_ok else 1
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_suffix(".tmp")
    staged.write_text(json.dumps(doc), encoding="utf-8")
    try:
        new = Catalog.from_file(staged)
    except ValueError as exc:
        staged.unlink()
        print(f"error: the fetched data is not a genai-prices catalog: {exc}", file=sys.stderr)
        return 1
    old = Catalog.load(target)
    changes = diff_catalogs(old, new)
    staged.replace(target)
    print(f"stored {new.version} in {target} (was {old.version})")
    if not changes:
        print("no price changed")
    for change in changes:
        if change.before is None:
            print(f"+ {change.provider}/{change.model}: {_fmt_prices(change.after)}")
        elif change.after is None:
            print(f"- {change.provider}/{change.model}")
        else:
            diff = {
                k: (change.before.get(k), v)
                for k, v in change.after.items()
                if change.before.get(k) != v
            }
            gone = {k: (v, None) for k, v in change.before.items() if k not in change.after}
            parts = [f"{k} {a or '-'} -> {b or '-'}" for k, (a, b) in {**diff, **gone}.items()]
            print(f"~ {change.provider}/{change.model}: " + ", ".join(parts))
    print("restart the Jupyter server to price with it")
    return 0


def _fmt_prices(prices: dict[str, str] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (prices or {}).items())


# -- reconcile and report (through the REST API of a running server) --------------------------

REPORT_BY = ("model", "provider", "key")
REPORT_FORMATS = ("table", "csv", "json")
REPORT_COLUMNS = (
    "name", "cost_usd", "savings_usd", "requests", "input_tokens", "output_tokens",
    "avg_latency_ms", "error_rate",
)  # fmt: skip
TOTAL_FIELDS = ("cost_usd", "savings_usd", "requests", "input_tokens", "output_tokens")


def text_table(columns: list[str] | tuple[str, ...], rows: list[dict]) -> str:
    """Rows as an aligned plain-text table (None shows as '-')."""
    cells = [["-" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def report_totals(items: list[dict]) -> dict:
    """The sums of a breakdown's items (the API's 'other' row keeps them complete)."""
    totals = {f: sum(i.get(f) or 0 for i in items) for f in TOTAL_FIELDS}
    for f in ("cost_usd", "savings_usd"):
        totals[f] = round(totals[f], 10)
    return totals


def totals_line(answer: dict, totals: dict) -> str:
    """One line: what the report covers and its totals."""
    return (
        f"{answer.get('period')} ({answer.get('start')} to {answer.get('end')}), "
        f"by {answer.get('by')}: {totals['requests']} requests, ${totals['cost_usd']:.6f}, "
        f"saved ${totals['savings_usd']:.6f}, {totals['input_tokens']} input / "
        f"{totals['output_tokens']} output tokens"
    )


def reconcile_lines(answer: dict) -> list[str]:
    """The drift per key of a reconcile answer, one line each."""
    lines = [f"reconciled {answer.get('month')} (counters: {answer.get('store')})"]
    for k in answer.get("keys", []):
        lines.append(
            f"  key {k['key_id']} ({k['name']}): counter ${k['counter_usd']:.10f}, "
            f"logged ${k['logged_usd']:.10f}, drift ${k['drift_usd']:.10f}"
        )
    if not answer.get("keys"):
        lines.append("  no key has spent anything this month")
    return lines


def _client(args: argparse.Namespace):
    from .client import LCMClient

    return LCMClient(args.url, args.token)


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Rebuild the budget counters of a running server from its call log; print the drift."""
    from .client import LCMClientError

    try:
        with _client(args) as lcm:
            answer = lcm.reconcile(args.key)
    except LCMClientError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    print("\n".join(reconcile_lines(answer)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print a running server's cost breakdown (and totals) as a table, CSV or JSON."""
    from .client import LCMClientError

    try:
        with _client(args) as lcm:
            if args.format == "csv":
                print(lcm.breakdown(args.by, args.period, format="csv"), end="")
                return 0
            answer = lcm.breakdown(args.by, args.period)
            shadow = lcm.shadow_savings(args.period)
    except LCMClientError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 1
    totals = report_totals(answer["items"])
    if args.format == "json":
        print(json.dumps({**answer, "totals": totals, "shadow": shadow}, indent=2))
    else:
        print(totals_line(answer, totals))
        for line in shadow_lines(shadow):
            print(line)
        print(text_table(REPORT_COLUMNS, answer["items"]))
    return 0


def shadow_lines(answer: dict) -> list[str]:
    """Per key with routing off: what auto routing would have saved, the evidence to turn it on."""
    return [
        f"auto routing would have saved ${k['saving_usd']:.6f} on {k['calls']} calls made "
        f"with routing off by key {k['key_id']} ({k.get('name') or '?'})"
        for k in answer.get("keys", [])
    ]


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="server URL (default: $LCM_SERVER_URL)")
    parser.add_argument("--token", default=None, help="server token (default: $LCM_SERVER_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    """The `jupyter lcm` argument parser."""
    parser = argparse.ArgumentParser(prog="jupyter lcm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run Jupyter with the proxy against a simulated provider")
    demo.add_argument("--port", type=int, default=0, help="Jupyter port (default: a free one)")
    demo.add_argument("--sim-port", type=int, default=0, help="simulated provider port")
    demo.add_argument("--latency", type=float, default=0.05, help="simulated latency, seconds")
    demo.add_argument(
        "--data-dir",
        default=str(Path.home() / ".local/share/jupyter/lcm-demo"),
        help="where the demo database lives (not your real one)",
    )
    demo.add_argument("--notebook-dir", default=None, help="Jupyter root directory")
    demo.add_argument("--token", default=None, help="Jupyter token (default: random)")
    demo.add_argument("--server-only", action="store_true", help="Jupyter Server, not Lab")
    demo.add_argument("--no-browser", action="store_true")
    demo.add_argument(
        "--no-history", action="store_true", help="don't seed an empty demo database with history"
    )
    demo.add_argument(
        "--check", action="store_true", help="make one call per provider, show the log, and stop"
    )
    demo.set_defaults(func=cmd_demo)

    keys = sub.add_parser("keys", help="list, create or revoke proxy keys")
    keys.add_argument("--db-path", default=None)
    keys_sub = keys.add_subparsers(dest="action", required=True)
    keys_sub.add_parser("list")
    create = keys_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--provider", default="auto", choices=[*PROVIDERS, "auto"])
    create.add_argument(
        "--provider-key",
        action="append",
        metavar="PROVIDER=KEY",
        help="a provider API key, e.g. openai=sk-... (repeatable)",
    )
    create.add_argument("--budget", type=float, default=None, help="monthly budget, USD")
    revoke = keys_sub.add_parser("revoke")
    revoke.add_argument("id", type=int)
    keys.set_defaults(func=cmd_keys)

    pricing = sub.add_parser(
        "pricing", help="show the prices in force, or update the price catalog"
    )
    pricing.add_argument("action", nargs="?", choices=["list", "update"], default="list")
    pricing.add_argument("--provider", choices=PROVIDERS)
    pricing.add_argument("--model", default=None, help="only models matching this glob")
    pricing.add_argument("--db-path", default=None)
    pricing.add_argument(
        "--from",
        dest="source",
        default=None,
        help="update from this URL or file (default: genai-prices' published data)",
    )
    pricing.add_argument(
        "--offline-ok",
        action="store_true",
        help="exit 0 when the update cannot be fetched (the current prices stay)",
    )
    pricing.set_defaults(func=cmd_pricing)

    reconcile = sub.add_parser("reconcile", help="rebuild budget counters from the log (server)")
    reconcile.add_argument("--key", type=int, default=None, metavar="ID", help="only this key")
    _add_server_options(reconcile)
    reconcile.set_defaults(func=cmd_reconcile)

    report = sub.add_parser("report", help="cost breakdown and totals (server)")
    report.add_argument("--period", default="30d", help="7d, 30d or 90d (default 30d)")
    report.add_argument("--by", default="model", choices=REPORT_BY)
    report.add_argument("--format", default="table", choices=REPORT_FORMATS)
    _add_server_options(report)
    report.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `jupyter lcm` (the `jupyter-lcm` script)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
