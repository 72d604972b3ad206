"""Seeded history: days of made-up but realistic calls, stored as the proxy stores them.

For the dashboard notebook, the browser test and demos: a database that looks lived in.
Several keys call models of all three providers, on working days more than at weekends;
routing decisions come from the product's own router (`core.routing.decide`) on real
prompts, costs and savings from the price table the pipeline uses (`PriceTable.price`), and
rows go through the product's `LogWriter`, so the usage rollup the analytics read is
kept in the same transactions. A few calls fail, a few are cache hits, some routed
ones are rated. Budgets are set afterwards at a share of each key's month-to-date
spend, so the gauges look the same whatever the day of the month, and the alerts
those shares cross are stored as the alert service words them.

The same `seed` and `now` give the same rows (proxy keys themselves are random).

    from lcm_jupyter.testing.history import seed_history
    history = seed_history("lcm.sqlite3", secret_key_file="secret.key", days=30)
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..core.budget import alert_message, crossed_thresholds, to_units, to_usd
from ..core.catalog import default_table
from ..core.keyspec import validate_key_fields
from ..core.pricing import PriceTable
from ..core.providers import PROVIDERS, classify
from ..core.routing import RoutingDecision, decide
from ..core.secretbox import SecretBox, load_or_create_key
from ..core.usage import Usage
from ..store.alerts import insert_alert
from ..store.db import open_database
from ..store.keys import create_key, update_key
from ..store.logrow import LogRow
from ..store.logwriter import LogWriter
from ..store.timeutil import to_iso

__all__ = ["History", "SeededKey", "seed_history"]


ALERT_THRESHOLDS = (50, 80, 90, 100)


@dataclass(frozen=True, slots=True)
class _KeyPlan:
    """A key to create and the traffic it makes."""

    name: str
    provider: str
    routing_mode: str
    routing_rules: tuple[dict[str, str], ...]
    models: tuple[tuple[str, float], ...]
    """Requested models and their shares of the key's calls."""
    calls_per_day: float
    """On a working day, at the end of the period (traffic grows towards it)."""
    budget_share: float | None
    """Month-to-date spend as a share of the budget set afterwards; None: no budget."""
    cache_ttl_seconds: int = 0
    rate_limit_rpm: int | None = None


PLANS = (
    _KeyPlan(
        name="data-science",
        provider="auto",
        routing_mode="auto",
        routing_rules=(),
        models=(
            ("gpt-4o", 0.35),
            ("claude-sonnet-4-5", 0.25),
            ("gemini-2.5-pro", 0.15),
            ("gpt-4o-mini", 0.15),
            ("text-embedding-3-small", 0.10),
        ),
        calls_per_day=120,
        budget_share=0.86,
    ),
    _KeyPlan(
        name="support-bot",
        provider="openai",
        routing_mode="manual",
        routing_rules=(
            {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "condition": "simple-only"},
        ),
        models=(("gpt-4o", 0.7), ("gpt-4o-mini", 0.3)),
        calls_per_day=150,
        budget_share=0.55,
        cache_ttl_seconds=3600,
        rate_limit_rpm=600,
    ),
    _KeyPlan(
        name="research",
        provider="anthropic",
        routing_mode="manual",
        routing_rules=(
            {
                "from_model": "claude-sonnet-4-5",
                "to_model": "claude-haiku-4-5",
                "condition": "short-only",
            },
        ),
        models=(("claude-sonnet-4-5", 0.65), ("claude-haiku-4-5", 0.35)),
        calls_per_day=60,
        budget_share=0.94,
    ),
    _KeyPlan(
        name="batch-eval",
        provider="google",
        routing_mode="off",
        routing_rules=(),
        models=(("gemini-2.5-flash", 1.0),),
        calls_per_day=90,
        budget_share=None,
    ),
)

# Prompts the router judges: simple ones get routed (where a key routes), the rest not.
PROMPTS = (
    "What is the capital of Australia?",
    "Translate 'the meeting moved to Thursday' into German.",
    "Summarize this support ticket in one sentence: the customer cannot reset a password.",
    "Extract the invoice number and total from: Invoice INV-2291, total due $1,240.00.",
    "Is 2027 a leap year?",
    "Write a Python function that merges overlapping intervals, with unit tests.",
    "Compare three approaches to caching embeddings for retrieval and recommend one, "
    "weighing cost, latency and freshness step by step.",
    "Prove that the sum of two even numbers is even, and explain each step.",
    "Draft a friendly reply to a customer asking about our refund policy.",
    "Refactor this SQL query so it uses a window function instead of a self join.",
)

_CONTEXT = "Notes from the weekly review: revenue, churn and ticket volume by region. "
_WIRE_PATHS = {
    "openai": "v1/chat/completions",
    "anthropic": "v1/messages",
    "google": "v1beta/models/{model}:generateContent",
}
_EMBEDDING_PATH = "v1/embeddings"
# (status, message) of calls the provider refused, as their SDKs would report them.
_FAILURES = {
    "openai": (
        (429, "Rate limit reached for gpt-4o in organization org-demo on requests per min."),
        (500, "The server had an error while processing your request. Sorry about that!"),
    ),
    "anthropic": ((529, "Overloaded"), (400, "prompt is too long: 210433 tokens > 200000 maximum")),
    "google": ((503, "The model is overloaded. Please try again later."),),
}
_QUICK_SHARE = 0.45  # of calls: short questions, which routing may send to a smaller model
_QUICK_TOKENS = 400
_ERROR_RATE = 0.03
_CACHE_HIT_RATE = 0.12  # of a caching key's non-streamed calls
_RATED_SHARE = 0.25  # of routed calls, rated by their users
_GROWTH = 0.6  # the first day sees this share of the last day's traffic
_WEEKEND = 0.25


@dataclass(frozen=True, slots=True)
class SeededKey:
    """A key the history made: its id, name and plain proxy key (for live calls)."""

    id: int
    name: str
    key: str


@dataclass(frozen=True, slots=True)
class History:
    """What was seeded, to check dashboards against."""

    keys: tuple[SeededKey, ...]
    calls: int
    errors: int
    routed: int
    cache_hits: int
    models: frozenset[str]
    """Models that served calls (after routing)."""
    cost_usd: float
    savings_usd: float
    alerts: int
    start: datetime
    now: datetime

    def key(self, name: str) -> SeededKey:
        """The seeded key called `name`."""
        return next(k for k in self.keys if k.name == name)


def seed_history(
    db_path: Path | str,
    *,
    secret_key_file: Path | str | None = None,
    secret_key: str | None = None,
    days: int = 30,
    seed: int = 0,
    now: datetime | None = None,
    provider_api_key: str = "sk-simulated",
    volume: float = 1.0,
    prices: PriceTable | None = None,
    db_url: str | None = None,
) -> History:
    """Write `days` days of calls (today included, up to `now`) into the database at `db_path`,
    or at `db_url` (None: LCM_DB_URL; "": none) when that is set, as the server chooses.

    The keys are encrypted under `secret_key` or the one in `secret_key_file` (the
    server's, so that it can forward their calls), each holding `provider_api_key` for
    every provider. `volume` scales the number of calls.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    if (secret_key is None) == (secret_key_file is None):
        raise ValueError("give exactly one of secret_key and secret_key_file")
    box = SecretBox(secret_key or load_or_create_key(Path(secret_key_file or "")))
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    prices = prices or default_table()
    rng = random.Random(seed)
    target = (os.environ.get("LCM_DB_URL") if db_url is None else db_url) or db_path
    db = open_database(target)
    try:
        made = [_create_key(db, box, plan, provider_api_key) for plan in PLANS]
        rows = _calls(rng, made, days=days, now=now, volume=volume, prices=prices)
        writer = LogWriter(target)
        writer.start()
        for row in rows:
            writer.submit(row)
        writer.close()
        if writer.failed:
            raise RuntimeError(f"{writer.failed} seeded log rows could not be written")
        alerts = _budgets_and_alerts(db, box, made, rows, now)
    finally:
        db.close()
    ok = [r for r in rows if r["status"] < 400]
    return History(
        keys=tuple(SeededKey(record.id, record.name, plain) for record, plain, _ in made),
        calls=len(rows),
        errors=len(rows) - len(ok),
        routed=sum(r["model"] != r["requested_model"] for r in rows),
        cache_hits=sum(r["cache_hit"] for r in rows),
        models=frozenset(r["model"] for r in ok),
        cost_usd=math.fsum(r["cost_usd"] for r in rows),
        savings_usd=math.fsum(r["savings_usd"] for r in rows),
        alerts=alerts,
        start=_day_start(now) - timedelta(days=days - 1),
        now=now,
    )


def _create_key(db, box: SecretBox, plan: _KeyPlan, provider_api_key: str):
    fields = validate_key_fields(
        {
            "name": plan.name,
            "provider": plan.provider,
            "provider_api_keys": dict.fromkeys(PROVIDERS, provider_api_key),
            "routing_mode": plan.routing_mode,
            "routing_rules": list(plan.routing_rules),
            "cache_ttl_seconds": plan.cache_ttl_seconds,
            "rate_limit_rpm": plan.rate_limit_rpm,
            "budget_alert_thresholds": list(ALERT_THRESHOLDS),
        },
        partial=False,
    )
    record, plain = create_key(db, box, fields)
    return record, plain, plan


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _calls(
    rng: random.Random,
    made: Sequence[tuple[Any, str, _KeyPlan]],
    *,
    days: int,
    now: datetime,
    volume: float,
    prices: PriceTable,
) -> list[dict[str, Any]]:
    """Every call's log row, oldest first."""
    rows = []
    today = _day_start(now)
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        growth = _GROWTH + (1 - _GROWTH) * (days - 1 - back) / max(days - 1, 1)
        weekday = _WEEKEND if day.weekday() >= 5 else 1.0
        for record, _, plan in made:
            n = rng.gauss(plan.calls_per_day * growth * weekday * volume, 4)
            for _ in range(max(round(n), 0)):
                # Office hours, centred on early afternoon UTC.
                hour = min(max(rng.gauss(13.5, 3.0), 0.0), 23.99)
                moment = day + timedelta(hours=hour)
                if moment >= now:
                    continue
                rows.append(_call(rng, record.id, plan, moment, prices))
    rows.sort(key=lambda r: r["id"])
    return rows


def _call(
    rng: random.Random, key_id: int, plan: _KeyPlan, moment: datetime, prices: PriceTable
) -> dict[str, Any]:
    """One call's log row, as the pipeline writes it (a LogRow), with its feedback."""
    requested = rng.choices([m for m, _ in plan.models], [w for _, w in plan.models])[0]
    price = prices.resolve(requested)
    assert price is not None, requested  # the plans name priced models only
    provider = price.provider
    prompt = rng.choice(PROMPTS)
    embeds = requested.startswith("text-embedding")
    path = _EMBEDDING_PATH if embeds else _WIRE_PATHS[provider].format(model=requested)
    endpoint = classify(path)
    usage = _usage(rng, embeds)
    body = _body(provider, requested, prompt, embeds, usage.input_tokens)
    decision = decide(
        mode=plan.routing_mode,
        model=requested,
        wire=endpoint.wire,
        body=body,
        rules=plan.routing_rules,
        prices=prices,
    )
    model = decision.to_model if decision.was_routed and decision.to_model else requested
    stream = not embeds and rng.random() < 0.3
    failure = rng.random() < _ERROR_RATE
    cache_hit = not (failure or stream) and plan.cache_ttl_seconds > 0
    cache_hit = cache_hit and rng.random() < _CACHE_HIT_RATE
    row: LogRow = {
        "id": f"{int(moment.timestamp() * 1000):012x}{rng.getrandbits(80):020x}",
        "key_id": key_id,
        "provider": provider,
        "endpoint": endpoint.name,
        "method": "POST",
        "requested_model": requested,
        "model": model,
        "stream": int(stream),
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "usage_json": None,
        "cost_usd": 0.0,
        "tool_fees_usd": 0.0,
        "unpriced": 0,
        "usage_estimated": 0,
        "pricing_version": None,
        "savings_usd": 0.0,
        "latency_ms": None,
        "ttfb_ms": None,
        "status": 200,
        "error": None,
        "cache_hit": int(cache_hit),
        "routing_decision": json.dumps(decision.to_json()),
        "shadow_savings_usd": 0.0,
        "created_at": to_iso(moment),
        "user": None,
        "notebook": None,
        "cell": None,
        "team_budget_ids": None,
    }
    if failure:
        status, message = rng.choice(_FAILURES[provider])
        latency = rng.uniform(80, 900)
        row.update({"status": status, "error": message, "latency_ms": round(latency, 3)})
        return {**row, "feedback": None}
    booked = prices.price_call(
        usage,
        model=model,
        requested_model=requested,
        provider=provider,
        at=moment.astimezone(timezone.utc),
        routed=decision.was_routed,
        cache_hit=cache_hit,
    )
    cost, savings = booked.cost, booked.savings
    latency, ttfb = _latency(rng, model, usage, cache_hit)
    row.update(
        {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_tokens": usage.cached_tokens,
            "cost_usd": cost,
            "unpriced": int(booked.unpriced),
            "pricing_version": prices.version,
            "savings_usd": savings,
            "latency_ms": latency,
            "ttfb_ms": ttfb,
        }
    )
    return {**row, "feedback": _rating(rng, decision)}


def _body(provider: str, model: str, prompt: str, embeds: bool, tokens: int) -> dict[str, Any]:
    """The request the router judges: the prompt after context of about `tokens` tokens."""
    if embeds:
        return {"model": model, "input": prompt}
    # About 4 characters a token. A quick question's tokens are its own and the system
    # prompt's; a long input is context (documents, earlier turns) before the question.
    context = _CONTEXT * (tokens * 4 // len(_CONTEXT)) if tokens > _QUICK_TOKENS else ""
    text = f"{context}\n\n{prompt}" if context else prompt
    if provider == "google":
        return {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    return {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": text}]}


def _usage(rng: random.Random, embeds: bool) -> Usage:
    """Tokens of a call: a quick question, or one asked over documents or a long chat."""
    if rng.random() < _QUICK_SHARE:
        inputs = round(rng.lognormvariate(4.5, 0.5))  # median ~90
    else:
        inputs = round(rng.lognormvariate(7.8, 0.8))  # median ~2,400
    if embeds:
        return Usage(input_tokens=inputs)
    outputs = round(rng.lognormvariate(5.8, 0.7))  # median ~330
    cached = 0
    if inputs >= 1024 and rng.random() < 0.3:  # a repeated system prompt, read from cache
        cached = inputs // 2 // 128 * 128
    return Usage(input_tokens=inputs, output_tokens=outputs, cached_tokens=cached)


def _latency(rng: random.Random, model: str, usage: Usage, cache_hit: bool) -> tuple[float, float]:
    """Total and first-byte milliseconds: small models are quicker per token."""
    if cache_hit:
        latency = rng.uniform(2, 12)
        return round(latency, 3), round(latency * 0.8, 3)
    small = any(tag in model for tag in ("mini", "haiku", "flash", "embedding"))
    ttfb = rng.uniform(150, 450) if small else rng.uniform(300, 1100)
    per_token = 6 if small else 14
    latency = ttfb + usage.output_tokens * per_token * rng.uniform(0.8, 1.2)
    return round(latency, 3), round(ttfb, 3)


def _rating(rng: random.Random, decision: RoutingDecision) -> int | None:
    """Some users rate routed answers, mostly as good enough."""
    if not decision.was_routed or rng.random() >= _RATED_SHARE:
        return None
    return 1 if rng.random() < 0.85 else -1


def _round_up(usd: float) -> float:
    """A budget a person would set: `usd` rounded up to two significant figures, $1 at least."""
    if usd <= 1:
        return 1.0
    scale = 10.0 ** (1 - math.floor(math.log10(usd)))
    return math.ceil(usd * scale) / scale


def _budgets_and_alerts(db, box: SecretBox, made, rows, now: datetime) -> int:
    """Set each budgeted key's budget from its month-to-date spend; store the alerts crossed."""
    month = to_iso(now)[:7]
    spent: Counter[int] = Counter()
    for row in rows:
        if row["created_at"].startswith(month):
            spent[row["key_id"]] += to_units(row["cost_usd"])
    alerts = 0
    for record, _, plan in made:
        if plan.budget_share is None:
            continue
        budget = _round_up(to_usd(spent[record.id]) / plan.budget_share)
        update_key(db, box, record.id, {"monthly_budget_usd": budget})
        for threshold in crossed_thresholds(
            0, spent[record.id], to_units(budget), ALERT_THRESHOLDS
        ):
            message = alert_message(
                key_name=record.name,
                percent=threshold.percent,
                spent_usd=to_usd(spent[record.id]),
                budget_usd=budget,
                month=month,
            )
            created = insert_alert(
                db,
                key_id=record.id,
                month=month,
                threshold=threshold.percent,
                severity=threshold.severity,
                message=message,
            )
            alerts += created is not None
    return alerts
