"""Feedback on logged calls, and the ratings of routed calls that quality scores come from."""

from __future__ import annotations

import json
from typing import Any

from sqlite_utils import Database


def set_feedback(
    db: Database, log_id: str, score: int, comment: str | None
) -> tuple[int | None, dict[str, Any]] | None:
    """Record (or replace) a call's feedback: (previous score, row); None if no such call."""
    with db.atomic():
        rows = list(
            db.query("SELECT feedback, routing_decision FROM proxy_logs WHERE id = ?", [log_id])
        )
        if not rows:
            return None
        db.execute(
            "UPDATE proxy_logs SET feedback = ?, feedback_comment = ? WHERE id = ?",
            [score, comment, log_id],
        )
    row = rows[0]
    decision = json.loads(row["routing_decision"]) if row["routing_decision"] else None
    return row["feedback"], {"id": log_id, "feedback": score, "routing_decision": decision}


def routed_ratings(db: Database) -> list[tuple[str, str, str | None, int]]:
    """(requested model, routed-to model, intent, score) of every rated routed call."""
    sql = (
        "SELECT json_extract(routing_decision, '$.from_model') AS from_model, "
        "json_extract(routing_decision, '$.to_model') AS to_model, "
        "json_extract(routing_decision, '$.intent') AS intent, feedback "
        "FROM proxy_logs WHERE feedback IS NOT NULL "
        "AND json_extract(routing_decision, '$.was_routed') = 1"
    )
    return [
        (r["from_model"], r["to_model"], r["intent"], r["feedback"])
        for r in db.query(sql)
        if r["from_model"] and r["to_model"]
    ]
