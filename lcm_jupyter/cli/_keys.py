"""`jupyter lcm keys list|create|revoke`: proxy keys, straight in the server's database."""

from __future__ import annotations

import json
import sys
from typing import Any

from traitlets import Enum, Float, Integer, List, TraitType, Unicode

from ..core.keyspec import KEY_FIELDS, KeyField
from ..core.money import format_money
from ..core.providers import PROVIDERS
from ..core.settings import Settings
from ..store.db import describe
from ._base import CommandError, LCMCommand, UsageError, subcommands


def _open(settings: Settings):
    """The server's database and the box of its secret: (db, box); a CommandError when the
    secret is not the database's (a key written under it would be unreadable there)."""
    from ..core.secretbox import SecretBox, SecretMismatch, load_or_create_key
    from ..store.db import open_database
    from ..store.secret import check_secret

    box = SecretBox(settings.secret_key or load_or_create_key(settings.secret_key_file))
    db = open_database(settings.store_target)
    try:
        check_secret(db, box, db_path=settings.store_target, secret_file=settings.secret_key_file)
    except SecretMismatch as err:
        db.close()
        raise CommandError(str(err).removeprefix("lcm: ")) from None
    return db, box


def _create_key(settings: Settings, **fields: Any):
    """Create a key in `settings`' database: (record, plain key)."""
    from ..core.keyspec import validate_key_fields
    from ..store.keys import create_key

    db, box = _open(settings)
    try:
        return create_key(db, box, validate_key_fields(fields, partial=False))
    finally:
        db.close()


def provider_keys(pairs: list[str]) -> dict[str, str]:
    """`["openai=sk-..."]` as `{"openai": "sk-..."}`; a UsageError naming the form otherwise."""
    keys: dict[str, str] = {}
    for pair in pairs:
        provider, eq, key = pair.partition("=")
        provider = provider.strip().lower()
        if not eq or provider not in PROVIDERS or not key.strip():
            shown = pair if len(pair) <= 12 else pair[:8] + "..."  # never echo a whole key
            raise UsageError(
                f"--provider-key takes PROVIDER=KEY, e.g. --provider-key openai=sk-... "
                f"(providers: {', '.join(PROVIDERS)}; got {shown!r})"
            )
        keys[provider] = key.strip()
    return keys


class _KeysCommand(LCMCommand):
    def _database(self):
        return _open(self.settings)


class KeysListApp(_KeysCommand):
    """List the proxy keys."""

    name = "jupyter-lcm-keys-list"
    description = "List the proxy keys in the server's database."

    def start(self) -> int:  # type: ignore[override]
        from ..store.keys import list_keys

        db, box = self._database()
        try:
            records = list_keys(db, box)
        finally:
            db.close()
        print(f"database: {describe(self.settings.store_target)}", file=sys.stderr)
        if not records:
            print("no keys yet: jupyter lcm keys create NAME --provider-key openai=sk-...")
        for r in records:
            state = "revoked" if r.revoked else "active"
            budget = (
                f"{format_money(r.monthly_budget_usd)}/month"
                if r.monthly_budget_usd is not None
                else "no budget"
            )
            print(f"{r.id:4}  {r.key_prefix}...  {r.provider:9}  {state:7}  {budget:16}  {r.name}")
        return 0


def _flag_trait(spec: KeyField) -> TraitType:
    """The option of a key field that has a flag, from its declaration (core.keyspec)."""
    if spec.choices:
        return Enum(list(spec.choices), spec.default, config=True, help=spec.help)
    if spec.number in ("int", "float"):
        kind = Integer if spec.number == "int" else Float
        return kind(None, allow_none=True, config=True, help=spec.help)
    raise TypeError(f"no command-line option for {spec.name}")  # a new kind: say how here


FLAGGED = tuple(f for f in KEY_FIELDS if f.flag)
# The options of `keys create`, one per flagged key field (named as the field, so that
# --KeysCreateApp.monthly_budget_usd=5 works too), on a base class: traitlets makes
# traits of the attributes a class is created with.
_KeyFieldOptions: type[_KeysCommand] = type(
    "_KeyFieldOptions", (_KeysCommand,), {f.name: _flag_trait(f) for f in FLAGGED}
)


class KeysCreateApp(_KeyFieldOptions):  # type: ignore[valid-type,misc]
    """Create a proxy key; prints it once."""

    name = "jupyter-lcm-keys-create"
    description = "Create a proxy key in the server's database and print it (shown once)."
    examples = (
        "jupyter lcm keys create team-a --provider auto --provider-key openai=sk-... "
        "--provider-key anthropic=sk-ant-... --budget 50 --rpm 60"
    )
    positional = ("NAME",)

    provider_key = List(
        Unicode(),
        config=True,
        help="A provider API key as PROVIDER=KEY, e.g. openai=sk-... (repeatable).",
    )

    aliases = {
        **LCMCommand.aliases,
        "provider-key": "KeysCreateApp.provider_key",
        **{f.flag: f"KeysCreateApp.{f.name}" for f in FLAGGED if f.flag},
    }

    def start(self) -> int:
        from ..core.errors import LCMError

        keys = provider_keys(list(self.provider_key))
        settings = self.settings
        try:
            record, plain = _create_key(
                settings,
                name=self.extra_args[0],
                provider_api_keys=keys,
                **{f.name: getattr(self, f.name) for f in FLAGGED},
            )
        except LCMError as err:
            raise CommandError(err.message) from None
        print(json.dumps({**record.public(), "key": plain}, indent=2))
        print(
            f"Copy the key now: it is not stored and cannot be shown again "
            f"(database: {describe(settings.store_target)}).",
            file=sys.stderr,
        )
        return 0


class KeysRevokeApp(_KeysCommand):
    """Revoke a proxy key."""

    name = "jupyter-lcm-keys-revoke"
    description = "Revoke a proxy key by its id (its logs stay)."
    positional = ("ID",)

    def start(self) -> int:  # type: ignore[override]
        from ..store.keys import revoke_key

        try:
            key_id = int(self.extra_args[0])
        except ValueError:
            raise UsageError(
                f"{self.command} takes a key id, a number (see jupyter lcm keys list); "
                f"got {self.extra_args[0]!r}"
            ) from None
        db, box = self._database()
        try:
            record = revoke_key(db, box, key_id)
        finally:
            db.close()
        where = describe(self.settings.store_target)
        if record is None:
            raise CommandError(f"no key {key_id} in {where} (jupyter lcm keys list shows the ids)")
        print(f"revoked key {record.id} ({record.name}) in {where}")
        return 0


class KeysApp(LCMCommand):
    """List, create or revoke proxy keys."""

    name = "jupyter-lcm-keys"
    description = "List, create or revoke proxy keys, in the server's database."
    subcommands = subcommands(list=KeysListApp, create=KeysCreateApp, revoke=KeysRevokeApp)
    default_subcommand = "list"
