"""`jupyter lcm reconcile|report`: commands that ask a running server, and finding it.

The server is `--url` (with `--token`), else the one this process runs under
(`LCM_SERVER_URL`, set for its terminals and kernels), else the running Jupyter server
that has the extension: `jupyter_server.serverapp.list_running_servers()` lists them
(`jupyter server list` does the same), and each is asked for `lcm/api/status`.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass

from traitlets import Enum, Integer, Unicode

from .._env import TOKEN_ENV, URL_ENV
from ._base import CommandError, LCMCommand
from ._text import (
    REPORT_BY,
    REPORT_COLUMNS,
    REPORT_FORMATS,
    reconcile_lines,
    report_totals,
    shadow_lines,
    text_table,
    totals_line,
)

PROBE_TIMEOUT = 3.0  # seconds for a running server to answer lcm/api/status


@dataclass(frozen=True)
class Server:
    """A server to ask: its URL (with base_url, ending in "/") and token, if any."""

    url: str
    token: str | None = None
    found: str = ""  # how it was found, when it was looked for


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def running_servers() -> list[dict]:
    """The running Jupyter servers' info (`jupyter server list`): url, token, pid, root_dir."""
    from jupyter_server.serverapp import list_running_servers  # heavy: only when looked for

    return list(list_running_servers())


def probe(info: dict) -> int:
    """What `lcm/api/status` answers on a running server: 200 (the extension is there),
    403 (its token was refused), 404 (no extension), 0 (unreachable)."""
    import httpx

    headers = {"Authorization": f"token {info['token']}"} if info.get("token") else {}
    try:
        resp = httpx.get(
            _slash(info["url"]) + "lcm/api/status", headers=headers, timeout=PROBE_TIMEOUT
        )
    except httpx.HTTPError:
        return 0
    return resp.status_code


def find_server(url: str | None, token: str | None) -> Server:
    """The server to ask, or a CommandError saying how to name one."""
    if url:
        url = _slash(url)
        if token is None and not os.environ.get(TOKEN_ENV):
            # The token of a running server at that URL, as `jupyter server list` shows it.
            token = next(
                (s.get("token") for s in _listed() if _slash(s["url"]) == url and s.get("token")),
                None,
            )
        return Server(url, token)
    if os.environ.get(URL_ENV):
        return Server(_slash(os.environ[URL_ENV]), token, found=f"${URL_ENV}")
    servers = _listed()
    if not servers:
        raise CommandError(
            "no running Jupyter server found (jupyter server list); start one (jupyter lab), "
            "or pass --url URL --token TOKEN"
        )
    answers = [(s, probe(s)) for s in servers]
    with_lcm = [s for s, status in answers if status == 200]
    if len(with_lcm) > 1:
        urls = ", ".join(_slash(s["url"]) for s in with_lcm)
        raise CommandError(
            f"{len(with_lcm)} running servers have lcm-jupyter ({urls}); pick one with --url"
        )
    if with_lcm:
        info = with_lcm[0]
        where = f"pid {info.get('pid')}, root {info.get('root_dir')}"
        return Server(_slash(info["url"]), token or info.get("token") or None, found=where)
    refused = [s for s, status in answers if status in (401, 403)]
    if refused:
        urls = ", ".join(_slash(s["url"]) for s in refused)
        if not any(s.get("token") for s in refused):
            raise CommandError(
                f"the running server at {urls} has no token (a password server): run this in "
                "one of its terminals (they carry its URL and a credential), or start it with "
                "a token (--IdentityProvider.token=...) and pass --url URL --token TOKEN"
            )
        raise CommandError(
            f"the running server at {urls} refused the token it lists; pass --url URL --token TOKEN"
        )
    urls = ", ".join(_slash(s["url"]) for s in servers)
    raise CommandError(
        f"none of the running Jupyter servers ({urls}) has lcm-jupyter: enable it "
        "(jupyter server extension enable lcm_jupyter) and restart it, or pass --url"
    )


def _listed() -> list[dict]:
    try:
        return running_servers()
    except OSError as exc:
        raise CommandError(f"cannot list the running Jupyter servers: {exc}") from None


def explain(status: int, message: str, server: Server) -> str:
    """A REST error as one line with the fix."""
    if status == 0:
        return f"{message}; is the server running? (jupyter server list)"
    if status in (401, 403):
        return (
            f"{status}: the server at {server.url} refused the token; pass --token (the "
            f"token `jupyter server list` shows) or set {TOKEN_ENV}"
        )
    if status == 404 and message in ("", "Not Found"):
        return (
            f"404: no lcm-jupyter at {server.url}: enable it (jupyter server extension "
            "enable lcm_jupyter) and restart the server, or pass the --url of one that has it"
        )
    return f"{status}: {message}"


class RemoteCommand(LCMCommand):
    """A command that asks a running server through its REST API."""

    url = Unicode(
        None,
        allow_none=True,
        config=True,
        help=f"The server's URL with its base_url (default: ${URL_ENV}, else the running "
        "server that has lcm-jupyter, from jupyter server list).",
    )
    token = Unicode(
        None,
        allow_none=True,
        config=True,
        help=f"The server's token (default: ${TOKEN_ENV}, else the token of the server found).",
    )

    def call(self, do):
        """`do(client)` against the server; its result, or a CommandError in one line."""
        from ..client import LCMClient, LCMClientError

        server = find_server(self.url, self.token)
        if server.found:
            print(f"using the Jupyter server at {server.url} ({server.found})", file=sys.stderr)
        try:
            with LCMClient(server.url, server.token) as lcm:
                return do(lcm)
        except LCMClientError as err:
            raise CommandError(explain(err.status, err.message, server)) from None


def _server_aliases(command: str) -> dict[str, str]:
    return {"url": f"{command}.url", "token": f"{command}.token"}


class ReconcileApp(RemoteCommand):
    """Rebuild budget counters from the call log."""

    name = "jupyter-lcm-reconcile"
    description = (
        "Rebuild a running server's budget counters from its call log; print the drift of "
        "each key with a budget."
    )
    key = Integer(None, allow_none=True, config=True, help="Only this key (its id).")
    aliases = {**LCMCommand.aliases, **_server_aliases("ReconcileApp"), "key": "ReconcileApp.key"}

    def start(self) -> int:  # type: ignore[override]
        answer = self.call(lambda lcm: lcm.reconcile(self.key))
        print("\n".join(reconcile_lines(answer)))
        return 0


class ReportApp(RemoteCommand):
    """A running server's cost breakdown."""

    name = "jupyter-lcm-report"
    description = "Print a running server's cost breakdown and totals (table, CSV or JSON)."
    examples = (
        "jupyter lcm report --period 7d --by key --format csv\njupyter lcm report --by notebook"
    )

    period = Unicode("30d", config=True, help="7d, 30d or 90d.")
    by = Enum(
        list(REPORT_BY),
        "model",
        config=True,
        help=f"Rows by {' | '.join(REPORT_BY)} (user and notebook: the calls' JupyterHub user "
        "and notebook; '(none)' for calls that carry none).",
    )
    format = Enum(list(REPORT_FORMATS), "table", config=True, help="table, csv or json.")
    aliases = {
        **LCMCommand.aliases,
        **_server_aliases("ReportApp"),
        "period": "ReportApp.period",
        "by": "ReportApp.by",
        "format": "ReportApp.format",
    }

    def start(self) -> int:  # type: ignore[override]
        if self.format == "csv":
            print(self.call(lambda lcm: lcm.breakdown(self.by, self.period, format="csv")), end="")
            return 0
        answer, shadow = self.call(
            lambda lcm: (lcm.breakdown(self.by, self.period), lcm.shadow_savings(self.period))
        )
        totals = report_totals(answer["items"])
        if self.format == "json":
            print(json.dumps({**answer, "totals": totals, "shadow": shadow}, indent=2))
            return 0
        print(totals_line(answer, totals))
        for line in shadow_lines(shadow):
            print(line)
        print(text_table(REPORT_COLUMNS, answer["items"]))
        return 0
