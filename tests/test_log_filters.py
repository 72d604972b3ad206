"""The log listing's filters: the query arguments checked (core/logfilter.py), and the store's
listing by them (store/logs.py) on a real SQLite file: what it keeps, its paging, its indexes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from lcm_jupyter.core.errors import BadRequest
from lcm_jupyter.core.logfilter import LogFilter, parse_log_filter
from lcm_jupyter.store import logs
from lcm_jupyter.store.db import open_database
from lcm_jupyter.store.logs import list_logs
from lcm_jupyter.store.timeutil import to_iso

UTC = timezone.utc
SEOUL = ZoneInfo("Asia/Seoul")


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the arguments -------------------------------------------------------------------------------


def test_arguments_become_a_filter():
    assert parse_log_filter({}, UTC) == LogFilter()
    assert parse_log_filter({"model": "", "status": None}, UTC) == LogFilter()  # empty: absent
    where = parse_log_filter(
        {"model": " gpt-4o ", "provider": "anthropic", "status": "4XX"}, UTC, key_id=3
    )
    assert where == LogFilter(key_id=3, model="gpt-4o", provider="anthropic", status="4xx")
    assert (where.status_class(), where.status_code()) == (4, None)
    code = parse_log_filter({"status": "429"}, UTC)
    assert (code.status_class(), code.status_code()) == (None, 429)
    assert parse_log_filter({"status": "cache_hit"}, UTC).status_code() is None


def test_days_are_local_days_of_the_analytics_timezone_and_end_is_included():
    where = parse_log_filter({"start": "2025-01-02", "end": "2025-01-03"}, SEOUL)
    # Seoul is UTC+9: its 2 January starts at 15:00 UTC on the 1st; the 3rd is included.
    assert (where.since, where.until) == (_utc(2025, 1, 1, 15), _utc(2025, 1, 3, 15))
    assert parse_log_filter({"end": "2025-01-03"}, UTC) == LogFilter(until=_utc(2025, 1, 4))
    assert parse_log_filter({"start": "2025-01-03"}, UTC) == LogFilter(since=_utc(2025, 1, 3))


def test_instants_carry_their_offset():
    where = parse_log_filter(
        {"since": "2025-01-02T09:30:00+09:00", "until": "2025-01-02T01:00:00Z"}, SEOUL
    )
    assert (where.since, where.until) == (_utc(2025, 1, 2, 0, 30), _utc(2025, 1, 2, 1))


@pytest.mark.parametrize(
    ("args", "param", "words"),
    [
        ({"status": "failed"}, "status", "ok, error, cache_hit"),
        ({"status": "600"}, "status", "HTTP status"),
        ({"status": "6xx"}, "status", "HTTP status"),
        ({"provider": "mistral"}, "provider", "openai, anthropic, google"),
        ({"model": "m" * 201}, "model", "1 to 200"),
        ({"model": "   "}, "model", "1 to 200"),
        ({"start": "2025-13-01"}, "start", "calendar date"),
        ({"end": "yesterday"}, "end", "YYYY-MM-DD"),
        ({"start": "2025-02-02", "end": "2025-02-01"}, "start", "after end"),
        ({"since": "2025-01-02T09:30:00"}, "since", "UTC offset"),
        ({"until": "soon"}, "until", "ISO 8601"),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-02T00:00:00Z"}, "since", "before"),
        ({"start": "2025-01-02", "since": "2025-01-02T00:00:00Z"}, "since", "not both"),
        ({"end": "2025-01-02", "until": "2025-01-03T00:00:00Z"}, "until", "not both"),
    ],
)
def test_a_bad_argument_is_a_400_naming_it(args, param, words):
    with pytest.raises(BadRequest) as caught:
        parse_log_filter(args, UTC)
    assert caught.value.status == 400 and caught.value.param == param
    assert words in caught.value.message


# -- the listing ---------------------------------------------------------------------------------


START = _utc(2026, 3, 1)


def _row(n: int, minutes: float, **fields) -> dict:
    row = {
        "id": f"{n:032x}",
        "key_id": 1,
        "provider": "openai",
        "endpoint": "chat.completions",
        "requested_model": "gpt-4o-mini",
        "model": "gpt-4o-mini",
        "cost_usd": 0.0001,
        "status": 200,
        "cache_hit": 0,
        "created_at": to_iso(START + timedelta(minutes=minutes)),
    }
    row.update(fields)
    return row


@pytest.fixture
def db(tmp_path):
    db = open_database(tmp_path / "lcm.sqlite3")
    rows = [
        _row(1, 0),
        _row(2, 10, model="gpt-4o", requested_model="gpt-4o"),
        _row(3, 20, status=429, cost_usd=0.0, error="rate limited"),
        _row(4, 30, provider="anthropic", model="claude-haiku-4-5", requested_model="claude"),
        _row(5, 40, cache_hit=1, cost_usd=0.0),
        _row(6, 50, status=None, cost_usd=0.0, key_id=2),
        _row(7, 60, status=503, cost_usd=0.0),
        # No model answered: counted under the model asked for, as the rollups count it.
        _row(8, 70, model=None, requested_model="gpt-4o", status=400, cost_usd=0.0),
        _row(9, 24 * 60, key_id=2),  # the next day
    ]
    db.table("proxy_logs").insert_all(rows)
    yield db
    db.conn.close()


def _ids(rows) -> list[int]:
    return [int(r["id"], 16) for r in rows]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (LogFilter(), [9, 8, 7, 6, 5, 4, 3, 2, 1]),
        (LogFilter(key_id=2), [9, 6]),
        (LogFilter(model="gpt-4o"), [8, 2]),
        (LogFilter(provider="anthropic"), [4]),
        (LogFilter(status="ok"), [9, 5, 4, 2, 1]),
        (LogFilter(status="error"), [8, 7, 6, 3]),  # no answer (6) is an error too
        (LogFilter(status="cache_hit"), [5]),
        (LogFilter(status="4xx"), [8, 3]),
        (LogFilter(status="5xx"), [7]),
        (LogFilter(status="429"), [3]),
        (LogFilter(since=START + timedelta(minutes=20)), [9, 8, 7, 6, 5, 4, 3]),
        (LogFilter(until=START + timedelta(minutes=20)), [2, 1]),  # until is excluded
        (LogFilter(since=START, until=START + timedelta(1), status="error", key_id=1), [8, 7, 3]),
        (LogFilter(model="nothing"), []),
    ],
)
def test_the_listing_keeps_what_the_filter_says(db, where, expected):
    assert _ids(list_logs(db, where)) == expected


def test_pages_walk_every_filtered_call_once_ties_included(db):
    # Three calls in the same millisecond, across a page boundary: ordered by id among them.
    same = to_iso(START + timedelta(minutes=45))
    db.table("proxy_logs").insert_all([_row(n, 0, created_at=same) for n in (10, 11, 12)])
    for where in (LogFilter(), LogFilter(status="ok"), LogFilter(key_id=1, provider="openai")):
        everything = list_logs(db, where, limit=100)
        seen, before = [], None
        while True:
            page = list_logs(db, where, limit=2, before=before)
            seen += page
            if len(page) < 2:
                break
            before = page[-1]["id"]
        assert _ids(seen) == _ids(everything), where
    assert _ids(list_logs(db, LogFilter(), limit=8))[4:] == [12, 11, 10, 5]
    assert list_logs(db, LogFilter(), before="no-such-call") is None


@pytest.mark.parametrize(
    "where",
    [
        LogFilter(),
        LogFilter(key_id=1),
        LogFilter(model="gpt-4o"),
        LogFilter(provider="google"),
        LogFilter(status="error"),
        LogFilter(status="429"),
        LogFilter(status="cache_hit"),
        LogFilter(since=START, until=START + timedelta(1)),
        LogFilter(model="gpt-4o", since=START),
    ],
)
def test_every_filter_reads_an_index_newest_first_without_sorting_the_log(db, where):
    # An equality on a column without an index (a rare model, a status): SQLite would sort
    # every matching call for one page unless the query leads it to an index in time order.
    terms, params = logs._filter_sql(where, "sqlite")
    sql = "SELECT * FROM proxy_logs" + (f" WHERE {' AND '.join(terms)}" if terms else "")
    sql += " ORDER BY created_at DESC, id DESC LIMIT 21"
    steps = [r["detail"] for r in db.query("EXPLAIN QUERY PLAN " + sql, params)]
    assert steps[0].startswith(("SCAN proxy_logs USING", "SEARCH proxy_logs USING")), steps
    assert "USE TEMP B-TREE FOR ORDER BY" not in steps, steps  # at most ties are sorted
    if where.model:
        assert "idx_proxy_logs_model_created" in steps[0], steps
    elif where.key_id is not None:
        assert "idx_proxy_logs_key_created" in steps[0], steps
    else:
        assert "idx_proxy_logs_created" in steps[0], steps
