"""The pricing service: the catalog with the database's overrides on top, in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..core.catalog import Catalog
from ..core.pricing import ModelPrice, PriceTable
from ..store import pricing as pricing_table
from ..store.store import Store


class PricingService:
    """The one source of prices for this process; rebuilt when overrides change."""

    def __init__(self, store: Store, catalog_file: Path | None = None) -> None:
        self._store = store
        self._catalog_file = catalog_file
        self._catalog: Catalog | None = None
        # The bundled catalog until start() reads a stored update (cheap: loaded on first use).
        self.table = PriceTable(Catalog.bundled())

    async def load_catalog(self) -> Catalog:
        """Read the catalog (a stored update, else the bundled one) off the event loop."""
        self._catalog = await asyncio.to_thread(Catalog.load, self._catalog_file)
        # genai-prices builds its data on first use: do it here, not on the first call.
        await asyncio.to_thread(lambda: self._catalog.providers)  # type: ignore[union-attr]
        return self._catalog

    async def reload(self) -> PriceTable:
        """Read the overrides again and rebuild the table."""
        if self._catalog is None:
            await self.load_catalog()
        overrides = await self._store.run(pricing_table.load_overrides)
        self.table = PriceTable(self._catalog, overrides)
        return self.table

    async def set_prices(self, prices: list[ModelPrice]) -> PriceTable:
        """Store overrides and apply them."""
        await self._store.run(pricing_table.save_overrides, prices)
        return await self.reload()

    async def reset_price(self, model: str) -> bool:
        """Drop one override; False if the model had none."""
        dropped = await self._store.run(pricing_table.delete_override, model)
        await self.reload()
        return dropped
