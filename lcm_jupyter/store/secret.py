"""One secret per database: every server that shares it must encrypt with the same one.

A server with another secret could not read the provider keys (a bare `InvalidToken` on
every call) and would write keys the others cannot read. The database keeps the check
value of its secret (core.secretbox.SecretBox.check_value); `check_secret` runs when a
server or `jupyter lcm` opens it and refuses another secret with how to share it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.secretbox import SecretBox, SecretMismatch
from .db import Database, describe

_NAME = "secret_check"


def check_secret(db: Database, box: SecretBox, *, db_path: Path | str, secret_file: Path) -> None:
    """Record this database's secret on first use; SecretMismatch if `box` holds another."""
    found = db.execute("SELECT value FROM lcm_meta WHERE name = ?", [_NAME]).fetchone()
    if found is None:
        # First use, or a database from before the check: its encrypted keys tell.
        if _reads_stored_keys(db, box):
            db.execute(
                "INSERT INTO lcm_meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [_NAME, box.check_value],
            )
            found = db.execute("SELECT value FROM lcm_meta WHERE name = ?", [_NAME]).fetchone()
        else:
            found = ("",)
    if found[0] != box.check_value:
        raise SecretMismatch(
            f"lcm: the database {describe(db_path)} was written under another secret key than this "
            f"server's (from {secret_file} or LCM_SECRET_KEY): it could not read the provider "
            "keys stored there. Servers that share a database must share the secret: copy "
            "the first server's secret key file to the others, or set the same "
            "c.LCMExtension.secret_key (LCM_SECRET_KEY) on every one."
        )


def _reads_stored_keys(db: Database, box: SecretBox) -> bool:
    """Whether `box` decrypts a provider key stored here (True when none is stored)."""
    from cryptography.fernet import InvalidToken

    for (blob,) in db.execute(
        "SELECT provider_api_keys FROM proxy_keys WHERE provider_api_keys NOT IN ('', '{}')"
    ):
        for token in json.loads(blob or "{}").values():
            try:
                box.decrypt(token)
            except InvalidToken:
                return False
            return True
    return True
