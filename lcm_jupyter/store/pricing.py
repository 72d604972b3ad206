"""The model_pricing table: overrides of the bundled price table."""

from __future__ import annotations

import json

from ..core.pricing import ModelPrice
from .db import Database
from .timeutil import utc_now_iso


def load_overrides(db: Database) -> list[ModelPrice]:
    """Every stored override."""
    return [
        ModelPrice.from_dict(json.loads(row["price_json"]), source="override")
        for row in db.query("SELECT price_json FROM model_pricing ORDER BY model")
    ]


def save_overrides(db: Database, prices: list[ModelPrice]) -> None:
    """Insert or replace overrides, all or none."""
    now = utc_now_iso()
    with db.atomic():
        db.table("model_pricing").upsert_all(
            [
                {
                    "model": p.model,
                    "provider": p.provider,
                    "price_json": json.dumps(p.to_dict()),
                    "updated_at": now,
                }
                for p in prices
            ],
            pk="model",
        )


def delete_override(db: Database, model: str) -> bool:
    """Drop an override, so the bundled price applies again; False if there was none."""
    with db.atomic():
        cur = db.execute("DELETE FROM model_pricing WHERE model = ?", [model])
    return cur.rowcount > 0
