"""`%lcm`: the cost manager from a notebook cell (`%load_ext lcm_jupyter`).

    %lcm status                 is the extension reachable; keys; calls logged today
    %lcm keys                   the proxy keys
    %lcm report [--period 30d] [--by model|provider|key|user|notebook] [--format ...]
    %lcm reconcile [--key ID]   rebuild budget counters from the log; the drift per key
    %lcm alerts [--unread]      budget alerts
    %lcm dashboard [--period 30d] [--by model]   the cost dashboard (a widget)
    %lcm team [--month YYYY-MM]  the team's users and groups: spend, budgets (a widget)
    %lcm serve [--port N] [--verbose]   run the proxy and API inside this kernel (no extension
                                        needed); --verbose: a line per request on stderr
    %lcm cellcost [on|off]      the line under each cell that made LLM calls, in a kernel
                                started with kernel metering; its state with no argument
    %%lcm budget USD            (a cell magic) run the cell with its LLM calls refused past
                                USD dollars, e.g. `%%lcm budget 0.50`

The subcommands that ask the server take `--url` and `--token` (default: the server's URL
and the kernel's own credential, which the extension put in the kernel's environment;
`--token` is a Jupyter token). Tables are pandas DataFrames when pandas is importable, else an
HTML table with a plain-text fallback; `df = %lcm report` keeps the data.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import math
import os
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import HTML

from . import cli
from .client import URL_ENV, LCMClient, LCMClientError
from .core.money import format_count, format_money

KEY_COLUMNS = (
    "id", "name", "prefix", "provider", "budget_usd", "rpm", "routing_mode", "revoked",
)  # fmt: skip
ALERT_COLUMNS = (
    "id", "key_id", "month", "threshold", "severity", "message", "created_at", "read",
)  # fmt: skip


class UsageError(Exception):
    """Bad arguments (or a help request): the text to print instead of a traceback."""


class HelpRequested(UsageError):
    """`-h`: the help text, printed as ordinary output."""


class MagicArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that never exits the kernel: errors and help become UsageError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or "")

    def print_help(self, file: Any = None) -> None:
        raise HelpRequested(self.format_help())


class Table(HTML):
    """An HTML table that keeps its rows, with a plain-text rendering as its repr."""

    def __init__(self, columns: tuple[str, ...] | list[str], rows: list[dict]) -> None:
        self.columns = list(columns)
        self.rows = rows
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cli.cell(c, r.get(c)))}</td>" for c in self.columns)
            for r in rows
        )
        super().__init__(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        return cli.text_table(self.columns, self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def make_table(columns: tuple[str, ...] | list[str], rows: list[dict]) -> Any:
    """A pandas DataFrame when pandas is importable, else a Table."""
    try:
        import pandas
    except ImportError:
        return Table(columns, rows)
    return pandas.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def build_parser() -> MagicArgumentParser:
    """The `%lcm` argument parser."""
    common = MagicArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help=f"server URL (default: ${URL_ENV})")
    common.add_argument(
        "--token", default=None, help="a Jupyter token (default: the kernel's own credential)"
    )
    parser = MagicArgumentParser(
        prog="%lcm",
        description="The LLM cost manager from a notebook.",
        epilog="%lcm SUBCOMMAND -h shows a subcommand's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.add_parser("help", help="show this help")
    sub.add_parser("status", parents=[common], help="is the extension reachable; keys; today")
    sub.add_parser("keys", parents=[common], help="the proxy keys")
    report = sub.add_parser("report", parents=[common], help="cost breakdown and totals")
    report.add_argument("--period", default="30d", help="7d, 30d or 90d (default 30d)")
    report.add_argument("--by", default="model", choices=cli.REPORT_BY)
    report.add_argument("--format", default="table", choices=cli.REPORT_FORMATS)
    reconcile = sub.add_parser(
        "reconcile", parents=[common], help="rebuild budget counters from the log; the drift"
    )
    reconcile.add_argument("--key", type=int, default=None, metavar="ID", help="only this key")
    alerts = sub.add_parser("alerts", parents=[common], help="budget alerts")
    alerts.add_argument("--unread", action="store_true", help="only unread alerts")
    board = sub.add_parser("dashboard", parents=[common], help="the cost dashboard widget")
    board.add_argument("--period", default="30d", choices=("7d", "30d", "90d"))
    board.add_argument("--by", default="model", choices=cli.REPORT_BY, help="bars by")
    team = sub.add_parser("team", parents=[common], help="the team view widget")
    team.add_argument("--month", default=None, help="YYYY-MM (default: this month)")
    serve = sub.add_parser("serve", help="run the proxy and API inside this kernel")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument(
        "--verbose", action="store_true", help="write a line per request to stderr (default: quiet)"
    )
    cellcost = sub.add_parser(
        "cellcost", help="the cost line under cells that made LLM calls: on, off, or its state"
    )
    cellcost.add_argument("state", nargs="?", choices=("on", "off"))
    budget = sub.add_parser(
        "budget",
        help="(cell magic) %%%%lcm budget USD: refuse the cell's LLM calls past USD dollars",
        description="Run the cell with its LLM calls refused past USD dollars (HTTP 429, "
        "code budget_exceeded), in a kernel started with kernel metering.",
    )
    budget.add_argument("usd", metavar="USD", type=budget_usd, help="dollars, e.g. 0.50")
    return parser


def budget_usd(text: str) -> float:
    """A cell budget's argument: dollars, 0 or more ("0.50", "$0.50")."""
    try:
        usd = float(text.removeprefix("$"))
    except ValueError:
        usd = math.nan
    if not math.isfinite(usd) or usd < 0:
        raise argparse.ArgumentTypeError(f"not an amount of dollars, 0 or more: {text!r}")
    return usd


def _error(message: str) -> None:
    print("lcm: " + " ".join(str(message).split()), file=sys.stderr)


def run(line: str) -> Any:
    """Run one `%lcm` line; what the magic returns."""
    parser = build_parser()
    try:
        argv = shlex.split(line)
    except ValueError as err:
        _error(f"cannot parse {line!r}: {err}")
        return None
    try:
        args = parser.parse_args(argv)
    except UsageError as usage:
        text = str(usage)
        out = sys.stdout if isinstance(usage, HelpRequested) else sys.stderr
        print(text if text.endswith("\n") else text + "\n", end="", file=out)
        return None
    if args.command in (None, "help"):
        print(parser.format_help(), end="")
        return None
    if args.command == "serve":
        return serve(args)
    if args.command == "cellcost":
        return cellcost(args)
    if args.command == "budget":
        _error(f"budget is a cell magic: put %%lcm budget {args.usd:g} on the cell's first line")
        return None
    if args.url is None and not os.environ.get(URL_ENV):
        _error(
            f"extension not found: {URL_ENV} is not set in this kernel; pass --url (and --token)"
        )
        return None
    if args.command == "dashboard":
        return dashboard(args)
    if args.command == "team":
        return team_view(args)
    try:
        with LCMClient(args.url, args.token) as lcm:
            return COMMANDS[args.command](lcm, args)
    except LCMClientError as err:
        if err.status == 0:
            _error(err.message)
        elif err.status in (401, 403):
            _error(
                f"server answered {err.status}: {err.message}; the token was refused: pass "
                "--token (a Jupyter token), or leave it out to use the kernel's own credential"
            )
        else:
            _error(f"server answered {err.status}: {err.message}")
    except json.JSONDecodeError:
        _error(f"{args.url or os.environ.get(URL_ENV)} did not answer JSON: is it lcm-jupyter?")
    return None


# -- subcommands --------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> None:
    """Start (or find) the kernel-hosted server; print its URL."""
    from .kernel_server import serve as start

    try:
        handle = start(port=args.port, verbose=True if args.verbose else None)
    except Exception as err:
        _error(f"cannot start the kernel server: {err}")
        return None
    print(f"lcm-jupyter serving in this kernel at {handle.url}")
    print("LCMClient() and lcm_jupyter.openai_client(key) now use it.")
    if handle.verbose:
        print("A line per request goes to stderr (quiet again: lcm_jupyter.serve(verbose=False)).")
    print("To stop it: lcm_jupyter.serve().stop()")
    return None


def cellcost(args: argparse.Namespace) -> None:
    """Turn the line under cells on or off; print its state."""
    from .kernel_ext import KERNEL_KEY_ENV, meter

    found = meter()
    if found is None:
        why = (
            "the kernel extension is not loaded (%load_ext lcm_jupyter.kernel_ext)"
            if os.environ.get(KERNEL_KEY_ENV)
            else f"this kernel was not started with kernel metering ({KERNEL_KEY_ENV} is not set)"
        )
        _error(f"no cell costs here: {why}")
        return None
    if args.state == "on":
        found.turn_on()
    elif args.state == "off":
        found.show_line = False
    print(f"cell cost line: {found.state()}")
    return None


def run_budget_cell(shell: Any, line: str, body: str) -> Any:
    """Run `%%lcm budget USD` (the only `%%lcm`): the cell's budget set on the server, then
    its body run as the cell's own code. What goes wrong before the body runs fails the
    cell, without a traceback, and the body is not run."""
    __tracebackhide__ = True
    usage = "usage: %%lcm budget USD (dollars, e.g. %%lcm budget 0.50)"
    try:
        argv = shlex.split(line)
    except ValueError as err:
        raise IPythonUsageError(f"{usage}: {err}") from None
    if not argv or argv[0] != "budget":
        raise IPythonUsageError(f"%%lcm only runs a cell with a budget; {usage}")
    if len(argv) != 2:
        raise IPythonUsageError(usage)
    try:
        usd = budget_usd(argv[1])
    except argparse.ArgumentTypeError as err:
        raise IPythonUsageError(f"{usage}; {err}") from None
    from .kernel_ext import KERNEL_KEY_ENV, CellServerError, meter

    found = meter()
    if found is None:
        raise IPythonUsageError(
            "%%lcm budget needs a kernel started with kernel metering, whose calls the server "
            "attributes to cells"
            + (
                ": load lcm_jupyter.kernel_ext, then run the cell again"
                if os.environ.get(KERNEL_KEY_ENV)
                else f" ({KERNEL_KEY_ENV} is not set in this kernel)"
            )
            + "; the cell was not run"
        )
    try:
        found.set_budget(usd)
    except CellServerError as err:
        raise CellBudgetError(
            f"the cell's budget was not set ({err}); the cell was not run"
        ) from None
    count = found.cell[1] if found.cell else None
    return run_body(shell, body, count)


class CellBudgetError(RuntimeError):
    """The server did not take a cell's budget: shown as one line, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        return [f"lcm: {self}"]


def run_body(shell: Any, body: str, count: int | None) -> Any:
    """Run a cell magic's body as the cell's code: in the user's namespace, its last
    expression's value returned (the cell's result), its errors raised with the cell's own
    lines (and numbers) in their traceback."""
    __tracebackhide__ = True
    # The body starts on the cell's second line; IPython drops its leading blank lines.
    lines = body.splitlines()
    blank = next((i for i, text in enumerate(lines) if text and not text.isspace()), 0)
    code = "\n" * (1 + blank) + shell.transform_cell(body)
    name = shell.compile.cache(code, count or 0, raw_code=body)
    tree = shell.transform_ast(shell.compile.ast_parse(code, filename=name))
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr) and not body.rstrip().endswith(";"):
        last = ast.Expression(tree.body.pop().value)
    namespaces = (shell.user_global_ns, shell.user_ns)
    exec(shell.compile(tree, name, "exec"), *namespaces)
    return None if last is None else eval(shell.compile(last, name, "eval"), *namespaces)


def dashboard(args: argparse.Namespace) -> Any:
    """The dashboard widget (shown as the cell's result); its errors show inside it."""
    from .ui.dashboard import Dashboard  # ipywidgets and bqplot only when asked for

    # Not closed here, unlike the other subcommands' clients: the widget keeps using it.
    return Dashboard(LCMClient(args.url, args.token), period=args.period, by=args.by)


def team_view(args: argparse.Namespace) -> Any:
    """The team view widget (shown as the cell's result); its errors show inside it."""
    from .ui.team import TeamView

    return TeamView(LCMClient(args.url, args.token), month=args.month)


def status(lcm: LCMClient, args: argparse.Namespace) -> None:
    """Print what the API tells about the extension."""
    keys = lcm.list_keys()
    today = lcm.timeseries("7d")["points"][-1]
    active = sum(1 for k in keys if not k["revoked"])
    print(f"lcm-jupyter extension reachable at {lcm.url}")
    print(f"keys: {len(keys)} ({active} active, {len(keys) - active} revoked)")
    print(
        f"calls logged today ({today['date']}): {format_count(today['requests'])}, "
        f"{format_money(today['cost_usd'])}, {format_count(today['input_tokens'])} input / "
        f"{format_count(today['output_tokens'])} output tokens"
    )
    info = lcm.status()
    redis = "Redis" if info["counters"] == "redis" else info["counters"]
    if not info["redis_configured"]:
        redis = "in-memory (no Redis configured)"
    print(f"database: {info.get('database', info['db_path'])}")
    print(f"counters: {redis}; budgets: {info['budget_mode']}")
    print(f"price table: {info['pricing_version']}; version {info['version']}")


def keys(lcm: LCMClient, args: argparse.Namespace) -> Any:
    """The keys as a table."""
    rows = [
        {
            "id": k["id"],
            "name": k["name"],
            "prefix": k["key_prefix"],
            "provider": k["provider"],
            "budget_usd": k.get("monthly_budget_usd"),
            "rpm": k.get("rate_limit_rpm"),
            "routing_mode": k.get("routing_mode"),
            "revoked": k["revoked"],
        }
        for k in lcm.list_keys()
    ]
    if not rows:
        print("no keys yet")
        return None
    return make_table(KEY_COLUMNS, rows)


def report(lcm: LCMClient, args: argparse.Namespace) -> Any:
    """The breakdown: a table (totals printed), CSV printed, or the JSON dict with totals."""
    if args.format == "csv":
        print(lcm.breakdown(args.by, args.period, format="csv"), end="")
        return None
    answer = lcm.breakdown(args.by, args.period)
    totals = cli.report_totals(answer["items"])
    if args.format == "json":
        return {**answer, "totals": totals}
    print(cli.totals_line(answer, totals))
    for line in cli.shadow_lines(lcm.shadow_savings(args.period)):
        print(line)
    table = make_table(cli.REPORT_COLUMNS, answer["items"])
    if hasattr(table, "attrs"):
        table.attrs["totals"] = totals  # a DataFrame keeps them along
    return table


def reconcile(lcm: LCMClient, args: argparse.Namespace) -> None:
    """Print the drift per key."""
    print("\n".join(cli.reconcile_lines(lcm.reconcile(args.key))))


def alerts(lcm: LCMClient, args: argparse.Namespace) -> Any:
    """Alerts as a table."""
    rows = lcm.alerts(unread=args.unread)
    if not rows:
        print("no unread alerts" if args.unread else "no alerts")
        return None
    return make_table(ALERT_COLUMNS, rows)


COMMANDS = {
    "status": status,
    "keys": keys,
    "report": report,
    "reconcile": reconcile,
    "alerts": alerts,
}


@magics_class
class LCMMagics(Magics):
    """`%lcm`, and `%%lcm budget` for a cell."""

    @line_cell_magic
    def lcm(self, line: str = "", cell: str | None = None) -> Any:
        """The LLM cost manager: `%lcm help` lists the subcommands."""
        if cell is None:
            return run(line)
        __tracebackhide__ = True
        return run_budget_cell(self.shell, line, cell)


def load_ipython_extension(ipython) -> None:
    """Register `%lcm` (called by `%load_ext lcm_jupyter`)."""
    ipython.register_magics(LCMMagics)
