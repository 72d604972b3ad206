"""Feedback on logged calls, and the ratings of routed calls that quality scores come from."""

from __future__ import annotations

import json
from typing import Any

from .db import Database


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
    # Rated calls are few (a partial index finds them): their decisions are read here, the
    # same on both engines, rather than with either one's JSON functions.
    sql = "SELECT routing_decision, feedback FROM proxy_logs WHERE feedback IS NOT NULL"
    out = []
    for row in db.query(sql):
        try:
            decision = json.loads(row["routing_decision"] or "null")
        except ValueError:
            continue
        if not isinstance(decision, dict) or decision.get("was_routed") not in (True, 1):
            continue
        if decision.get("from_model") and decision.get("to_model"):
            out.append(
                (
                    decision["from_model"],
                    decision["to_model"],
                    decision.get("intent"),
                    row["feedback"],
                )
            )
    return out
