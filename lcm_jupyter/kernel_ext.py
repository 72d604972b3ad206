"""Per-cell metering in a metered kernel: each cell's LLM calls attributed to it, and one
quiet line under a cell that made some: "3 LLM calls, 2,140 tokens, $0.0123 (gpt-4o x2,
claude-haiku-4-5)".

The server loads this IPython extension in every Python kernel it starts with
`kernel_metering` on (`--IPKernelApp.extra_extensions=lcm_jupyter.kernel_ext`), and gives
such a kernel a proxy key of its own, `LCM_KERNEL_KEY` (the SDKs' key variables hold it
too); without that variable the extension only declares `%lcm`. Before a cell runs, the
kernel tells the server which cell it is (`POST lcm/kernel/cell`), so that the proxy
attributes the kernel's calls to it and applies its `%%lcm budget`; after the cell, it asks
for the cell's tally (`GET lcm/kernel/cell`) and shows the line (`%lcm cellcost off` hides
it). A cell run from inside another (a magic's `run_cell`) is part of the outer one.

It runs around the user's cells, so it never raises into them: a server that does not
answer costs one timeout at most, then the kernel's cells are no longer posted (one log
line; `%lcm cellcost on` tries again). urllib rather than httpx: importing httpx would add
a tenth of a second to every kernel's start, and `%lcm` itself is imported on first use.
"""

from __future__ import annotations

import html
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ._env import KERNEL_CELL_PATH, KERNEL_KEY_ENV, URL_ENV
from .core.money import format_money

__all__ = ["KERNEL_KEY_ENV", "CellMeter", "KernelCellAPI", "cell_cost_line"]
POST_TIMEOUT = 2.0
"""Seconds for the server to take a cell (a local round trip: milliseconds)."""
TALLY_TIMEOUT = 4.0
"""Seconds for a cell's tally: the server waits up to ~2 s for the cell's calls in flight."""
MAX_MODELS = 5
"""Models named in the line; more are counted ("+2 more")."""

_FOUR_DECIMALS = Decimal("0.0001")
_SIGNIFICANT = 2  # digits shown of a cost below $0.0001


# -- the line ------------------------------------------------------------------------------------


def format_cell_money(usd: float | Decimal) -> str:
    """A cell's cost: 4 decimals ("$0.0123", "$1,234.5000"); below $0.0001, two significant
    digits ("$0.000069"), so that a cost never shows as $0.0000 unless it is nothing."""
    amount = Decimal(str(usd))
    if not amount.is_finite():
        return f"${usd}"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if 0 < amount < _FOUR_DECIMALS:
        step = Decimal(1).scaleb(amount.adjusted() - _SIGNIFICANT + 1)
        small = amount.quantize(step, rounding=ROUND_HALF_UP)
        if small < _FOUR_DECIMALS:  # $0.000099996 rounds up to $0.0001: shown as that
            return f"{sign}${small:f}"
    return f"{sign}${amount.quantize(_FOUR_DECIMALS, rounding=ROUND_HALF_UP):,f}"


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _models(models: Any) -> str:
    counted: list[tuple[str, int]] = []
    for entry in models or ():
        name, count = entry
        counted.append((str(name or "?"), int(count)))
    counted.sort(key=lambda m: (-m[1], m[0]))
    names = [name if count == 1 else f"{name} x{count}" for name, count in counted[:MAX_MODELS]]
    if len(counted) > MAX_MODELS:
        names.append(f"+{len(counted) - MAX_MODELS} more")
    return ", ".join(names)


def cell_cost_line(tally: Mapping[str, Any]) -> str | None:
    """The line under a cell, from its tally (`GET lcm/kernel/cell`); None when the cell made
    no call (none answered, none refused)."""
    calls = int(tally.get("calls") or 0)
    refused = int(tally.get("refused") or 0)
    if calls <= 0 and refused <= 0:
        return None
    parts = []
    if calls > 0:
        tokens = int(tally.get("input_tokens") or 0) + int(tally.get("output_tokens") or 0)
        models = _models(tally.get("models"))
        parts.append(
            f"{_plural(calls, 'LLM call')}, {_plural(tokens, 'token')}, "
            f"{format_cell_money(tally.get('cost_usd') or 0)}" + (f" ({models})" if models else "")
        )
    if refused > 0:
        budget = tally.get("budget_usd")
        of = "" if budget is None else f" of {format_money(budget)}"
        whose = f"refused by the cell budget{of}"
        parts.append(f"{refused:,} {whose}" if calls else f"{_plural(refused, 'LLM call')} {whose}")
    return ", ".join(parts)


def cell_cost_html(line: str) -> str:
    """The line as muted small text."""
    return (
        '<div class="lcm-cell-cost" style="font-size: 0.85em; opacity: 0.65" '
        'title="LLM calls of this cell, metered by lcm-jupyter (%lcm cellcost off hides this)">'
        f"{html.escape(line)}</div>"
    )


# -- the server ------------------------------------------------------------------------------------


class CellServerError(Exception):
    """The server did not take a cell or give its tally: unreachable, slow, or refusing."""


class KernelCellAPI:
    """`lcm/kernel/cell` of the server that started this kernel, with its key (blocking)."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        post_timeout: float = POST_TIMEOUT,
        tally_timeout: float = TALLY_TIMEOUT,
    ) -> None:
        self.url = (url if url.endswith("/") else url + "/") + KERNEL_CELL_PATH
        self.post_timeout, self.tally_timeout = post_timeout, tally_timeout
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        # The environment's proxy settings, as the SDKs beside it: they reach the same server.
        self._opener = urllib.request.build_opener()

    def post_cell(
        self,
        *,
        cell_id: str | None,
        execution_count: int | None,
        run_id: str | None = None,
        budget_usd: float | None = None,
    ) -> dict:
        """This kernel now runs this cell (with this budget, when one is given); `run_id`
        tells one run of a cell from the next (the kernel request's id)."""
        body = {
            "cell_id": cell_id,
            "execution_count": execution_count,
            "run_id": run_id,
            "budget_usd": budget_usd,
        }
        return self._request("POST", json.dumps(body).encode(), self.post_timeout)

    def tally(self) -> dict:
        """The current cell's calls, once those in flight are over."""
        return self._request("GET", None, self.tally_timeout)

    def _request(self, method: str, body: bytes | None, timeout: float) -> dict:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url, data=body, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=timeout) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise CellServerError(f"{self.url} answered {err.code} {_reason(err)}") from None
        except (OSError, ValueError) as err:  # URLError, timeouts and resets are OSErrors
            raise CellServerError(f"{self.url} did not answer: {_reason(err)}") from None
        if not isinstance(answer, dict):
            raise CellServerError(f"{self.url} answered {type(answer).__name__}, not an object")
        return answer


def _reason(err: Exception) -> str:
    if isinstance(err, urllib.error.HTTPError):
        try:
            answer = json.loads(err.read())
            detail = (answer.get("error") or {}).get("message") or answer.get("message")
        except Exception:
            detail = None
        return f"{err.reason}: {detail}" if detail else str(err.reason)
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


# -- the kernel ------------------------------------------------------------------------------------


class CellMeter:
    """Posts each top-level cell to the server as it starts; shows its line after it."""

    def __init__(self, ip: Any, api: KernelCellAPI) -> None:
        self.ip = ip
        self.api = api
        self.show_line = True
        self.failure: str | None = None
        """Why the cells are no longer posted (the server failed once); None while they are."""
        self.cell: tuple[str | None, int | None, str | None] | None = None
        """(cell id, execution count, request id) of the top-level cell running or last run."""
        self._running: list[Any] = []  # ExecutionInfo of the cells running, outermost first
        self._message: Any = None  # the kernel's request the outermost one came with

    # IPython's events: `post_run_cell` also comes without a `pre_run_cell` (a blank cell),
    # with another info than the one announced (an error in the runner), or not at all
    # (the kernel died); the kernel's request tells a new cell from one run inside a cell.

    def pre_run_cell(self, info: Any) -> None:
        """A cell starts: post it, unless it runs inside one already running."""
        message = _request_id(self.ip)
        if self._running and (message is None or message == self._message):
            self._running.append(info)
            return
        self._running, self._message = [info], message
        self.cell = (getattr(info, "cell_id", None), _execution_count(self.ip), message)
        if self.failure is None:
            cell_id, count, run_id = self.cell
            self._try(self.api.post_cell, cell_id=cell_id, execution_count=count, run_id=run_id)

    def post_run_cell(self, result: Any) -> None:
        """A cell ended: after a top-level one, show its line if it made calls."""
        info = getattr(result, "info", None)
        if not self._running:
            return
        if any(info is running for running in self._running):
            while self._running.pop() is not info:
                pass
        elif info is not None and not (getattr(info, "raw_cell", "") or "").strip():
            return  # a blank cell: it announced nothing
        else:
            self._running.pop()
        if self._running or not self.show_line or self.failure is not None:
            return
        tally = self._try(self.api.tally)
        line = cell_cost_line(tally) if tally else None
        if line is not None:
            from IPython.display import display

            data = {"text/plain": line, "text/html": cell_cost_html(line)}
            display(data, raw=True, metadata={"lcm_jupyter": {"cell_cost": tally}})

    def set_budget(self, budget_usd: float) -> dict:
        """Limit the running cell's calls to `budget_usd` (its tally kept); the server's
        answer. CellServerError if it does not take it."""
        if self.cell is None:
            raise CellServerError("no cell is running")
        cell_id, count, run_id = self.cell
        return self.api.post_cell(
            cell_id=cell_id, execution_count=count, run_id=run_id, budget_usd=budget_usd
        )

    def turn_on(self) -> None:
        """Show the line again; after a failure, post cells again (from the next cell)."""
        self.show_line, self.failure = True, None

    def state(self) -> str:
        """What `%lcm cellcost` prints."""
        if self.failure is not None:
            return (
                f"off: the server failed, so this kernel's cells are no longer posted "
                f"({self.failure}); %lcm cellcost on tries again"
            )
        if self.show_line:
            return "on"
        return "off (calls are still attributed to their cells; %lcm cellcost on shows it)"

    def _try(self, call: Any, **kwargs: Any) -> dict | None:
        try:
            return call(**kwargs)
        except KeyboardInterrupt:  # the user stopped a slow answer: no line this time
            return None
        except CellServerError as err:
            self.failure = str(err)
        except Exception as err:  # never into the user's cell
            self.failure = f"{type(err).__name__}: {err}"
        self.ip.log.warning(
            "lcm-jupyter: per-cell metering is off in this kernel: %s", self.failure
        )
        return None


def _request_id(ip: Any) -> str | None:
    """The id of the kernel request being run (ipykernel), None outside a kernel."""
    try:
        parent = ip.get_parent() if hasattr(ip, "get_parent") else ip.parent_header
        return parent["header"]["msg_id"]
    except Exception:
        return None


def _execution_count(ip: Any) -> int | None:
    # The count the cell shows (In [n]): IPython 9 counts the cell before `pre_run_cell`,
    # IPython 8 after it; its displayhook's prompt_count is the cell's under both.
    try:
        return int(ip.displayhook.prompt_count)
    except Exception:
        return None


_meter: CellMeter | None = None


def meter() -> CellMeter | None:
    """This kernel's cell meter; None when the kernel is not metered (or not loaded)."""
    return _meter


def load_ipython_extension(ip: Any) -> None:
    """Declare `%lcm`; in a metered kernel, meter its cells."""
    global _meter
    manager = ip.magics_manager
    if "lcm" not in manager.magics["line"]:
        if hasattr(manager, "register_lazy"):  # imported on first use (IPython >= 8.8)
            manager.register_lazy("lcm", "lcm_jupyter.magics")
        else:
            from .magics import LCMMagics

            ip.register_magics(LCMMagics)
    key, url = os.environ.get(KERNEL_KEY_ENV), os.environ.get(URL_ENV)
    if _meter is not None or not key:
        return
    if not url:
        ip.log.warning(
            "lcm-jupyter: %s is set but not %s: cells not metered", KERNEL_KEY_ENV, URL_ENV
        )
        return
    _meter = CellMeter(ip, KernelCellAPI(url, key))
    ip.events.register("pre_run_cell", _meter.pre_run_cell)
    ip.events.register("post_run_cell", _meter.post_run_cell)


def unload_ipython_extension(ip: Any) -> None:
    """Stop metering the cells (`%unload_ext lcm_jupyter.kernel_ext`)."""
    global _meter
    if _meter is None:
        return
    ip.events.unregister("pre_run_cell", _meter.pre_run_cell)
    ip.events.unregister("post_run_cell", _meter.post_run_cell)
    _meter = None
