"""Which notebook and cell each metered call comes from; each cell's tally and budget.

With `kernel_metering`, every kernel the server starts gets a proxy key of its own: its
user's kernel key, a dot, and the kernel's id (`kernel_key`). The proxy authenticates the
user's key and reads the kernel off the rest (`split_key`), so a call is attributed to the
notebook whose session holds that kernel (the session manager knows; renames included) and
to the cell the kernel says it runs: `lcm_jupyter.kernel_ext`, loaded in every metered
Python kernel, posts each cell to `lcm/kernel/cell` as it starts. Per cell the book keeps
the calls' tally (the quiet line under a cell) and the budget `%%lcm budget` sets.

All in this server's memory: a kernel calls the server that started it, and a cell's
state matters while its kernel runs. A kernel id the server did not start is ignored: the
call is then the user's, with no notebook or cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .._env import KERNEL_KEY_ENV
from ..core.budget import cell_budget_message, to_units, to_usd
from ..core.errors import BudgetExceeded
from .kernel_env import point_kernels

KEY_SEPARATOR = "."
"""Between the user's key and the kernel's id (no proxy key has a dot: urlsafe base64)."""
EXTENSION_ARGUMENT = "--IPKernelApp.extra_extensions=lcm_jupyter.kernel_ext"
NOTEBOOK_TTL_SECONDS = 5.0
"""How long a kernel's notebook path is taken as known before the sessions are asked again."""
SETTLE_WAIT_SECONDS = 2.0
"""How long a cell's tally waits for its calls in flight (a stream's last bytes)."""


def kernel_key(plain: str, kernel_id: str) -> str:
    """The proxy key a kernel gets: its user's key and its own id."""
    return f"{plain}{KEY_SEPARATOR}{kernel_id}"


def split_key(plain: str) -> tuple[str, str | None]:
    """(the user's proxy key, the kernel id or None) of a key as a client sent it."""
    base, _, kernel = plain.partition(KEY_SEPARATOR)
    return base, kernel or None


@dataclass(slots=True)
class CellTally:
    """One cell's calls: what the line under it says, and what its budget allows."""

    cell: str | None
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: int = 0
    """Money units (1e-10 USD) of the calls settled."""
    models: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    budget: int | None = None
    """Money units `%%lcm budget` allows this cell, None for no limit."""
    reserved: int = 0
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def to_json(self) -> dict[str, Any]:
        return {
            "cell": self.cell,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": to_usd(self.cost),
            "models": sorted(self.models.items(), key=lambda m: (-m[1], m[0])),
            "refused": self.refused,
            "budget_usd": None if self.budget is None else to_usd(self.budget),
        }


@dataclass(slots=True)
class _Kernel:
    key_id: int
    notebook: str | None
    notebook_at: float = 0.0
    cell_id: tuple[str | None, int | None, str | None] | None = None
    tally: CellTally | None = None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a call comes from: its kernel's notebook and cell (None where unknown)."""

    notebook: str | None
    cell: str | None
    tally: CellTally | None


NOWHERE = Origin(None, None, None)


class KernelBook:
    """The kernels this server started with their own keys, and their cells."""

    def __init__(self, notebook_of: Callable[[str], Awaitable[str | None]] | None = None) -> None:
        self._kernels: dict[str, _Kernel] = {}
        self._notebook_of = notebook_of

    def started(self, kernel_id: str, key_id: int, notebook: str | None) -> None:
        """A kernel started with `kernel_key(<key key_id>, kernel_id)`; `notebook` is its path
        as it started, until the sessions say (at its first call)."""
        self._kernels[kernel_id] = _Kernel(key_id, notebook)

    def forget(self, kernel_id: str) -> None:
        self._kernels.pop(kernel_id, None)

    def _kernel(self, kernel_id: str | None, key_id: int) -> _Kernel | None:
        # Only the key the kernel was given names it: another key cannot move its cells.
        kernel = self._kernels.get(kernel_id) if kernel_id else None
        return kernel if kernel is not None and kernel.key_id == key_id else None

    async def origin(self, kernel_id: str | None, key_id: int) -> Origin:
        """Where a call made with the kernel's key comes from."""
        kernel = self._kernel(kernel_id, key_id)
        if kernel is None:
            return NOWHERE
        assert kernel_id is not None
        now = time.monotonic()
        if self._notebook_of is not None and now - kernel.notebook_at > NOTEBOOK_TTL_SECONDS:
            kernel.notebook_at = now
            # No session (a kernel of its own): the path it started with stays.
            with contextlib.suppress(Exception):
                kernel.notebook = await self._notebook_of(kernel_id) or kernel.notebook
        tally = kernel.tally
        return Origin(kernel.notebook, tally.cell if tally else None, tally)

    def start_cell(
        self,
        kernel_id: str | None,
        key_id: int,
        *,
        cell_id: str | None,
        execution_count: int | None,
        budget_usd: float | None,
        run_id: str | None = None,
    ) -> CellTally | None:
        """The kernel runs this cell now (a new tally, unless it is the same run of the same
        cell again: `run_id` tells runs apart); `budget_usd` limits it. None when the key
        names no kernel of this server."""
        kernel = self._kernel(kernel_id, key_id)
        if kernel is None:
            return None
        ident = (cell_id, execution_count, run_id)
        if kernel.tally is None or kernel.cell_id != ident:
            name = cell_id or (None if execution_count is None else str(execution_count))
            kernel.cell_id, kernel.tally = ident, CellTally(name)
        if budget_usd is not None:
            kernel.tally.budget = to_units(budget_usd)
        return kernel.tally

    async def current(self, kernel_id: str | None, key_id: int) -> CellTally | None:
        """The kernel's current cell, once its calls in flight are over (or a while)."""
        kernel = self._kernel(kernel_id, key_id)
        if kernel is None or kernel.tally is None:
            return None
        tally = kernel.tally
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.idle.wait(), SETTLE_WAIT_SECONDS)
        return tally


def admit_in_cell(tally: CellTally | None, reserve: int) -> int:
    """Hold `reserve` units of the cell's budget for a call; BudgetExceeded past it.
    Returns what was held (release it with `settle_in_cell`)."""
    if tally is None:
        return 0
    if tally.budget is not None and tally.cost + tally.reserved + reserve > tally.budget:
        tally.refused += 1
        raise BudgetExceeded(
            cell_budget_message(
                spent_usd=to_usd(tally.cost),
                reserved_usd=to_usd(tally.reserved),
                budget_usd=to_usd(tally.budget),
            )
        )
    tally.reserved += reserve
    tally.in_flight += 1
    tally.idle.clear()
    return reserve


def settle_in_cell(
    tally: CellTally, held: int, row: dict[str, Any] | None, cost_usd: float | None
) -> None:
    """Book a call of the cell (its row: None when nothing was logged; `cost_usd`: what it
    spent, as its budgets book it) and free its hold."""
    tally.reserved -= held
    tally.in_flight -= 1
    if not tally.in_flight:
        tally.idle.set()
    if row is None or row.get("status") is None or row["status"] >= 400:
        return
    tally.calls += 1
    tally.input_tokens += row["input_tokens"] or 0
    tally.output_tokens += row["output_tokens"] or 0
    if cost_usd is not None:
        tally.cost += to_units(cost_usd)
    tally.models[row["model"] or row["requested_model"] or "?"] += 1


def meter_each_kernel(
    kernel_manager: Any, book: KernelBook, *, server_url: str, plain: str, key_id: int
) -> None:
    """Give every kernel `kernel_manager` starts from now on a key of its own, and load
    `lcm_jupyter.kernel_ext` in the Python ones.

    jupyter_server has no hook for a kernel's environment before it starts: its
    `start_kernel` is wrapped on this instance, and an id given to the new kernel up front,
    so that its key can carry it. The environment and arguments are kept for its restarts;
    a kernel shut down is forgotten.
    """
    start = kernel_manager.start_kernel

    async def start_kernel(*, kernel_id: str | None = None, **kwargs: Any) -> str:
        if kernel_id is None or kernel_id not in kernel_manager:
            kernel_id = kernel_id or kernel_manager.new_kernel_id()
            env: MutableMapping[str, str] = dict(kwargs.get("env") or os.environ)
            own = kernel_key(plain, kernel_id)
            point_kernels(env, server_url, own)
            env[KERNEL_KEY_ENV] = own
            kwargs["env"] = env
            if _is_ipykernel(kernel_manager, kwargs.get("kernel_name")):
                kwargs["extra_arguments"] = [*kwargs.get("extra_arguments", []), EXTENSION_ARGUMENT]
            # The session's notebook: jupyter_server names it in JPY_SESSION_NAME, made
            # absolute when the session has a name; kept as the contents API's path.
            book.started(kernel_id, key_id, _api_path(env.get("JPY_SESSION_NAME"), kernel_manager))
        return await start(kernel_id=kernel_id, **kwargs)

    shutdown = kernel_manager.shutdown_kernel

    async def shutdown_kernel(
        kernel_id: str, now: bool = False, restart: bool = False, **kwargs: Any
    ) -> None:
        if not restart:
            book.forget(kernel_id)  # its key names nothing any more
        await shutdown(kernel_id, now=now, restart=restart, **kwargs)

    kernel_manager.start_kernel = start_kernel
    kernel_manager.shutdown_kernel = shutdown_kernel


def _api_path(path: str | None, kernel_manager: Any) -> str | None:
    root = getattr(kernel_manager, "root_dir", "") or ""
    if path and root and os.path.isabs(path):
        relative = os.path.relpath(path, root)
        return None if relative.startswith("..") else relative.replace(os.sep, "/")
    return path


def _is_ipykernel(kernel_manager: Any, name: str | None) -> bool:
    try:
        spec = kernel_manager.kernel_spec_manager.get_kernel_spec(
            name or kernel_manager.default_kernel_name
        )
    except Exception:
        return False
    return any("ipykernel" in part for part in spec.argv)
