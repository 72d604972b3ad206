"""The store's contract, on SQLite and on PostgreSQL alike.

Every test runs once per engine (the `target` fixture: a SQLite path or a fresh PostgreSQL
database's URL) and checks exact values: what the store's functions return is what the
server answers, and the two engines must not differ in any of it. The rollup test compares
every figure with the same sums taken in Python from the raw rows.
"""

from __future__ import annotations

import asyncio
import calendar
import functools
import itertools
import json
import multiprocessing
import random
import threading
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from lcm_jupyter.core.analytics import Totals
from lcm_jupyter.core.budget import MONEY_SCALE, month_bounds
from lcm_jupyter.core.keys import hash_key
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.core.logfilter import LogFilter
from lcm_jupyter.core.pricing import ModelPrice
from lcm_jupyter.core.secretbox import SecretBox, SecretMismatch
from lcm_jupyter.store import (
    alerts,
    billed,
    feedback,
    logs,
    pricing,
    rollup,
    secret,
    spend,
    team,
)
from lcm_jupyter.store import keys as key_table
from lcm_jupyter.store.counters import RESERVATION_TTL_SECONDS
from lcm_jupyter.store.counters_db import DatabaseCounters
from lcm_jupyter.store.db import connect, open_database
from lcm_jupyter.store.logwriter import LogWriter
from lcm_jupyter.store.store import Store
from lcm_jupyter.store.timeutil import to_iso

from .conftest import rounded_units

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def target(request, tmp_path):
    """A store target: a SQLite path, or the URL of a fresh, empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "lcm.sqlite3")
    return request.getfixturevalue("pg_url")


def _target(kind: str, request, tmp_path) -> str:
    """`target` for a test that marks one engine's variant on its own."""
    return str(tmp_path / "lcm.sqlite3") if kind == "sqlite" else request.getfixturevalue("pg_url")


@pytest.fixture
def db(target):
    """A migrated connection to `target`."""
    database = open_database(target)
    yield database
    database.close()


@pytest.fixture
def box():
    return SecretBox(Fernet.generate_key())


def write(target: str, rows: list[dict], *, batch_size: int = 500) -> None:
    """Write `rows` with the log writer (as the server does), all of them, now."""
    writer = LogWriter(target, batch_size=batch_size, interval=60.0)
    writer.start()
    try:
        for row in rows:
            writer.submit(dict(row))
        assert writer.flush(timeout=30)
    finally:
        writer.close()
    assert (writer.written, writer.failed) == (len(rows), 0)


def log_row(n: int, **values) -> dict:
    """A complete proxy_logs row (every column of store/logrow.LogRow), with `values` set."""
    row = {
        "id": f"{n:032x}",
        "key_id": 1,
        "provider": "openai",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "requested_model": "gpt-4o",
        "model": "gpt-4o",
        "stream": 0,
        "input_tokens": 10,
        "output_tokens": 5,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_json": None,
        "cost_usd": 0.001,
        "tool_fees_usd": 0.0,
        "unpriced": 0,
        "usage_estimated": 0,
        "pricing_version": "2026-01",
        "savings_usd": 0.0,
        "latency_ms": 100.0,
        "ttfb_ms": 50.0,
        "status": 200,
        "error": None,
        "cache_hit": 0,
        "routing_decision": None,
        "shadow_savings_usd": 0.0,
        "created_at": "2026-04-01T00:00:00.000Z",
        "user": None,
        "notebook": None,
        "cell": None,
        "team_budget_ids": None,
    }
    assert set(values) <= set(row)
    row.update(values)
    return row


# --- keys -----------------------------------------------------------------------------------


def test_keys_create_find_list_update_revoke(db, box):
    fields = validate_key_fields(
        {
            "name": "research",
            "provider_api_keys": {
                "openai": "sk-openai-0123456789abcdef",
                "anthropic": "sk-ant-api03-abcdefghijkl",
            },
            "monthly_budget_usd": 12.5,
            "budget_alert_thresholds": [50, 100],
            "rate_limit_rpm": 30,
            "routing_mode": "auto",
        },
        partial=False,
    )
    record, plain = key_table.create_key(db, box, fields)
    assert type(record.id) is int and record.id >= 1
    assert plain.startswith(record.key_prefix) and len(record.key_prefix) < len(plain)
    assert record.provider_api_keys == {
        "openai": "sk-openai-0123456789abcdef",
        "anthropic": "sk-ant-api03-abcdefghijkl",
    }
    public = record.public()
    assert public["provider_api_keys"] == {"openai": "sk-o...cdef", "anthropic": "sk-a...ijkl"}
    assert (public["name"], public["monthly_budget_usd"], public["rate_limit_rpm"]) == (
        "research",
        12.5,
        30,
    )
    assert public["budget_alerts_enabled"] is True
    assert public["budget_alert_thresholds"] == [50, 100]
    assert public["routing_mode"] == "auto" and public["revoked"] is False
    (stored,) = db.query("SELECT provider_api_keys, key_hash FROM proxy_keys")
    assert "sk-openai" not in stored["provider_api_keys"] and plain not in stored["key_hash"]

    assert key_table.find_key_by_hash(db, box, hash_key(plain)) == record
    assert key_table.find_key_by_hash(db, box, hash_key(plain + "x")) is None

    second, plain2 = key_table.create_key(
        db, box, validate_key_fields({"name": "other"}, partial=False)
    )
    assert second.id != record.id and plain2 != plain
    assert second.provider_api_keys == {} and second.monthly_budget_usd is None
    assert [k.id for k in key_table.list_keys(db, box)] == [record.id, second.id]

    # Provider keys merge per provider: one added, one replaced, the third kept.
    updated = key_table.update_key(
        db,
        box,
        record.id,
        validate_key_fields(
            {
                "provider_api_keys": {
                    "google": "AIzaSyA-very-secret-key",
                    "openai": "sk-new-9876543210",
                },
                "monthly_budget_usd": 0.1 + 0.2,
                "budget_alerts_enabled": False,
            },
            partial=True,
        ),
    )
    assert updated.provider_api_keys == {
        "openai": "sk-new-9876543210",
        "anthropic": "sk-ant-api03-abcdefghijkl",
        "google": "AIzaSyA-very-secret-key",
    }
    assert updated.monthly_budget_usd == 0.30000000000000004
    assert updated.budget_alerts_enabled is False
    assert updated.name == "research" and updated.rate_limit_rpm == 30  # untouched
    assert updated.created_at == record.created_at and updated.updated_at >= record.updated_at
    assert key_table.get_key(db, box, record.id) == updated
    assert key_table.update_key(db, box, 10**6, {"name": "x"}) is None

    revoked = key_table.revoke_key(db, box, record.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert key_table.revoke_key(db, box, record.id).revoked_at == revoked.revoked_at  # once
    assert key_table.revoke_key(db, box, 10**6) is None
    assert [k.id for k in key_table.list_keys(db, box, include_revoked=False)] == [second.id]
    assert [k.revoked for k in key_table.list_keys(db, box)] == [True, False]
    # Still found by hash (the pipeline tells a revoked key from an unknown one).
    assert key_table.find_key_by_hash(db, box, hash_key(plain)).revoked


# --- the call log ---------------------------------------------------------------------------

_BASE = datetime(2026, 4, 10, 12, 0, tzinfo=timezone.utc)
_STATUSES = [200, 201, 304, 404, 429, 500, 503, None]
_MODELS = [("gpt-4o", "gpt-4o"), ("claude-x", "claude-y"), (None, "claude-x"), (None, None)]
_PROVIDERS = ["openai", "anthropic", "google", None]


def _log_rows() -> list[dict]:
    rng = random.Random(20260410)
    rows = []
    for i in range(48):
        status = _STATUSES[i % 8]
        model, requested = _MODELS[i % 4 if i % 7 else 1]
        rows.append(
            log_row(
                i,
                # Not in time order, and three calls per instant: ties are ordered by id.
                id=f"{rng.getrandbits(128):032x}",
                key_id=[1, 2, None][i % 3],
                provider=_PROVIDERS[i % 5 % 4],
                requested_model=requested,
                model=model,
                stream=i % 2,
                input_tokens=2**40 + i,
                output_tokens=i * 3,
                reasoning_tokens=i % 4,
                usage_json=None
                if i % 4 == 0
                else json.dumps({"prompt_tokens": i, "detail": {"xs": [1, 2.5, None, True]}}),
                cost_usd=[0.1 + 0.2, 1e-10 * i, None, 0.12345678905, 1 / 3][i % 5],
                tool_fees_usd=[0.0, 0.01][i % 2],
                unpriced=int(i % 5 == 2),
                usage_estimated=int(i % 6 == 1),
                savings_usd=[0.0, -0.25, 1e-10][i % 3],
                latency_ms=[123.456, None, 0.0005][i % 3],
                ttfb_ms=[None, 0.1 + 0.7][i % 2],
                status=status,
                error=None
                if status is not None and status < 500
                else "upstream: ümlaut ✓ 'quoted' %s ?",
                cache_hit=int(i % 6 == 0),
                routing_decision=json.dumps({"was_routed": bool(i % 2), "intent": "code"})
                if i % 3 == 0
                else None,
                shadow_savings_usd=[0.0, 2.5e-7][i % 2],
                created_at=to_iso(_BASE + timedelta(minutes=(i * 7) % 16)),
                user=["alice", None, "bob"][i % 3],
                notebook=[None, "work/ä b.ipynb", "x.ipynb"][i % 3],
                cell=[None, "3", "a1b2-cell"][i % 3],
                team_budget_ids=[None, ",1,", ",1,2,"][i % 3],
            )
        )
    return rows


def _public(row: dict) -> dict:
    """A row as logs.get_log answers it: JSON parsed, flags as bools, feedback empty."""
    out = dict(row, feedback=None, feedback_comment=None)
    for name in ("stream", "unpriced", "cache_hit", "usage_estimated"):
        out[name] = bool(out[name])
    out["routing_decision"] = json.loads(row["routing_decision"] or "null")
    out["usage"] = json.loads(out.pop("usage_json") or "null")
    del out["team_budget_ids"]  # the counters' record, not the API's
    return out


def _newest_first(rows: list[dict]) -> list[str]:
    return [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)]


def _model_of(row: dict) -> str:
    return row["model"] or row["requested_model"] or ""


def test_logged_rows_read_back_exactly(target, db):
    rows = _log_rows()
    write(target, rows, batch_size=16)
    for row in rows:
        got = logs.get_log(db, row["id"])
        want = _public(row)
        assert got == want
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
    assert logs.get_log(db, "no-such-id") is None
    listed = logs.list_logs(db, LogFilter(), limit=1000)
    assert [r["id"] for r in listed] == _newest_first(rows)
    assert listed == [
        _public(r) for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    ]


def test_log_pages_follow_each_other(target, db):
    rows = _log_rows()
    write(target, rows)
    for where in (LogFilter(), LogFilter(key_id=1), LogFilter(status="error")):
        pages, before = [], None
        while True:
            page = logs.list_logs(db, where, limit=5, before=before)
            if not page:
                break
            assert len(page) <= 5
            pages.append([r["id"] for r in page])
            before = page[-1]["id"]
        expected = _newest_first([r for r in rows if _keeps(where, r)])
        assert [i for p in pages for i in p] == expected
        assert all(len(p) == 5 for p in pages[:-1]) and len(pages) == -(-len(expected) // 5)
    assert logs.list_logs(db, LogFilter(), before="no-such-id") is None


def _keeps(where: LogFilter, row: dict) -> bool:
    """What a LogFilter keeps, in Python."""
    status = row["status"]
    statuses = {
        None: True,
        "ok": status is not None and status < 400,
        "error": status is None or status >= 400,
        "cache_hit": bool(row["cache_hit"]),
        "2xx": status is not None and 200 <= status < 300,
        "3xx": status is not None and 300 <= status < 400,
        "4xx": status is not None and 400 <= status < 500,
        "5xx": status is not None and 500 <= status < 600,
        "429": status == 429,
        "404": status == 404,
    }
    return (
        (where.key_id is None or row["key_id"] == where.key_id)
        and (where.model is None or _model_of(row) == where.model)
        and (where.provider is None or row["provider"] == where.provider)
        and statuses[where.status]
        and (where.since is None or row["created_at"] >= to_iso(where.since))
        and (where.until is None or row["created_at"] < to_iso(where.until))
    )


_FILTERS = [
    LogFilter(key_id=1),
    LogFilter(key_id=2, model="gpt-4o"),
    LogFilter(model="claude-x"),
    LogFilter(provider="anthropic"),
    LogFilter(provider="google", key_id=2),
    *(LogFilter(status=s) for s in ("ok", "error", "cache_hit", "2xx", "3xx", "4xx", "5xx", "429")),
    LogFilter(since=_BASE + timedelta(minutes=5)),
    LogFilter(until=_BASE + timedelta(minutes=7)),
    LogFilter(since=_BASE + timedelta(minutes=4), until=_BASE + timedelta(minutes=11)),
    LogFilter(key_id=1, status="error", since=_BASE + timedelta(minutes=2)),
]


def test_log_filters_keep_the_same_calls(target, db):
    rows = _log_rows()
    write(target, rows)
    for where in _FILTERS:
        expected = _newest_first([r for r in rows if _keeps(where, r)])
        assert 0 < len(expected) < len(rows), where  # the filter is a real one
        got = [r["id"] for r in logs.list_logs(db, where, limit=1000)]
        assert got == expected, where
    # The model asked for counts only when none answered; an unknown key has no calls.
    assert any(r["requested_model"] == "claude-y" for r in rows)
    assert logs.list_logs(db, LogFilter(model="claude-y")) == []
    assert logs.list_logs(db, LogFilter(status="404", key_id=10**6), limit=10) == []


def test_a_bad_row_does_not_take_its_batch_with_it(target, db):
    rows = [
        log_row(1),
        log_row(2, created_at=None),  # NOT NULL
        log_row(3),
        log_row(4, input_tokens=10**30),  # beyond a 64-bit integer
        log_row(5),
    ]
    writer = LogWriter(target, interval=60.0)
    writer.start()
    for row in rows:
        writer.submit(row)
    assert writer.flush(timeout=30)
    writer.submit(log_row(6))  # and it is still writing
    writer.close()
    assert (writer.written, writer.failed) == (4, 2)
    kept = [log_row(n)["id"] for n in (6, 5, 3, 1)]
    assert [r["id"] for r in logs.list_logs(db, LogFilter())] == kept
    (day,) = rollup.by_day(db, [_DAY_OF_ROWS, _DAY_OF_ROWS + 86400])
    assert (day.requests, day.input_tokens) == (4, 40)


_DAY_OF_ROWS = calendar.timegm((2026, 4, 1, 0, 0, 0))  # log_row's created_at


@pytest.mark.parametrize("kind", ENGINES)
def test_a_row_whose_time_is_unreadable_is_written_in_no_rollup(kind, request, tmp_path):
    target = _target(kind, request, tmp_path)
    rows = [
        log_row(1, created_at="2026-04-01T12:00:00.000Z"),
        log_row(2, created_at="not a time"),
        log_row(3, created_at="2026-04-01T25:00:00.000Z"),
    ]
    writer = LogWriter(target, interval=60.0)
    for row in rows:
        writer.submit(row)
    writer.close()
    db = open_database(target)
    try:
        assert (writer.written, writer.failed) == (3, 0)
        assert {r["id"] for r in logs.list_logs(db, LogFilter())} == {r["id"] for r in rows}
        day = rollup.by_day(db, [_DAY_OF_ROWS, _DAY_OF_ROWS + 86400])
        assert [t.requests for t in day] == [1]
    finally:
        db.close()


# --- rollups and spend, to the unit -----------------------------------------------------------

_COSTS = [
    0.1, 0.2, 0.1 + 0.2, 0.3, 1e-10, 3 * 1e-10, 5e-11, 1.5e-10, 2.5e-10, 0.12345678905,
    0.99999999995, 1.00000000005, 0.00000000045, 1 / 3, 2 / 3, 123.45678901235, 0.0, None,
    7e-10, 0.7 + 0.1,
]  # fmt: skip
_SAVINGS = [0.0, -0.1, -5e-11, 1.5e-10, -1 / 3, 0.2, -(0.1 + 0.2), -2.5e-10, 0.12345678905]
_LATENCIES = [None, 0.0005, 0.0015, 1.0005, 250.25, 1234.5675, 0.1 + 0.2, 12.3455, 2.5e-4]
_ROLLUP_START = calendar.timegm((2026, 3, 30, 0, 0, 0))  # four days, across a month's end
_DAY = rollup.DAY_SECONDS


def _rollup_rows() -> list[dict]:
    rng = random.Random(42)
    rows = []
    for i in range(360):
        if i % 40 == 0:  # on a day's edges
            at = _ROLLUP_START + (i // 40 % 4) * _DAY - (i // 40 % 2) * 0.001
        elif i % 9 == 0:  # on a bucket's edge
            at = _ROLLUP_START + rng.randrange(4 * _DAY // 900) * 900
        else:
            at = _ROLLUP_START + rng.randrange(4 * _DAY * 1000) / 1000
        at = max(at, _ROLLUP_START - 0.001)
        cost = rng.choice(_COSTS)
        if rng.random() < 0.3:
            cost = rng.randrange(1, 10**4) * 1e-10  # steps of 1e-10, never exact in binary
        model, requested = rng.choice(_MODELS)
        status = rng.choice([200, 200, 200, 201, 400, 429, 500, None])
        rows.append(
            log_row(
                i,
                key_id=rng.choice([1, 2, 3, None]),
                provider=rng.choice(_PROVIDERS),
                model=model,
                requested_model=requested,
                input_tokens=rng.choice([0, 1, rng.randrange(10**6), 2**33]),
                output_tokens=rng.randrange(5000),
                cost_usd=cost,
                unpriced=int(cost is None or rng.random() < 0.05),
                savings_usd=rng.choice(_SAVINGS),
                latency_ms=rng.choice(_LATENCIES),
                shadow_savings_usd=rng.choice([0.0, 0.0, 1e-10, 0.1 + 0.2, 2.5e-7]),
                status=status,
                error=None if status is not None and status < 400 else "failed",
                created_at=to_iso(datetime.fromtimestamp(at, timezone.utc)),
                # A team's attribution, from the row's number (the draws above stay as they were).
                user=[None, "alice", "bob", "ada"][i * 7 % 4],
                notebook=[None, "a.ipynb", "dir/b ü.ipynb"][i % 3],
                team_budget_ids=[None, ",1,", ",1,2,", ",2,", None][i % 5],
            )
        )
    return rows


def _units(value: float | None, scale: int) -> int:
    """value * scale as the log counts it (conftest.rounded_units), None as 0."""
    return rounded_units(value, scale) or 0


def _bucket(row: dict) -> int:
    """The start of the row's 15 minutes of UTC, in epoch seconds."""
    return _bucket_of(row["created_at"])


@functools.cache
def _bucket_of(stamp: str) -> int:
    moment = datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(moment.timetuple()) // 900 * 900


def _figures(row: dict) -> Totals:
    status, cost = row["status"], row["cost_usd"]
    return Totals(
        requests=1,
        cost_units=_units(cost, MONEY_SCALE),
        savings_units=_units(row["savings_usd"], MONEY_SCALE),
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        latency_us_sum=_units(row["latency_ms"], 1000),
        latency_count=int(row["latency_ms"] is not None),
        errors=int(status is None or status >= 400),
        unpriced_requests=int(cost is None or row["unpriced"] != 0),
    )


def _group(row: dict, by: str):
    return {
        "model": _model_of(row),
        "provider": row["provider"] or "",
        "key": -1 if row["key_id"] is None else row["key_id"],
        "user": row["user"] or "",
        "notebook": row["notebook"] or "",
    }[by]


def _matches(row: dict, given: dict) -> bool:
    return all(_group(row, by) == value for by, value in given.items())


def _by_day(rows: list[dict], bounds: list[int], given: dict) -> list[Totals]:
    out = [Totals() for _ in bounds[1:]]
    for row in rows:
        bucket = _bucket(row)
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            if lo <= bucket < hi and _matches(row, given):
                out[i].add(_figures(row))
    return out


def _by_group(rows: list[dict], by: str, start: int, end: int, given: dict) -> dict:
    out: dict = defaultdict(Totals)
    for row in rows:
        if start <= _bucket(row) < end and _matches(row, given):
            out[_group(row, by)].add(_figures(row))
    return dict(out)


_ARGS = {"key": "key_id", "provider": "provider", "model": "model", "user": "user"}
_ARGS["notebook"] = "notebook"
_GIVEN = [
    {},
    {"key": 2},
    {"provider": "anthropic"},
    {"model": "claude-x"},
    {"provider": ""},
    {"key": 1, "model": "gpt-4o"},
    {"key": 3, "provider": "google", "model": ""},
    {"user": "alice"},
    {"notebook": ""},
    {"user": "bob", "model": "gpt-4o"},
    {"key": 2, "notebook": "dir/b ü.ipynb"},
    {"user": "ada", "notebook": "a.ipynb", "provider": "openai"},
]


def test_rollups_and_spend_are_exact(target, db):
    rows = _rollup_rows()
    write(target, rows, batch_size=64)  # several batches: the rollups add up across them
    assert sum(_figures(r).cost_units for r in rows) != 0

    utc_days = [_ROLLUP_START + d * _DAY for d in range(-1, 6)]
    kolkata = [b - 19800 for b in utc_days]  # +5:30
    kathmandu = [b - 20700 for b in utc_days]  # +5:45
    for bounds in (utc_days, kolkata, kathmandu):
        for given in _GIVEN:
            args = {_ARGS[k]: v for k, v in given.items()}
            got = rollup.by_day(db, bounds, **args)
            want = _by_day(rows, bounds, given)
            assert got == want, (bounds[0], given)
    # A day of the figures by hand: nothing is missed.
    assert sum(t.requests for t in rollup.by_day(db, utc_days)) == len(rows)

    periods = [
        (_ROLLUP_START + 3 * 3600 + 900, _ROLLUP_START + 3 * _DAY + 5 * 3600 + 1800),
        (_ROLLUP_START + _DAY, _ROLLUP_START + 3 * _DAY),
        (_ROLLUP_START + 2 * _DAY + 3600, _ROLLUP_START + 2 * _DAY + 7 * 3600 + 2700),
        (_ROLLUP_START - _DAY, _ROLLUP_START + 5 * _DAY),
    ]
    for start, end in periods:
        for by in ("model", "provider", "key", "user", "notebook"):
            for given in _GIVEN:
                args = {_ARGS[k]: v for k, v in given.items()}
                got = dict(rollup.by_group(db, by, start, end, **args))
                assert got == _by_group(rows, by, start, end, given), (start, end, by, given)

    for month in ("2026-03", "2026-04"):
        start, end = month_bounds(month)
        want: dict = defaultdict(int)
        for row in rows:
            if row["key_id"] is None or row["cost_usd"] is None:
                continue
            if start <= row["created_at"] < end:
                want[row["key_id"]] += _units(row["cost_usd"], MONEY_SCALE)
        assert spend.month_spend_units(db, start=start, end=end) == dict(want)
        assert spend.month_spend_units(db, start=start, end=end, key_id=2) == {2: want[2]}
        users: dict = defaultdict(int)
        budgets: dict = defaultdict(int)
        for row in rows:
            if row["cost_usd"] is not None and start <= row["created_at"] < end:
                if row["user"] is not None:
                    users[row["user"]] += _units(row["cost_usd"], MONEY_SCALE)
                for budget_id in filter(None, (row["team_budget_ids"] or "").split(",")):
                    budgets[int(budget_id)] += _units(row["cost_usd"], MONEY_SCALE)
        assert spend.user_spend_units(db, start=start, end=end) == dict(users)
        assert spend.user_spend_units(db, start=start, end=end, users=["bob"]) == {
            "bob": users["bob"]
        }
        assert team.budget_spend_units(db, start=start, end=end) == dict(budgets)

    for since in (_ROLLUP_START - _DAY, _ROLLUP_START + 2 * _DAY + 3600):
        got = logs.unpriced_models(db, since)
        assert [(r["last_seen"], r["model"]) for r in got] == sorted(
            ((r["last_seen"], r["model"]) for r in got), reverse=True
        )
        key = lambda r: (r["last_seen"], r["model"], r["provider"] or "")  # noqa: E731
        assert sorted(got, key=key) == sorted(_unpriced(rows, since), key=key)


def _unpriced(rows: list[dict], since: int) -> list[dict]:
    """logs.unpriced_models in Python: per model and provider, the unpriced calls from the
    UTC day of `since` on, and the start of the latest 15 minutes of them."""
    first_day = since - since % _DAY
    found: dict = {}
    for row in rows:
        bucket = _bucket(row)
        if bucket < first_day or not _figures(row).unpriced_requests or not _model_of(row):
            continue
        group = found.setdefault((_model_of(row), row["provider"] or ""), [0, 0])
        group[0] += 1
        group[1] = max(group[1], bucket)
    return [
        {
            "model": model,
            "provider": provider or None,
            "requests": requests,
            "last_seen": to_iso(datetime.fromtimestamp(last, timezone.utc)),
        }
        for (model, provider), (requests, last) in found.items()
    ]


def test_shadow_savings_per_key(target, db, box):
    names = {}
    for name in ("alpha", "beta"):
        record, _ = key_table.create_key(
            db, box, validate_key_fields({"name": name}, partial=False)
        )
        names[record.id] = name
    rows = [
        log_row(
            n,
            key_id=[*names, None][n % 3],
            shadow_savings_usd=[0.1 + 0.2, 2.5e-7, 1e-10][n % 3] if n % 4 else 0.0,
            created_at=to_iso(_BASE + timedelta(minutes=n)),
        )
        for n in range(30)
    ]
    write(target, rows)
    start, end = to_iso(_BASE + timedelta(minutes=2)), to_iso(_BASE + timedelta(minutes=25))
    want: dict = {}
    for row in rows:
        if row["shadow_savings_usd"] > 0 and start <= row["created_at"] < end:
            calls, saving = want.get(row["key_id"], (0, 0.0))
            want[row["key_id"]] = (calls + 1, saving + row["shadow_savings_usd"])
    got = logs.shadow_savings(db, start, end)
    assert [r["key_id"] for r in got] == sorted(want, key=lambda k: want[k][1], reverse=True)
    for r in got:
        assert (r["name"], r["calls"]) == (names.get(r["key_id"]), want[r["key_id"]][0])
        assert r["saving_usd"] == pytest.approx(want[r["key_id"]][1], rel=1e-12)
    (only,) = logs.shadow_savings(db, start, end, key_id=min(names))
    assert (only["key_id"], only["calls"]) == (min(names), want[min(names)][0])
    assert rollup.key_names(db, [*names, rollup.NO_KEY, 10**6]) == names


def test_the_rounding_reference_is_sqlites_round():
    """The reference the rollup test checks against rounds as SQLite's ROUND does: half away
    from zero, the half added in double arithmetic."""
    import sqlite3

    values = [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999999999999994, 1e-10 * 5 * MONEY_SCALE, *_COSTS]
    values += [-v for v in _SAVINGS] + [v * 1000 for v in _LATENCIES if v is not None]
    conn = sqlite3.connect(":memory:")
    try:
        for value in values:
            (rounded,) = conn.execute("SELECT CAST(ROUND(?) AS INTEGER)", [value]).fetchone()
            assert _units(value, 1) == (rounded or 0), value
    finally:
        conn.close()
    assert [_units(x, 1) for x in (0.5, 2.5, -2.5, 0.4, -0.6)] == [1, 3, -3, 0, -1]
    assert _units(None, MONEY_SCALE) == 0 and _units(0.1 + 0.2, MONEY_SCALE) == 3_000_000_000


# --- alerts, prices, feedback, billed-once, the secret --------------------------------------


def _alert(db, key_id: int, threshold: int, month: str = "2026-04"):
    return alerts.insert_alert(
        db,
        key_id=key_id,
        month=month,
        threshold=threshold,
        severity="warning",
        message=f"{threshold}%",
    )


def test_alerts_dedup_list_and_mark_read(db):
    first = _alert(db, 1, 80)
    assert type(first) is int
    assert _alert(db, 1, 80) is None  # the same key, month and threshold
    second = _alert(db, 1, 90)
    third = _alert(db, 2, 80)
    fourth = _alert(db, 1, 80, month="2026-05")
    assert len({first, second, third, fourth}) == 4
    listed = alerts.list_alerts(db)
    assert [a["id"] for a in listed] == sorted([first, second, third, fourth], reverse=True)
    assert [(a["key_id"], a["month"], a["threshold"], a["message"], a["read"]) for a in listed] == [
        (1, "2026-05", 80, "80%", False),
        (2, "2026-04", 80, "80%", False),
        (1, "2026-04", 90, "90%", False),
        (1, "2026-04", 80, "80%", False),
    ]
    assert [a["id"] for a in alerts.list_alerts(db, key_id=2)] == [third]
    assert [a["id"] for a in alerts.list_alerts(db, limit=2)] == [fourth, third]

    assert alerts.mark_read(db, [first, third, 10**6]) == 2
    assert alerts.mark_read(db, [first]) == 0  # already read
    assert [a["id"] for a in alerts.list_alerts(db, unread=True)] == [fourth, second]
    assert {a["id"]: a["read"] for a in alerts.list_alerts(db)} == {
        first: True,
        second: False,
        third: True,
        fourth: False,
    }
    assert alerts.mark_read(db, None) == 2
    assert alerts.mark_read(db, None) == 0
    assert alerts.list_alerts(db, unread=True) == []


@pytest.mark.parametrize("kind", ENGINES)
def test_marking_no_alerts_read_changes_nothing(kind, request, tmp_path):
    """`POST lcm/api/alerts/read {"ids": []}` reaches mark_read with an empty list."""
    db = open_database(_target(kind, request, tmp_path))
    request.addfinalizer(db.close)
    ids = [_alert(db, 1, 80), _alert(db, 1, 90)]
    assert alerts.mark_read(db, []) == 0
    assert [a["id"] for a in alerts.list_alerts(db, unread=True)] == sorted(ids, reverse=True)


def _price(model: str, input_price: str, output_price: str) -> ModelPrice:
    return ModelPrice.from_dict(
        {"model": model, "provider": "openai", "input": input_price, "output": output_price}
    )


def test_price_overrides_upsert_load_and_delete(db):
    assert pricing.load_overrides(db) == []
    pricing.save_overrides(db, [_price("zeta-1", "1.25", "10"), _price("alpha-1", "0.1", "0.4")])
    pricing.save_overrides(db, [_price("zeta-1", "2.5", "12.75")])  # changed: the new one wins
    assert pricing.load_overrides(db) == [
        _price("alpha-1", "0.1", "0.4"),
        _price("zeta-1", "2.5", "12.75"),
    ]
    (count,) = db.query("SELECT COUNT(*) AS n FROM model_pricing")
    assert count["n"] == 2
    assert pricing.delete_override(db, "zeta-1") is True
    assert pricing.delete_override(db, "zeta-1") is False
    assert pricing.load_overrides(db) == [_price("alpha-1", "0.1", "0.4")]


def test_feedback_and_the_ratings_of_routed_calls(target, db):
    def decision(routed, source, dest, intent="code"):
        return json.dumps(
            {
                "mode": "auto",
                "intent": intent,
                "was_routed": routed,
                "from_model": source,
                "to_model": dest,
            }
        )

    rows = [
        log_row(1, routing_decision=decision(True, "gpt-4o", "gpt-4o-mini")),
        log_row(2, routing_decision=decision(True, "claude-opus", "claude-haiku", intent=None)),
        log_row(3, routing_decision=decision(False, "gpt-4o", "gpt-4o")),  # not routed
        log_row(4, routing_decision=None),  # no decision
        log_row(5, routing_decision=decision(True, "gpt-4o", "gpt-4o-nano")),  # not rated
        log_row(6, routing_decision="not json {"),  # rated below, by hand
    ]
    write(target, rows)
    ids = [r["id"] for r in rows]
    assert feedback.set_feedback(db, ids[0], 1, "good") == (
        None,
        {"id": ids[0], "feedback": 1, "routing_decision": json.loads(rows[0]["routing_decision"])},
    )
    previous, _ = feedback.set_feedback(db, ids[0], -1, None)  # replaced
    assert previous == 1
    assert feedback.set_feedback(db, ids[1], 1, "ok") is not None
    assert feedback.set_feedback(db, ids[2], -1, "meh") is not None
    assert feedback.set_feedback(db, ids[3], 1, None) == (
        None,
        {"id": ids[3], "feedback": 1, "routing_decision": None},
    )
    db.execute("UPDATE proxy_logs SET feedback = 1 WHERE id = ?", [ids[5]])
    assert feedback.set_feedback(db, "no-such-id", 1, None) is None
    assert sorted(feedback.routed_ratings(db)) == [
        ("claude-opus", "claude-haiku", None, 1),
        ("gpt-4o", "gpt-4o-mini", "code", -1),
    ]
    row = logs.get_log(db, ids[1])
    assert (row["feedback"], row["feedback_comment"]) == (1, "ok")
    row = logs.get_log(db, ids[0])
    assert (row["feedback"], row["feedback_comment"]) == (-1, None)


def test_billed_once_claims(target, db):
    assert billed.claim(db, "resp_1", "log-a", 1) is None
    assert billed.claim(db, "resp_1", "log-b", 2) == "log-a"
    assert billed.claim(db, "resp_1", "log-a", 1) == "log-a"
    assert billed.claim(db, "batch_1", "log-c", None) is None
    # Servers claiming one reference at once: one wins, every other is told who.
    barrier = threading.Barrier(6)
    results: dict[int, str | None] = {}

    def claim(n: int) -> None:
        mine = connect(target)
        try:
            barrier.wait(timeout=30)
            results[n] = billed.claim(mine, "resp_race", f"log-{n}", n)
        finally:
            mine.close()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, got in results.items() if got is None]
    assert len(results) == 6 and len(winners) == 1
    assert {got for got in results.values() if got is not None} == {f"log-{winners[0]}"}


def test_the_secret_is_recorded_once_and_checked(target, db, box):
    where = {"db_path": target, "secret_file": Path("secret.key")}
    secret.check_secret(db, box, **where)
    assert [tuple(r.values()) for r in db.query("SELECT name, value FROM lcm_meta")] == [
        ("secret_check", box.check_value)
    ]
    secret.check_secret(db, box, **where)  # the same secret passes
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(SecretMismatch, match="another secret key"):
        secret.check_secret(db, other, **where)
    (count,) = db.query("SELECT COUNT(*) AS n FROM lcm_meta")
    assert count["n"] == 1


def test_a_database_from_before_the_check_is_judged_by_its_keys(target, db, box):
    fields = validate_key_fields(
        {"name": "k", "provider_api_keys": {"openai": "sk-0123456789abcdef"}}, partial=False
    )
    key_table.create_key(db, box, fields)
    where = {"db_path": target, "secret_file": Path("secret.key")}
    with pytest.raises(SecretMismatch):
        secret.check_secret(db, SecretBox(Fernet.generate_key()), **where)
    assert list(db.query("SELECT name FROM lcm_meta")) == []  # nothing recorded for it
    secret.check_secret(db, box, **where)
    assert [r["value"] for r in db.query("SELECT value FROM lcm_meta")] == [box.check_value]


# --- the shared counters --------------------------------------------------------------------

MONTH = "2026-04"


class Clock:
    def __init__(self) -> None:
        self.now = calendar.timegm((2026, 4, 15, 12, 0, 0))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(target):
    """Stores on `target`, each what one server holds; closed after the test."""
    made: list[Store] = []

    def make(threads: int = 3) -> Store:
        made.append(Store(target, threads=threads))
        return made[-1]

    yield make
    for store in made:
        store.close()


async def test_database_counters_admit_settle_release(target, stores):
    clock = Clock()
    store = stores()
    counters = DatabaseCounters(store, clock=clock)

    async def admit(call_id, reserve, *, budget=1000, soft=False, key_id=7):
        got = await counters.admit(
            key_id=key_id,
            call_id=call_id,
            rpm=None,
            month=MONTH,
            budget=budget,
            reserve=reserve,
            soft=soft,
        )
        return (got.allowed, got.reason, got.spent, got.reserved)

    async def budget(key_id=7):
        state = await counters.budget(key_id=key_id, month=MONTH)
        return (state.spent, state.reserved)

    assert await admit("c1", 400) == (True, None, 0, 400)
    assert await admit("c2", 400) == (True, None, 0, 800)
    assert await admit("c3", 300) == (False, "budget", 0, 800)
    assert await admit("c1", 500) == (True, None, 0, 900)  # a repeated call id replaces its own
    settled = await counters.settle(key_id=7, call_id="c1", month=MONTH, cost=250)
    assert (settled.spent, settled.reserved) == (250, 400)
    await counters.release(key_id=7, call_id="c2", month=MONTH)
    assert await budget() == (250, 0)
    assert await admit("c3", 750) == (True, None, 250, 750)  # exactly the budget
    assert await admit("c4", 1) == (False, "budget", 250, 750)
    assert (await admit("c5", 0, budget=250, soft=True))[:2] == (False, "budget")
    assert await admit("c5", 10**6, budget=251, soft=True) == (True, None, 250, 750)
    assert await budget(key_id=8) == (0, 0)  # another key: nothing

    # The settled call's row is written: the log counts it, the hold no longer does.
    row = log_row(
        0, id="c1", key_id=7, cost_usd=250 / MONEY_SCALE, created_at=f"{MONTH}-15T11:59:00.000Z"
    )
    write(target, [row])
    assert await budget() == (250, 750)
    holds = await store.run(lambda db: list(db.query("SELECT call_id, settled FROM shared_holds")))
    assert holds == [{"call_id": "c3", "settled": 0}]
    clock.now += RESERVATION_TTL_SECONDS + 1  # c3 never settles: its hold expires
    assert await budget() == (250, 0)

    # The rate window.
    async def rated(call_id: str):
        return await counters.admit(
            key_id=9, call_id=call_id, rpm=2, month=MONTH, budget=None, reserve=0
        )

    got = [await rated(f"r{i}") for i in range(3)]
    assert [(g.allowed, g.reason, g.rate.remaining, g.rate.reset_seconds) for g in got] == [
        (True, None, 1, 60.0),
        (True, None, 0, 60.0),
        (False, "rate_limit", 0, 60.0),
    ]
    clock.now += 30
    late = await rated("r3")
    assert (late.allowed, late.rate.reset_seconds) == (False, 30.0)
    clock.now += 30
    assert (await rated("r3")).allowed
    assert await counters.recent_admissions(key_id=9) == [("r3", 0.0)]
    added = await counters.add_admissions(
        key_id=9, admissions=[("x", 10.0), ("x", 10.0), ("old", 61.0)]
    )
    assert added == 1
    assert await counters.recent_admissions(key_id=9) == [("x", 10.0), ("r3", 0.0)]


async def test_two_servers_never_admit_beyond_one_budget(target, stores):
    clock = Clock()
    first, second = (DatabaseCounters(stores(threads=8), clock=clock) for _ in range(2))

    async def admit(n: int):
        return await (first, second)[n % 2].admit(
            key_id=1, call_id=f"c{n}", rpm=None, month=MONTH, budget=1000, reserve=70
        )

    results = await asyncio.gather(*(admit(n) for n in range(96)))
    assert sum(r.allowed for r in results) == 14  # 14 * 70 = 980; a 15th would be 1050
    assert {r.reason for r in results if not r.allowed} == {"budget"}
    for counters in (first, second):
        state = await counters.budget(key_id=1, month=MONTH)
        assert (state.spent, state.reserved) == (0, 980)

    # Settled on one server, seen by the other; rate limits are shared too.
    admitted = [n for n, r in enumerate(results) if r.allowed]
    await asyncio.gather(
        *(
            (first, second)[n % 2].settle(key_id=1, call_id=f"c{n}", month=MONTH, cost=50)
            for n in admitted
        )
    )
    state = await second.budget(key_id=1, month=MONTH)
    assert (state.spent, state.reserved) == (700, 0)
    rated = await asyncio.gather(
        *(
            (first, second)[n % 2].admit(
                key_id=2, call_id=f"r{n}", rpm=5, month=MONTH, budget=None, reserve=0
            )
            for n in range(16)
        )
    )
    assert sum(r.allowed for r in rated) == 5


# --- migrations -----------------------------------------------------------------------------


_SQLITE_MIGRATIONS = [
    "0001_initial", "0002_feedback_index", "0003_usage_estimated", "0004_usage_rollup",
    "0005_usage_summaries", "0006_priced_components", "0007_shadow_routing",
    "0008_shared_counters", "0009_log_filters", "0010_meta", "0011_servers", "0012_team",
]  # fmt: skip
_PG_MIGRATIONS = ["0010_schema", "0011_servers", "0012_team"]


def _bookkeeping(db) -> list[str]:
    table = "lcm_migrations" if db.dialect == "postgresql" else "_sqlite_migrations"
    return [r["name"] for r in db.query(f"SELECT name FROM {table} ORDER BY name")]


def _tables(db) -> list[str]:
    sql = (
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"
        if db.dialect == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'table'"
    )
    return sorted(r["name"] for r in db.query(sql))


def test_opening_a_migrated_database_again_changes_nothing(target):
    first = open_database(target)
    applied, tables = _bookkeeping(first), _tables(first)
    first.execute(
        "INSERT INTO lcm_meta (name, value) VALUES (?, ?)", ["kept", "yes"]
    )  # data survives
    first.close()
    assert applied == (_PG_MIGRATIONS if first.dialect == "postgresql" else _SQLITE_MIGRATIONS)
    second = open_database(target)
    try:
        assert (_bookkeeping(second), _tables(second)) == (applied, tables)
        assert [r["value"] for r in second.query("SELECT value FROM lcm_meta")] == ["yes"]
    finally:
        second.close()


def _open_when_all_are_ready(target: str, barrier) -> None:
    """A "server" starting: wait for the others, then open (and migrate) the database."""
    barrier.wait(timeout=60)
    open_database(target).close()


@pytest.mark.parametrize("kind", ENGINES)
def test_servers_starting_at_once_migrate_a_blank_database_once(kind, request, tmp_path):
    target = _target(kind, request, tmp_path)
    # Forked, not spawned: a spawned child would spend ~1.5 s of CPU importing the store.
    fork = multiprocessing.get_context("fork")
    threads, processes = 6, 3
    barrier = fork.Barrier(threads + processes)
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            _open_when_all_are_ready(target, barrier)
        except BaseException as exc:  # reported below
            errors.append(exc)

    children = [
        fork.Process(target=_open_when_all_are_ready, args=(target, barrier))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    workers = [threading.Thread(target=in_thread) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for child in children:
        child.join(60)
    assert errors == []
    assert [child.exitcode for child in children] == [0] * processes
    db = open_database(target)
    try:
        applied = _bookkeeping(db)
        assert applied == (_PG_MIGRATIONS if kind == "postgresql" else _SQLITE_MIGRATIONS)
        assert {"proxy_logs", "usage_rollup_dim", "lcm_meta"} <= set(_tables(db))
    finally:
        db.close()
