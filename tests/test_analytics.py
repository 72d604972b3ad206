"""The analytics API: timeseries and breakdown over the usage rollup, JSON and CSV."""

from __future__ import annotations

import csv
import io
import random
import sqlite3
from contextlib import closing
from datetime import date, datetime, time, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
from traitlets import TraitError

from lcm_jupyter.core import analytics
from lcm_jupyter.core.budget import MONEY_SCALE
from lcm_jupyter.core.ids import new_log_id
from lcm_jupyter.server.analytics_handlers import breakdown_items, timeseries_points
from lcm_jupyter.server.app import LCMExtension
from lcm_jupyter.store import rollup
from lcm_jupyter.store.db import connect, open_database
from lcm_jupyter.store.logwriter import LogWriter
from lcm_jupyter.store.migrations import migrations
from lcm_jupyter.store.timeutil import to_iso

from .conftest import rounded_units, stored_rows

UTC = timezone.utc


@pytest.fixture
def lcm_config(lcm_config, request):
    """The extension's config; parametrize indirectly with a timezone name to set one."""
    tz = getattr(request, "param", None)
    return {**lcm_config, "analytics_timezone": tz} if tz else lcm_config


def today() -> date:
    return datetime.now(UTC).date()


def at(day: date, hh: int = 12, mm: int = 0) -> str:
    """A stored timestamp on `day` at hh:mm UTC."""
    moment = datetime.combine(day, time(hh, mm, 7, 123000), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log_row(created_at: str, **fields) -> dict:
    """A proxy_logs row as the pipeline submits it (a priced, successful call by default)."""
    row = {
        "id": new_log_id(),
        "key_id": None,
        "provider": "openai",
        "endpoint": "chat.completions",
        "method": "POST",
        "requested_model": "gpt-4o-mini",
        "model": "gpt-4o-mini",
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.0000270,
        "unpriced": 0,
        "savings_usd": 0.0,
        "latency_ms": 100.0,
        "status": 200,
        "created_at": created_at,
    }
    row.update(fields)
    if row["cost_usd"] is None:
        row["unpriced"] = 1
    return row


@pytest.fixture
def data(write, make_key, jp_asyncio_loop):
    """Rows over several past days: two keys, three models, errors, unpriced calls."""

    async def build():
        alice = await make_key(name="alice")
        bob = await make_key(name="bob")
        t = today()
        rows = [
            # 5 days ago: alice, gpt-4o-mini x2 (one failed), gpt-4o x1
            log_row(at(t - timedelta(5), 1), key_id=alice["id"], latency_ms=100.0),
            log_row(at(t - timedelta(5), 2), key_id=alice["id"], status=500, cost_usd=0.0,
                    input_tokens=0, output_tokens=0, latency_ms=300.0),
            log_row(at(t - timedelta(5), 3), key_id=alice["id"], model="gpt-4o",
                    requested_model="gpt-4o", cost_usd=0.00123, savings_usd=0.0004,
                    latency_ms=250.5),
            # 3 days ago: bob, claude (anthropic) and an unpriced model
            log_row(at(t - timedelta(3), 10), key_id=bob["id"], provider="anthropic",
                    model="claude-3-5-haiku", requested_model="claude-3-5-haiku",
                    cost_usd=0.000456789012345, latency_ms=80.25),
            log_row(at(t - timedelta(3), 11), key_id=bob["id"], model="gpt-99-experimental",
                    requested_model="gpt-99-experimental", cost_usd=None, latency_ms=None),
            # 1 day ago: bob, gpt-4o, a timed-out call without a status
            log_row(at(t - timedelta(1), 23, 59), key_id=bob["id"], model="gpt-4o",
                    cost_usd=0.000999, input_tokens=1000, output_tokens=5),
            log_row(at(t - timedelta(1), 0), key_id=bob["id"], model="gpt-4o", status=None,
                    cost_usd=0.0, input_tokens=0, output_tokens=0, latency_ms=2000.0),
        ]  # fmt: skip
        await write(*rows)
        return {"alice": alice, "bob": bob, "rows": rows}

    return build


def _units(usd):
    """`usd` in money units (None as 0), rounded by SQLite as the rollups round each call."""
    with closing(sqlite3.connect(":memory:")) as db:
        sql = f"SELECT COALESCE(CAST(ROUND(? * {MONEY_SCALE}) AS INTEGER), 0)"
        return db.execute(sql, [usd]).fetchone()[0]


async def test_timeseries_has_every_day_with_zeros(api, data):
    built = await data()
    status, body = await api("GET", "analytics/timeseries", period="7d")
    assert status == 200, body
    assert (body["period"], body["timezone"]) == ("7d", "UTC")
    days = [p["date"] for p in body["points"]]
    assert days == [(today() - timedelta(n)).isoformat() for n in range(6, -1, -1)]
    assert (body["start"], body["end"]) == (days[0], days[-1])
    by_day = {p["date"]: p for p in body["points"]}
    empty = by_day[(today() - timedelta(4)).isoformat()]
    assert empty == {
        "date": empty["date"], "cost_usd": 0.0, "savings_usd": 0.0, "requests": 0,
        "input_tokens": 0, "output_tokens": 0, "unpriced_requests": 0,
    }  # fmt: skip
    five = by_day[(today() - timedelta(5)).isoformat()]
    assert five["requests"] == 3
    assert five["cost_usd"] == (_units(0.000027) + _units(0.00123)) / MONEY_SCALE
    assert five["savings_usd"] == 0.0004
    assert five["input_tokens"] == 200 and five["output_tokens"] == 40
    three = by_day[(today() - timedelta(3)).isoformat()]
    assert (three["requests"], three["unpriced_requests"]) == (2, 1)
    assert sum(p["requests"] for p in body["points"]) == len(built["rows"])

    status, body = await api("GET", "analytics/timeseries", period="90d")
    assert len(body["points"]) == 90 and body["points"][-1]["date"] == today().isoformat()


async def test_timeseries_filters(api, data):
    built = await data()
    alice, bob = built["alice"]["id"], built["bob"]["id"]

    async def total(**params):
        status, body = await api("GET", "analytics/timeseries", period="30d", **params)
        assert status == 200, body
        return sum(p["requests"] for p in body["points"])

    assert await total(key_id=str(alice)) == 3
    assert await total(key_id=str(bob)) == 4
    assert await total(model="gpt-4o") == 3
    assert await total(provider="anthropic") == 1
    assert await total(provider="anthropic", key_id=str(alice)) == 0
    assert await total(model="gpt-4o", key_id=str(bob)) == 2


async def test_breakdown_by_model_orders_by_cost_and_sums_the_rest_into_other(api, data):
    built = await data()
    status, full = await api("GET", "analytics/breakdown", period="30d", by="model", limit="100")
    assert status == 200, full
    names = [i["name"] for i in full["items"]]
    assert names == ["gpt-4o", "claude-3-5-haiku", "gpt-4o-mini", "gpt-99-experimental"]
    costs = [i["cost_usd"] for i in full["items"]]
    assert costs == sorted(costs, reverse=True)

    status, top = await api("GET", "analytics/breakdown", period="30d", by="model", limit="2")
    assert [i["name"] for i in top["items"]] == ["gpt-4o", "claude-3-5-haiku", "other"]
    other = top["items"][-1]
    for field in ("requests", "input_tokens", "output_tokens", "unpriced_requests"):
        assert sum(i[field] for i in top["items"]) == sum(i[field] for i in full["items"])
        assert sum(i[field] for i in full["items"]) == sum(r[field] for r in _fields(built))
    total_units = sum(_units(r["cost_usd"]) for r in built["rows"])
    assert sum(_units(i["cost_usd"]) for i in top["items"]) == total_units
    # other = gpt-4o-mini (2 calls, 100 and 300 ms) + the unpriced one (no latency)
    assert (other["requests"], other["unpriced_requests"]) == (3, 1)
    assert other["avg_latency_ms"] == 200.0
    assert other["error_rate"] == pytest.approx(1 / 3)

    gpt4o = full["items"][0]
    # 250.5 ms, 100 ms, 2000 ms; the call without a status counts as an error
    assert gpt4o["avg_latency_ms"] == round((250.5 + 100 + 2000) / 3, 3)
    assert gpt4o["error_rate"] == pytest.approx(1 / 3)
    assert full["items"][-1]["cost_usd"] == 0.0 and full["items"][-1]["avg_latency_ms"] is None


def _fields(built):
    return [
        {
            "requests": 1,
            "input_tokens": r["input_tokens"],
            "output_tokens": r["output_tokens"],
            "unpriced_requests": int(r["cost_usd"] is None),
        }
        for r in built["rows"]
    ]


async def test_breakdown_by_key_and_provider(api, data):
    built = await data()
    status, body = await api("GET", "analytics/breakdown", period="7d", by="key")
    assert status == 200, body
    items = {i["name"]: i for i in body["items"]}
    assert set(items) == {"alice", "bob"}
    assert items["alice"]["key_id"] == built["alice"]["id"]
    assert items["bob"]["key_id"] == built["bob"]["id"]
    assert (items["alice"]["requests"], items["bob"]["requests"]) == (3, 4)
    assert items["alice"]["error_rate"] == pytest.approx(1 / 3)

    status, body = await api("GET", "analytics/breakdown", period="7d", by="provider")
    assert {i["name"]: i["requests"] for i in body["items"]} == {"openai": 6, "anthropic": 1}
    status, body = await api(
        "GET", "analytics/breakdown", period="7d", by="model", key_id=str(built["alice"]["id"])
    )
    assert {i["name"] for i in body["items"]} == {"gpt-4o", "gpt-4o-mini"}
    status, body = await api("GET", "analytics/breakdown", period="7d", provider="anthropic")
    assert [i["name"] for i in body["items"]] == ["claude-3-5-haiku"]


async def test_csv_output_parses_back_to_the_same_numbers(api, data, jp_fetch):
    await data()
    for path, params, key in [
        ("timeseries", {"period": "7d"}, "points"),
        ("breakdown", {"period": "7d", "by": "key"}, "items"),
    ]:
        _, body = await api("GET", f"analytics/{path}", **params)
        resp = await jp_fetch("lcm", "api", "analytics", path, params={**params, "format": "csv"})
        assert resp.headers["Content-Type"].startswith("text/csv")
        parsed = list(csv.DictReader(io.StringIO(resp.body.decode())))
        assert len(parsed) == len(body[key])
        for record, row in zip(body[key], parsed, strict=True):
            assert list(row) == list(record)
            for field, value in record.items():
                if value is None:
                    assert row[field] == ""
                elif isinstance(value, str):
                    assert row[field] == value
                else:
                    assert float(row[field]) == value, field


def _raw_calls(config) -> list[dict]:
    """Every logged call straight from proxy_logs, its money rounded to units here."""
    sql = (
        'SELECT created_at, key_id, provider, model, "user", notebook, cost_usd, savings_usd, '
        "input_tokens, output_tokens, latency_ms, status FROM proxy_logs"
    )
    rows = stored_rows(config, sql)
    for row in rows:
        row["key_id"] = -1 if row["key_id"] is None else row["key_id"]
        # No user or notebook, and an empty one, are one group: "(none)".
        row["user"], row["notebook"] = row["user"] or "", row["notebook"] or ""
        row["cost"] = rounded_units(row["cost_usd"], MONEY_SCALE)
        row["savings"] = rounded_units(row["savings_usd"], MONEY_SCALE)
        row["latency"] = rounded_units(row["latency_ms"], 1000)
        row["error"] = int(row["status"] is None or row["status"] >= 400)
        row["unpriced"] = int(row["cost_usd"] is None)
        row["moment"] = datetime.fromisoformat(row["created_at"].replace("Z", "+00:00"))
    return rows


def _in_period(calls, period: analytics.Period, **filters):
    """(local date, call) of the calls in `period` that the filters keep, by Python's tz rules."""
    for call in calls:
        day = call["moment"].astimezone(period.tz).date()
        if period.first <= day <= period.last and all(call[f] == v for f, v in filters.items()):
            yield day, call


def _expected_points(calls, period: analytics.Period, **filters) -> list[dict]:
    days = {d: [] for d in period.days}
    for day, call in _in_period(calls, period, **filters):
        days[day].append(call)
    return [
        {
            "date": day.isoformat(),
            "cost_usd": sum(c["cost"] or 0 for c in got) / MONEY_SCALE,
            "savings_usd": sum(c["savings"] for c in got) / MONEY_SCALE,
            "requests": len(got),
            "input_tokens": sum(c["input_tokens"] for c in got),
            "output_tokens": sum(c["output_tokens"] for c in got),
            "unpriced_requests": sum(c["unpriced"] for c in got),
        }
        for day, got in days.items()
    ]


def _expected_items(calls, by: str, period: analytics.Period, **filters) -> dict[str, dict]:
    groups: dict = {}
    for _, call in _in_period(calls, period, **filters):
        groups.setdefault(call["key_id" if by == "key" else by], []).append(call)
    items = {}
    for name, got in groups.items():
        latencies = [c["latency"] for c in got if c["latency"] is not None]
        if by == "key":
            name = "(no key)" if name == rollup.NO_KEY else f"key {name}"
        elif not name:
            name = "(none)"
        items[name] = {
            "requests": len(got),
            "cost_usd": sum(c["cost"] or 0 for c in got) / MONEY_SCALE,
            "savings_usd": sum(c["savings"] for c in got) / MONEY_SCALE,
            "input_tokens": sum(c["input_tokens"] for c in got),
            "output_tokens": sum(c["output_tokens"] for c in got),
            "unpriced_requests": sum(c["unpriced"] for c in got),
            "error_rate": sum(c["error"] for c in got) / len(got),
            "avg_latency_ms": (
                round(sum(latencies) / len(latencies) / 1000, 3) if latencies else None
            ),
        }
    return items


def _awkward_rows(
    first: date, days: int, midnights: list[datetime], seed: int = 1, *, team: bool = True
) -> list[dict]:
    """Calls at random instants over `days` days from `first` (UTC), plus a call just before
    and at each instant in `midnights`; awkward costs, NULL keys, errors, missing latencies;
    with `team`, users and notebooks (none, empty, non-ASCII) as a team's calls have them."""
    rnd = random.Random(seed)
    base = datetime.combine(first, time(), UTC)
    moments = [base + timedelta(seconds=rnd.randrange(days * 86400)) for _ in range(1500)]
    for midnight in midnights:
        moments += [midnight - timedelta(milliseconds=1), midnight]
    rows = []
    for i, moment in enumerate(sorted(moments)):
        rows.append(
            log_row(
                to_iso(moment),
                key_id=i % 3 or None,
                provider=("openai", "anthropic", "google")[i % 3],
                model=f"model-{i % 7}",
                cost_usd=None if i % 11 == 0 else (i * 0.0000123456789) / 7,
                savings_usd=(i % 5) * 0.00000333333,
                input_tokens=i,
                output_tokens=i // 2,
                latency_ms=None if i % 13 == 0 else 10 + i / 3,
                status=(200, 200, 429, 500, None)[i % 5],
                **(
                    {
                        "user": (None, "alice", "bob", "")[i % 4],
                        "notebook": (None, "a.ipynb", "dir/b ü.ipynb")[i % 3],
                    }
                    if team
                    else {}
                ),
            )
        )
    return rows


FILTERS = [
    {},
    {"key_id": 1},
    {"model": "model-3"},
    {"provider": "google"},
    {"user": "alice"},
    {"notebook": "dir/b ü.ipynb"},
]
COMBINED = [
    {"key_id": 2, "model": "model-5"},
    {"key_id": 1, "provider": "anthropic"},
    {"provider": "openai", "model": "model-3"},
    {"user": "bob", "provider": "google"},
    {"key_id": 1, "notebook": "a.ipynb"},
]
ITEM_KEYS = (
    "requests", "cost_usd", "savings_usd", "input_tokens", "output_tokens",
    "unpriced_requests", "error_rate", "avg_latency_ms",
)  # fmt: skip


def _local_midnights(tz, first: date, days: int) -> list[datetime]:
    return [datetime.combine(first + timedelta(n), time(), tz) for n in range(days + 1)]


def _cases(spans, tz):
    """(path, period, params) of the timeseries and breakdowns to check for each span."""
    for start, end in spans:
        period = analytics.Period("custom", start, end, tz)
        dates = {"start": start.isoformat(), "end": end.isoformat()}
        for filters in FILTERS + COMBINED:
            yield "timeseries", period, {**dates, **filters}
        for by in analytics.BREAKDOWN_BY:
            for filters in [{}, {"key_id": 1}, COMBINED[0], {"user": "alice"}, COMBINED[-1]]:
                yield "breakdown", period, {**dates, "by": by, "limit": 50, **filters}


def _filters(params: dict) -> dict:
    return {k: v for k, v in params.items() if k in (*rollup.FILTERS, *rollup.ATTRIBUTION)}


def _expected(calls, path: str, period: analytics.Period, params: dict):
    if path == "timeseries":
        return _expected_points(calls, period, **_filters(params))
    return _expected_items(calls, params["by"], period, **_filters(params))


def _comparable(path: str, answer: list[dict]):
    if path == "timeseries":
        return answer
    return {i["name"]: {k: i[k] for k in ITEM_KEYS} for i in answer}


def _spans(t: date) -> list[tuple[date, date]]:
    """Long (whole UTC days inside, partial ones at the ends), one day, two days, all."""
    return [(t - timedelta(35), t - timedelta(3)), (t - timedelta(7), t - timedelta(7)),
            (t - timedelta(9), t - timedelta(8)), (t - timedelta(45), t)]  # fmt: skip


@pytest.mark.parametrize(
    "lcm_config", ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York"], indirect=True
)
async def test_rollups_and_raw_logs_agree_exactly(api, write, lcm_config):
    tz = analytics.load_timezone(lcm_config["analytics_timezone"])
    t = datetime.now(tz).date()
    # Calls over 40 days up to now, with some just before and at each local midnight.
    first = t - timedelta(39)
    rows = _awkward_rows(first, 40, _local_midnights(tz, first, 39))
    await write(*rows)
    calls = _raw_calls(lcm_config)
    assert len(calls) == len(rows)
    for path, period, params in _cases(_spans(t), tz):
        status, body = await api("GET", f"analytics/{path}", **params)
        assert status == 200, body
        answer = body["points" if path == "timeseries" else "items"]
        assert _comparable(path, answer) == _expected(calls, path, period, params), params
    # One local day more at either end holds every call: none is lost or counted twice.
    whole = {"start": (first - timedelta(1)).isoformat(), "end": (t + timedelta(1)).isoformat()}
    status, body = await api("GET", "analytics/timeseries", **whole)
    assert sum(p["requests"] for p in body["points"]) == len(rows)


async def test_real_sdk_calls_show_up(api, make_key, base_url, logs):
    record = await make_key(name="sdk")
    oai = openai.AsyncOpenAI(
        base_url=base_url + "lcm/proxy/openai/v1", api_key=record["key"], max_retries=0
    )
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o", "gpt-99-experimental"):
        await oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    # Asked at once: the answer waits for the queued rows, as GET logs does.
    status, body = await api("GET", "analytics/timeseries", period="7d")
    assert status == 200, body
    rows = await logs()
    point = body["points"][-1]
    assert point["date"] == today().isoformat()
    assert (point["requests"], point["unpriced_requests"]) == (4, 1)
    assert point["input_tokens"] == sum(r["input_tokens"] for r in rows)
    assert point["cost_usd"] == sum(_units(r["cost_usd"]) for r in rows) / MONEY_SCALE
    assert point["cost_usd"] > 0

    _, body = await api("GET", "analytics/breakdown", period="7d", by="key")
    (item,) = body["items"]
    assert (item["name"], item["key_id"], item["requests"]) == ("sdk", record["id"], 4)
    assert item["error_rate"] == 0.0 and item["avg_latency_ms"] > 0
    _, body = await api("GET", "analytics/breakdown", period="7d", by="model")
    assert {i["name"]: i["requests"] for i in body["items"]}["gpt-4o-mini"] == 2


async def _local_days(api, write, utc_times):
    await write(*(log_row(ts) for ts in utc_times))
    status, body = await api("GET", "analytics/timeseries", period="7d")
    assert status == 200, body
    return body, {p["date"]: p["requests"] for p in body["points"] if p["requests"]}


@pytest.mark.parametrize("lcm_config", ["Asia/Seoul"], indirect=True)
async def test_timezone_moves_a_late_utc_call_to_the_next_local_day(api, write):
    day = today() - timedelta(3)
    body, counts = await _local_days(api, write, [at(day, 23, 30), at(day, 14, 30)])
    assert body["timezone"] == "Asia/Seoul"
    assert body["end"] == datetime.now(analytics.load_timezone("Asia/Seoul")).date().isoformat()
    # 14:30 UTC is 23:30 in Seoul, the same day; 23:30 UTC is 08:30 the next day.
    assert counts == {day.isoformat(): 1, (day + timedelta(1)).isoformat(): 1}


@pytest.mark.parametrize("lcm_config", ["Asia/Kolkata"], indirect=True)
async def test_half_hour_timezone_splits_days_inside_a_utc_hour(api, write):
    day = today() - timedelta(3)
    # India is UTC+5:30: local midnight is 18:30 UTC, in the middle of an hour.
    times = [at(day, 18, 20), at(day, 18, 40), at(day, 23, 30)]
    body, counts = await _local_days(api, write, times)
    assert body["timezone"] == "Asia/Kolkata"
    assert counts == {day.isoformat(): 1, (day + timedelta(1)).isoformat(): 2}


def test_analytics_timezone_trait_env_and_validation(monkeypatch):
    assert LCMExtension().lcm_settings().analytics_timezone == "UTC"
    monkeypatch.setenv("LCM_ANALYTICS_TIMEZONE", "Asia/Seoul")
    assert LCMExtension().lcm_settings().analytics_timezone == "Asia/Seoul"
    with pytest.raises(TraitError, match="Mars/Olympus"):
        LCMExtension(analytics_timezone="Mars/Olympus")
    monkeypatch.setenv("LCM_ANALYTICS_TIMEZONE", "Not/AZone")
    with pytest.raises(TraitError):
        LCMExtension().lcm_settings()


@pytest.mark.parametrize(
    "path, params, param",
    [
        ("timeseries", {"period": "2w"}, "period"),
        ("timeseries", {"start": "2026-02-10", "end": "2026-02-01"}, "start"),
        ("timeseries", {"start": "2025-01-01", "end": "2026-01-02"}, "end"),
        ("timeseries", {"start": "2026-02-30", "end": "2026-03-01"}, "start"),
        ("timeseries", {"start": "2026-02-01"}, "end"),
        ("timeseries", {"period": "7d", "start": "2026-02-01", "end": "2026-02-02"}, "period"),
        ("timeseries", {"key_id": "abc"}, "key_id"),
        ("timeseries", {"format": "xml"}, "format"),
        ("breakdown", {"by": "colour"}, "by"),
        ("breakdown", {"limit": "0"}, "limit"),
        ("breakdown", {"period": "1y"}, "period"),
    ],
)
async def test_bad_parameters_are_400(api, path, params, param):
    status, body = await api("GET", f"analytics/{path}", **params)
    assert status == 400, body
    assert body["error"]["param"] == param


async def test_366_days_is_the_most(api):
    status, body = await api("GET", "analytics/timeseries", start="2025-01-01", end="2026-01-01")
    assert status == 200 and len(body["points"]) == 366


async def test_analytics_refuses_requests_without_the_jupyter_token(base_url):
    async with httpx.AsyncClient() as http:
        for path in ("timeseries", "breakdown", "timeseries?format=csv"):
            resp = await http.get(f"{base_url}lcm/api/analytics/{path}")
            assert resp.status_code == 403, path


ZONES = ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "Australia/Lord_Howe"]


def test_upgraded_database_and_its_writer_agree_with_raw_logs(tmp_path):
    # Days around New York's spring-forward day (23 h) and Lord Howe's half-hour fall-back.
    first = date(2026, 3, 1)
    old = _awkward_rows(first, 40, [], seed=2, team=False)  # logged before 0012
    new = _awkward_rows(first, 40, _local_midnights(ZoneInfo("Asia/Kathmandu"), first, 39))
    path = tmp_path / "old.db"
    db = connect(path)
    migrations.apply(db, stop_before="0004_usage_rollup")
    db.table("proxy_logs").insert_all(old)
    # The database as the release with usage_rollup alone left it, then upgraded.
    migrations.apply(db, stop_before="0005_usage_summaries")
    assert db.execute("SELECT SUM(requests) FROM usage_rollup").fetchone()[0] == len(old)
    assert "usage_rollup_day" not in db.table_names()
    migrations.apply(db)  # 0005 fills the new tables from usage_rollup
    db.conn.close()
    writer = LogWriter(path, batch_size=97)  # batches cross bucket and day boundaries
    for row in new:
        writer.submit(row)
    writer.close()

    db = open_database(path)
    calls = _raw_calls({"db_path": path})
    assert len(calls) == len(old) + len(new)
    spans = [
        (date(2026, 3, 3), date(2026, 4, 7)),  # whole UTC days inside, partial ones at the ends
        (date(2026, 3, 8), date(2026, 3, 8)),  # New York's 23-hour day
        (date(2026, 4, 5), date(2026, 4, 5)),  # Lord Howe's 24.5-hour day
        (date(2026, 3, 7), date(2026, 3, 8)),
    ]
    for zone in ZONES:
        for path_, period, params in _cases(spans, ZoneInfo(zone)):
            filters = _filters(params)
            if path_ == "timeseries":
                answer = timeseries_points(db, period, filters)
            else:
                answer = breakdown_items(db, params["by"], params["limit"], period, filters)
            assert _comparable(path_, answer) == _expected(calls, path_, period, params), params


def test_period_shaping():
    seoul = analytics.load_timezone("Asia/Seoul")
    now = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # already 2 March in Seoul
    period = analytics.resolve_period("7d", None, None, seoul, now=now)
    assert (period.first, period.last) == (date(2026, 2, 24), date(2026, 3, 2))
    bounds = period.bounds()
    assert len(bounds) == 8 and all(b - a == 86400 for a, b in pairwise(bounds))
    assert bounds[0] == int(datetime(2026, 2, 23, 15, tzinfo=UTC).timestamp())
    # A day of daylight saving change has 23 hours, and the days still tile.
    ny = analytics.load_timezone("America/New_York")
    spring = analytics.Period("custom", date(2026, 3, 7), date(2026, 3, 9), ny).bounds()
    assert [b - a for a, b in pairwise(spring)] == [86400, 82800, 86400]
    groups = [(f"m{n}", analytics.Totals(requests=1, cost_units=n)) for n in range(5)]
    top = analytics.top_with_other(groups, 2)
    assert [n for n, _ in top] == ["m4", "m3", "other"]
    assert top[-1][1].cost_units == 3 and top[-1][1].requests == 3
    assert analytics.top_with_other(groups, 5) == sorted(groups, key=lambda g: -g[1].cost_units)
