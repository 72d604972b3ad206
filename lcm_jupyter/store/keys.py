"""The proxy_keys table: create, read, update, revoke, and lookup by hash.

Plain functions over a sqlite-utils Database, run on the store's threads.
Provider API keys are stored encrypted; records carry them decrypted in memory
only, for forwarding, and `public()` never shows more than a mask.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.keys import display_prefix, generate_proxy_key, hash_key, mask_secret
from ..core.keyspec import FIELDS, KEY_FIELDS
from ..core.secretbox import SecretBox
from .db import Database
from .timeutil import utc_now_iso


@dataclass(slots=True)
class KeyRecord:
    """One proxy key as the pipeline uses it: the fields of core.keyspec.KEY_FIELDS (a test
    checks they agree), then what the store sets itself (META)."""

    id: int
    name: str
    key_prefix: str
    provider: str
    monthly_budget_usd: float | None
    budget_alerts_enabled: bool
    budget_alert_thresholds: list[int]
    rate_limit_rpm: int | None
    routing_mode: str
    routing_rules: list[dict[str, str]]
    cache_ttl_seconds: int
    created_at: str
    updated_at: str
    revoked_at: str | None
    provider_api_keys: dict[str, str] = field(default_factory=dict, repr=False)
    owner: str | None = None
    """Whose key it is (a team's user: the calls made with it are theirs), None if no one's."""

    @property
    def revoked(self) -> bool:
        """True once the key has been revoked."""
        return self.revoked_at is not None

    def public(self) -> dict[str, Any]:
        """The record as the REST API shows it: provider keys masked."""
        out: dict[str, Any] = {"id": self.id, "key_prefix": self.key_prefix}
        for spec in KEY_FIELDS:
            value = getattr(self, spec.name)
            if spec.storage == "secrets":
                value = {p: mask_secret(k) for p, k in value.items()}
            out[spec.name] = value
        out.update(
            created_at=self.created_at,
            updated_at=self.updated_at,
            revoked_at=self.revoked_at,
            revoked=self.revoked,
            owner=self.owner,
        )
        return out


META = ("id", "key_prefix", "created_at", "updated_at", "revoked_at", "owner")
"""KeyRecord's attributes the store sets, beside the fields a client sets."""


def _to_columns(fields: Mapping[str, Any], box: SecretBox) -> dict[str, Any]:
    cols = dict(fields)
    for name, value in fields.items():
        storage = FIELDS[name].storage
        if storage == "secrets":
            cols[name] = json.dumps({p: box.encrypt(k) for p, k in value.items()})
        elif storage == "json":
            cols[name] = json.dumps(value)
        elif storage == "bool":
            cols[name] = int(value)
    return cols


def _from_row(row: Mapping[str, Any], box: SecretBox) -> KeyRecord:
    values: dict[str, Any] = {name: row[name] for name in META}
    for spec in KEY_FIELDS:
        value = row[spec.name]
        if spec.storage == "secrets":
            value = {p: box.decrypt(t) for p, t in json.loads(value or "{}").items()}
        elif spec.storage == "json":
            value = json.loads(value)
        elif spec.storage == "bool":
            value = bool(value)
        values[spec.name] = value
    return KeyRecord(**values)


def create_key(
    db: Database,
    box: SecretBox,
    fields: Mapping[str, Any],
    *,
    plain: str | None = None,
    owner: str | None = None,
) -> tuple[KeyRecord, str]:
    """Insert a key with validated `fields`; returns the record and the plain key (shown once).
    `plain`: the key to store (a derived one, see server/kernel_env.py), else a random one.
    `owner`: the user whose calls it makes."""
    plain = plain or generate_proxy_key()
    now = utc_now_iso()
    cols = _to_columns(fields, box)
    cols.update(
        key_hash=hash_key(plain),
        key_prefix=display_prefix(plain),
        created_at=now,
        updated_at=now,
        owner=owner,
    )
    key_id = db.table("proxy_keys").insert(cols).last_pk
    record = get_key(db, box, int(key_id or 0))
    assert record is not None  # just inserted, on this connection
    return record, plain


def get_key(db: Database, box: SecretBox, key_id: int) -> KeyRecord | None:
    """The key with this id, revoked or not."""
    rows = list(db.query("SELECT * FROM proxy_keys WHERE id = ?", [key_id]))
    return _from_row(rows[0], box) if rows else None


def find_key_by_hash(db: Database, box: SecretBox, key_hash: str) -> KeyRecord | None:
    """The key whose plain form hashes to `key_hash`."""
    rows = list(db.query("SELECT * FROM proxy_keys WHERE key_hash = ?", [key_hash]))
    return _from_row(rows[0], box) if rows else None


def list_keys(db: Database, box: SecretBox, *, include_revoked: bool = True) -> list[KeyRecord]:
    """All keys, oldest first."""
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    return [_from_row(r, box) for r in db.query(f"SELECT * FROM proxy_keys {where} ORDER BY id")]


def update_key(
    db: Database, box: SecretBox, key_id: int, fields: Mapping[str, Any]
) -> KeyRecord | None:
    """Apply validated `fields` to a key; None when it does not exist.

    `provider_api_keys` merges per provider, so that a client which only knows
    the masked keys can change one without resending the others.
    """
    current = get_key(db, box, key_id)
    if current is None:
        return None
    fields = dict(fields)
    if "provider_api_keys" in fields:
        fields["provider_api_keys"] = {**current.provider_api_keys, **fields["provider_api_keys"]}
    if fields:
        cols = _to_columns(fields, box)
        cols["updated_at"] = utc_now_iso()
        db.table("proxy_keys").update(key_id, cols)
    return get_key(db, box, key_id)


def revoke_key(db: Database, box: SecretBox, key_id: int) -> KeyRecord | None:
    """Mark a key revoked (its logs stay); None when it does not exist."""
    current = get_key(db, box, key_id)
    if current is None:
        return None
    if current.revoked_at is None:
        now = utc_now_iso()
        db.table("proxy_keys").update(key_id, {"revoked_at": now, "updated_at": now})
    return get_key(db, box, key_id)
