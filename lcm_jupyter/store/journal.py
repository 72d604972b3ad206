"""A crash-safe journal of the calls the log has not committed yet, and its replay at start.

The log writer commits rows in batches (`logwriter.py`), so a process killed outright
(SIGKILL, the OOM killer, a container stopped without grace) would lose the rows still
queued, and the budget reservations of its calls in flight would stay held until they
expire. So each call appends two lines here: a begin record once its key is known, just
before its reservation is made, and its finished row as soon as its answer is out (before
its cost is booked and the row handed to the log writer). Each line is one `os.write` on
an O_APPEND descriptor: it reaches the page cache, which outlives the process (only an OS
crash loses it; there is no fsync per call).

Layout: `{db_path}.journal/` (0700) holds, per server process (an "instance"), a lock
file `{instance}.lock`, flocked for the process's life so that another process can tell
a dead instance from a live one, and segments `{instance}.{n}.jsonl` (0600). Once a
segment passes SEGMENT_BYTES the next one is opened with a copy of the begin records of
the calls still open, and a closed segment is deleted as soon as the log writer has
committed every row in it: a begin record is never lost by a rotation, nor a row.

At start, `Journal.recover` takes every instance whose lock is free (its process died):
rows the database lacks go through the log writer (which keeps the rollups), each call
that began without a row gets one saying it was cut short, the budget reservations of
calls not in the database are released at once (their cost is then in the log, which the
start's reconcile loads), and the dead instance's files are deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock (a live process's open lock file cannot be deleted)
    fcntl = None  # type: ignore[assignment]

from ..core.pricing import PriceTable
from ..core.usage import Usage
from .logrow import LogRow
from .team import parse_ids, scope_call

log = logging.getLogger(__name__)

SEGMENT_BYTES = 1 << 20
"""A segment is closed past this size (about a thousand calls): replay reads little."""

STATUS_CUT_SHORT = 503
"""Status of a recovered call, as for calls a stopping server cancels (pipeline's 503)."""
CUT_SHORT_ERROR = "The server stopped before the call completed (recovered from the journal)."
_ESTIMATE_NOTE = " Usage estimated: input from the request, output unknown (none counted)."
_NOT_ROUTED = {
    "mode": None,
    "intent": None,
    "complexity": None,
    "confidence": None,
    "reason": "recovered from the journal",
    "was_routed": False,
    "rule": None,
    "from_model": None,
    "to_model": None,
}
_SEGMENT = re.compile(r"^(?P<instance>[0-9a-f]+-\d+)\.(?P<n>\d+)\.jsonl$")
_LOCK = re.compile(r"^(?P<instance>[0-9a-f]+-\d+)\.lock$")
_WARN_EVERY_SECONDS = 60.0
_ID_CHUNK = 500


def journal_dir(db_path: Path | str) -> Path | None:
    """Where the journal of the database at `db_path` lives (None for an in-memory one)."""
    if str(db_path) == ":memory:":
        return None
    return Path(f"{db_path}.journal")


# ASCII-only JSON on one line: a newline inside a value is escaped, so lines split cleanly.
# One encoder for every line: json.dumps with options builds a new one per call (5 us).
_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _dumps(record: Mapping[str, Any]) -> bytes:
    return (_encode(record) + "\n").encode()


class Journal:
    """This process's journal: begin and row records, segments, and their removal."""

    def __init__(self, directory: Path | str, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Time first (instances list in the order they started), then enough randomness for
        # two journals opened in one process within a clock tick; the pid last.
        self.instance = f"{time.time_ns():016x}{os.urandom(2).hex()}-{os.getpid()}"
        self._limit = segment_bytes
        # The writer thread reports commits while the event loop appends: one lock for both.
        self._lock = threading.Lock()
        self._lock_fd: int | None = _create(self.directory / f"{self.instance}.lock")
        if fcntl is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._n = 0
        self._fd: int | None = _create(self._segment(0))
        self._size = 0
        self._open: dict[str, bytes] = {}
        """Begin records of calls without a row yet, as written (copied on rotation)."""
        self._pending: dict[str, int] = {}
        """Rows journaled but not committed yet: their segment."""
        self._unwritten: dict[int, int] = {}
        """Per segment, its rows not committed yet."""
        self._closed: list[int] = []
        self._warned_at = 0.0
        self.rotations = 0

    def _segment(self, n: int) -> Path:
        return self.directory / f"{self.instance}.{n:08d}.jsonl"

    # -- the request path (event loop) ----------------------------------------------------

    def begin(self, record: Mapping[str, Any]) -> None:
        """Journal a call's begin record (its id under "b")."""
        line = _dumps(record)
        with self._lock:
            if self._fd is None:
                return
            self._open[record["b"]] = line
            self._append(line)

    def row(self, row: Mapping[str, Any]) -> None:
        """Journal a call's finished row, before it goes to the log writer: its columns only
        (the caller takes off what is work for the writer thread: the shadow judgement)."""
        line = _dumps(row)
        row_id = row["id"]
        with self._lock:
            if self._fd is None:
                return
            self._open.pop(row_id, None)
            self._append(line)
            n = self._n
            self._pending[row_id] = n
            self._unwritten[n] = self._unwritten.get(n, 0) + 1
            if self._size >= self._limit:
                self._rotate()

    def discard(self, call_id: str) -> None:
        """Forget a call that will have no row (its row could not be built)."""
        with self._lock:
            self._open.pop(call_id, None)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            self._size += len(data)
        except OSError as exc:  # a full disk must not fail the call: say so, now and then
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_SECONDS:
                self._warned_at = now
                log.error(
                    "lcm journal %s: write failed (%s); calls may go unrecovered",
                    self.directory,
                    exc,
                )

    def _rotate(self) -> None:
        """Open the next segment with the open calls' begin records; the old one is closed."""
        old, n = self._fd, self._n
        try:
            fd = _create(self._segment(n + 1))
        except OSError as exc:
            log.error("lcm journal: could not open a new segment (%s); keeping %s", exc, n)
            return
        self._fd, self._n, self._size = fd, n + 1, 0
        # Written before the old segment can go: an open call's begin record is always on disk.
        if self._open:
            self._append(b"".join(self._open.values()))
        assert old is not None
        os.close(old)
        self._closed.append(n)
        self.rotations += 1
        self._reap()

    # -- the log writer's thread --------------------------------------------------------------

    def committed(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Rows the log writer committed: a closed segment whose rows all are is deleted."""
        with self._lock:
            pending, unwritten = self._pending, self._unwritten
            for row in rows:
                n = pending.pop(row.get("id"), None)  # type: ignore[arg-type]
                if n is not None:
                    unwritten[n] -= 1
            if self._closed:
                self._reap()

    def _reap(self) -> None:
        for n in list(self._closed):
            if self._unwritten.get(n, 0) <= 0:
                _unlink(self._segment(n))
                self._closed.remove(n)
                self._unwritten.pop(n, None)

    # -- stop -------------------------------------------------------------------------------

    @property
    def outstanding(self) -> tuple[int, int]:
        """(calls begun without a row, rows not committed)."""
        with self._lock:
            return len(self._open), len(self._pending)

    def close(self) -> bool:
        """At stop, once the log writer is closed: this instance's files are removed when
        nothing in them is left to recover (True), else kept for the next start's replay."""
        with self._lock:
            if self._fd is None:
                return True
            os.close(self._fd)
            self._fd = None
            clean = not self._open and not self._pending
            if clean:
                for n in [*self._closed, self._n]:
                    _unlink(self._segment(n))
                self._closed.clear()
                _unlink_lock(self.directory / f"{self.instance}.lock")
            else:
                log.warning(
                    "lcm journal: %d call(s) unfinished and %d row(s) unwritten at stop; "
                    "the next start recovers them",
                    len(self._open),
                    len(self._pending),
                )
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock: the files are an orphan's now
                self._lock_fd = None
            return clean

    # -- start ------------------------------------------------------------------------------

    async def recover(
        self,
        *,
        logged: Callable[[list[str]], Awaitable[set[str]]],
        submit: Callable[[Mapping[str, Any]], None],
        flush: Callable[[], Awaitable[bool]],
        release: Callable[[int, str, str], Awaitable[None]],
        prices: Callable[[], PriceTable] | None = None,
    ) -> Recovery:
        """Replay every dead instance's journal: write the rows the database lacks, a row for
        each call cut short, release the reservations of calls the database lacked, then
        delete the files.

        `logged(ids)`: which of these ids proxy_logs has. `submit`: the log writer's.
        `flush`: wait until submitted rows are committed. `release(key_id, call_id, month)`:
        drop a reservation. `prices`: the table that prices a cut-short call's estimate.
        """
        done = Recovery()
        for instance in _instances(self.directory):
            if instance == self.instance:
                continue
            lock = _take(self.directory / f"{instance}.lock")
            if lock is None:
                continue  # its process is alive (another server on this database)
            try:
                await self._recover_one(instance, done, logged, submit, flush, release, prices)
            finally:
                os.close(lock)
        if done.instances:
            log.warning("lcm journal: recovered %s", done)
        return done

    async def _recover_one(
        self,
        instance: str,
        done: Recovery,
        logged: Callable[[list[str]], Awaitable[set[str]]],
        submit: Callable[[Mapping[str, Any]], None],
        flush: Callable[[], Awaitable[bool]],
        release: Callable[[int, str, str], Awaitable[None]],
        prices: Callable[[], PriceTable] | None,
    ) -> None:
        # Listed once the lock is ours: a replayer before us may have deleted some.
        segments = sorted(
            (int(m["n"]), self.directory / name)
            for name in os.listdir(self.directory)
            if (m := _SEGMENT.match(name)) and m["instance"] == instance
        )
        state = read_records(path for _, path in segments)
        done.torn += state.torn
        ids = [*state.rows, *(i for i in state.begins if i not in state.rows)]
        present: set[str] = set()
        for start in range(0, len(ids), _ID_CHUNK):
            present |= await logged(ids[start : start + _ID_CHUNK])
        table = prices() if prices is not None else None
        finished = [row for row_id, row in state.rows.items() if row_id not in present]
        cut = [b for i, b in state.begins.items() if i not in state.rows]
        made = [cut_short_row(b, table) for b in cut if b["b"] not in present]
        for row in (*finished, *made):
            submit(row)
        if (finished or made) and not await flush():
            # Keep the files: the next start tries again (every step is idempotent).
            raise RuntimeError(f"lcm journal: recovered rows of {instance} were not committed")
        # Every call the database did not have may still hold its reservation: one cut short,
        # or one whose row was journaled before its booking's round trip (the pipeline writes
        # it as soon as the answer is out). Releasing a settled call's is a no-op.
        for begin in state.begins.values():
            if begin["b"] in present:
                continue
            holds = [(begin.get("k"), begin["b"])] if begin.get("h") else []
            # The team budgets it was charged to hold it under names of their own.
            holds += [(-i, scope_call(begin["b"], i)) for i in parse_ids(begin.get("tb"))]
            for counter_id, call_id in holds:
                if counter_id is None:
                    continue
                try:
                    await release(counter_id, call_id, begin["m"])
                    done.released += 1
                except Exception:  # the reservation then expires on its own
                    log.exception("lcm journal: could not release call %s", call_id)
        for _, path in segments:
            _unlink(path)
        _unlink_lock(self.directory / f"{instance}.lock")
        done.instances += 1
        done.rows += len(finished)
        done.cut_short += len(made)


@dataclass
class Recovery:
    """What a start recovered from dead instances' journals."""

    instances: int = 0
    rows: int = 0
    """Finished rows the database lacked."""
    cut_short: int = 0
    """Calls that began without a row: a row says they were cut short."""
    released: int = 0
    """Budget reservations released: of calls cut short, or not booked before the death."""
    torn: int = 0
    """Lines unreadable (the last one, cut by the kill mid-write)."""


@dataclass
class Records:
    """What a journal's segments hold, by call id."""

    begins: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    torn: int = 0


def read_records(paths: Iterable[Path]) -> Records:
    """The begin records and rows in these segment files; a torn or unreadable line is
    skipped (a kill in the middle of a write leaves at most the last one so)."""
    out = Records()
    for path in paths:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for line in data.split(b"\n"):
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                out.torn += 1
                continue
            if not isinstance(record, dict):
                out.torn += 1
            elif "b" in record:
                out.begins[record["b"]] = record
            elif "id" in record:
                out.rows[record["id"]] = record
            else:
                out.torn += 1
    return out


def logged_ids(db: Any, ids: list[str]) -> set[str]:
    """Which of `ids` proxy_logs holds (run it on a database thread: `Store.run`)."""
    marks = ", ".join("?" * len(ids))
    sql = f"SELECT id FROM proxy_logs WHERE id IN ({marks})"
    return {row[0] for row in db.execute(sql, ids).fetchall()}


def begin_record(
    *,
    call_id: str,
    key_id: int,
    month: str,
    holds: bool,
    provider: str | None,
    requested_model: str | None,
    created_at: str,
    endpoint: str | None,
    method: str,
    stream: bool,
    charge: str | None,
    input_estimate: int,
    user: str | None = None,
    notebook: str | None = None,
    cell: str | None = None,
    team_budget_ids: str | None = None,
) -> dict[str, Any]:
    """A call's begin record: what its row and its reservation's release need if it is cut."""
    return {
        "b": call_id,
        "k": key_id,
        "m": month,
        "h": int(holds),
        "p": provider,
        "rm": requested_model,
        "t": created_at,
        "e": endpoint,
        "me": method,
        "s": int(stream),
        "c": charge,
        "n": input_estimate,
        "u": user,
        "nb": notebook,
        "ce": cell,
        "tb": team_budget_ids,
    }


def cut_short_row(begin: Mapping[str, Any], table: PriceTable | None) -> LogRow:
    """The log row of a call that began and never finished (the server died meanwhile).

    A metered call is booked at an estimate of its input (the provider may have billed it:
    the budget should count it, as for a stream cut before its usage arrived) and no
    output, flagged `usage_estimated`; a free one costs nothing; an unmetered costly one,
    or one whose model has no price, has an unknown cost.
    """
    charge = begin.get("c")
    estimate = int(begin.get("n") or 0)
    cost: float | None = 0.0
    unpriced = estimated = False
    version = None
    tokens = 0
    error = CUT_SHORT_ERROR
    if charge == "metered" and estimate:
        tokens, estimated = estimate, True
        error += _ESTIMATE_NOTE
        cost, unpriced = None, True
        if table is not None:
            version = table.version
            booked = table.price_call(
                Usage(input_tokens=estimate),
                model=begin.get("rm"),
                requested_model=begin.get("rm"),
                provider=begin.get("p"),
                at=_at(begin),
                routed=False,
            )
            cost, unpriced = booked.cost, booked.unpriced
    elif charge == "costly":
        cost, unpriced = None, True
    return {
        "id": begin["b"],
        "key_id": begin.get("k"),
        "provider": begin.get("p"),
        "endpoint": begin.get("e"),
        "method": begin.get("me"),
        "requested_model": begin.get("rm"),
        "model": begin.get("rm"),
        "stream": int(bool(begin.get("s"))),
        "input_tokens": tokens,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_json": None,
        "cost_usd": cost,
        "tool_fees_usd": 0.0,
        "unpriced": int(unpriced),
        "usage_estimated": int(estimated),
        "pricing_version": version,
        "savings_usd": 0.0,
        "latency_ms": None,
        "ttfb_ms": None,
        "status": STATUS_CUT_SHORT,
        "error": error,
        "cache_hit": 0,
        "routing_decision": json.dumps(_NOT_ROUTED),
        "shadow_savings_usd": 0.0,
        "created_at": begin["t"],
        "user": begin.get("u"),
        "notebook": begin.get("nb"),
        "cell": begin.get("ce"),
        "team_budget_ids": begin.get("tb"),
    }


def _at(begin: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(begin["t"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def _create(path: Path) -> int:
    """An O_APPEND descriptor on `path`, created 0600 (the rows say who spent what)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    return os.open(path, flags, 0o600)


def _take(path: Path) -> int | None:
    """The lock of an instance, if its process is gone (its flock is then free)."""
    if fcntl is None:
        try:  # Windows refuses to delete a file another process holds open
            path.unlink(missing_ok=True)
        except OSError:
            return None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError:
        return None
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _instances(directory: Path) -> list[str]:
    """Every instance with a file in `directory`, oldest first."""
    found = set()
    for name in os.listdir(directory):
        m = _SEGMENT.match(name) or _LOCK.match(name)
        if m:
            found.add(m["instance"])
    return sorted(found)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _unlink_lock(path: Path) -> None:
    # Held open by us meanwhile: Windows refuses, and the next start deletes it (no segments).
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
