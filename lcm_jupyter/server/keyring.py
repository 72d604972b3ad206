"""Proxy-key lookup for the request path: a short-lived in-memory cache over the store.

Keys change rarely and are read on every call, so a hit costs a dict lookup.
Changes made through this process drop the entry at once; the short TTL bounds
how long another process sharing the database may see an old record.
"""

from __future__ import annotations

import time

from ..core.keys import hash_key
from ..core.secretbox import SecretBox
from ..store import keys as key_table
from ..store.keys import KeyRecord
from ..store.store import Store


class KeyRing:
    """Finds the key record for a plain proxy key."""

    def __init__(self, store: Store, box: SecretBox, *, ttl: float = 5.0) -> None:
        self._store = store
        self._box = box
        self._ttl = ttl
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}

    async def lookup(self, plain: str) -> KeyRecord | None:
        """The record for `plain` (revoked ones included), or None."""
        digest = hash_key(plain)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = await self._store.run(key_table.find_key_by_hash, self._box, digest)
        if record is not None:
            # Unknown keys are not cached: a flood of random keys must not fill memory.
            self._cache[digest] = (now + self._ttl, record)
        return record

    def forget(self, key_id: int | None = None) -> None:
        """Drop cached records (one key's, or all) after a change."""
        if key_id is None:
            self._cache.clear()
            return
        for digest, (_, record) in list(self._cache.items()):
            if record is not None and record.id == key_id:
                del self._cache[digest]
