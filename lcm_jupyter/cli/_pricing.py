"""`jupyter lcm pricing [list|update]`: the prices in force, and updating the catalog."""

from __future__ import annotations

import json
import sys
from fnmatch import fnmatchcase

from traitlets import Bool, Enum, Unicode

from ..core.providers import PROVIDERS
from ._base import CommandError, LCMCommand, subcommands


class PricingListApp(LCMCommand):
    """Print the prices in force."""

    name = "jupyter-lcm-pricing-list"
    description = "Print the prices in force: the catalog with the database's overrides."
    examples = "jupyter lcm pricing --provider anthropic --model 'claude-3-*'"

    provider = Enum(list(PROVIDERS), None, allow_none=True, config=True, help="Only this provider.")
    model = Unicode("", config=True, help="Only models matching this glob.")
    aliases = {
        **LCMCommand.aliases,
        "provider": "PricingListApp.provider",
        "model": "PricingListApp.model",
    }

    def start(self) -> int:  # type: ignore[override]
        from ..core.catalog import Catalog
        from ..core.pricing import PriceTable
        from ..store.db import open_database
        from ..store.pricing import load_overrides

        settings = self.settings
        db = open_database(settings.store_target)
        try:
            table = PriceTable(Catalog.load(settings.price_catalog_file), load_overrides(db))
        finally:
            db.close()
        print(f"prices {table.version} (USD per 1M tokens; * marks your overrides)")
        print(
            f"{'provider':10} {'model':34} {'input':>9} {'output':>9} {'cached':>9} {'cache-w':>9}"
        )
        for card in table.rows():
            if self.provider and card.provider != self.provider:
                continue
            if self.model and not fnmatchcase(card.model, self.model):
                continue
            p = card.to_dict()
            cells = [
                p[k] if p[k] is not None else "-"
                for k in ("input", "output", "cached_input", "cache_write")
            ]
            mark = " *" if card.source == "override" else ""
            row = " ".join(f"{c:>9}" for c in cells)
            print(f"{card.provider:10} {card.model:34} {row}{mark}")
        return 0


class PricingUpdateApp(LCMCommand):
    """Fetch the maintained price data for the server."""

    name = "jupyter-lcm-pricing-update"
    description = (
        "Fetch genai-prices' current data, store it where the server reads it "
        "(LCMExtension.price_catalog_file) and print what changed."
    )

    source = Unicode(
        "",
        config=True,
        help="Update from this URL or file (default: genai-prices' published data).",
    )
    offline_ok = Bool(
        False, config=True, help="Exit 0 when the update cannot be fetched (prices stay)."
    )
    aliases = {**LCMCommand.aliases, "from": "PricingUpdateApp.source"}
    flags = {
        **LCMCommand.flags,
        "offline-ok": (
            {"PricingUpdateApp": {"offline_ok": True}},
            "Exit 0 when the update cannot be fetched (the current prices stay).",
        ),
    }

    def start(self) -> int:  # type: ignore[override]
        from ..core.catalog import Catalog, diff_catalogs, fetch_document

        target = self.settings.price_catalog_file
        if target is None:
            raise CommandError("no price_catalog_file is configured (LCMExtension)")
        try:
            doc = fetch_document(self.source or None)
        except (OSError, ValueError) as exc:
            where = self.source or "the genai-prices repository"
            print(
                f"could not fetch prices from {where} ({exc}); the current prices stay in use "
                f"({Catalog.load(target).version}).",
                file=sys.stderr,
            )
            return 0 if self.offline_ok else 1
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_suffix(".tmp")
        staged.write_text(json.dumps(doc), encoding="utf-8")
        try:
            new = Catalog.from_file(staged)
        except ValueError as exc:
            staged.unlink()
            raise CommandError(f"the fetched data is not a genai-prices catalog: {exc}") from None
        old = Catalog.load(target)
        changes = diff_catalogs(old, new)
        staged.replace(target)
        print(f"stored {new.version} in {target} (was {old.version})")
        if not changes:
            print("no price changed")
        for change in changes:
            if change.before is None:
                print(f"+ {change.provider}/{change.model}: {_fmt_prices(change.after)}")
            elif change.after is None:
                print(f"- {change.provider}/{change.model}")
            else:
                diff = {
                    k: (change.before.get(k), v)
                    for k, v in change.after.items()
                    if change.before.get(k) != v
                }
                gone = {k: (v, None) for k, v in change.before.items() if k not in change.after}
                parts = [f"{k} {a or '-'} -> {b or '-'}" for k, (a, b) in {**diff, **gone}.items()]
                print(f"~ {change.provider}/{change.model}: " + ", ".join(parts))
        print("restart the Jupyter server to price with it")
        return 0


def _fmt_prices(prices: dict[str, str] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (prices or {}).items())


class PricingApp(LCMCommand):
    """The prices in force, or update the catalog."""

    name = "jupyter-lcm-pricing"
    description = "Show the prices in force (list, the default), or update the price catalog."
    subcommands = subcommands(list=PricingListApp, update=PricingUpdateApp)
    default_subcommand = "list"
