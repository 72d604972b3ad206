"""A call's log row, declared once: the columns of `proxy_logs` as the pipeline, the journal's
replay and the history seeder write them (mypy checks each writes every column, no more),
and the columns the API decodes. A test checks the declaration against the migrated table.
"""

from __future__ import annotations

from typing import TypedDict


class LogRow(TypedDict):
    """One call as written; the feedback columns are left to the feedback API."""

    id: str
    key_id: int | None
    provider: str | None
    endpoint: str | None
    method: str | None
    requested_model: str | None
    model: str | None
    stream: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    usage_json: str | None
    """The provider's usage object as it arrived, as JSON text."""
    cost_usd: float | None
    """None: unknown (an unpriced model, or paid work nothing here can price)."""
    tool_fees_usd: float
    unpriced: int
    usage_estimated: int
    pricing_version: str | None
    savings_usd: float
    latency_ms: float | None
    ttfb_ms: float | None
    status: int | None
    error: str | None
    cache_hit: int
    routing_decision: str | None
    """core.routing.RoutingDecision.to_json(), as JSON text."""
    shadow_savings_usd: float
    created_at: str
    user: str | None
    """Who made the call: its key's owner (a team's user), None where unknown."""
    notebook: str | None
    """The notebook (its path) whose kernel made the call, None where unknown."""
    cell: str | None
    """The cell that made it: its id, else its execution count; None where unknown."""
    team_budget_ids: str | None
    """The team budgets (store/team.py) the call was charged to, as ",3,5,"; None if none."""


FEEDBACK_COLUMNS = ("feedback", "feedback_comment")
"""Columns of proxy_logs set after the call, by `POST lcm/api/logs/{id}/feedback`."""
JSON_COLUMNS = ("routing_decision", "usage_json")
BOOL_COLUMNS = ("stream", "unpriced", "cache_hit", "usage_estimated")
