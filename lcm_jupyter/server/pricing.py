"""The pricing service: the bundled table with the database's overrides on top, in memory."""

from __future__ import annotations

from ..core.pricing import ModelPrice, PriceTable
from ..store import pricing as pricing_table
from ..store.store import Store


class PricingService:
    """The one source of prices for this process; reloaded when overrides change."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.table = PriceTable.bundled()

    async def reload(self) -> PriceTable:
        """Read the overrides again and rebuild the table."""
        overrides = await self._store.run(pricing_table.load_overrides)
        self.table = PriceTable.bundled().with_overrides(overrides)
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
