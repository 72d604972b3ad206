"""Everything the handlers share, built from Settings, started and stopped as one."""

from __future__ import annotations

import logging

from ..core.secretbox import SecretBox, load_or_create_key
from ..core.settings import Settings
from ..store.logwriter import LogWriter
from ..store.store import Store
from .keyring import KeyRing
from .pipeline import ProxyPipeline
from .pricing import PricingService
from .upstream import AiohttpUpstream, Upstream

log = logging.getLogger(__name__)


class LCMServices:
    """The store, the key ring, the pricing service, the upstream client and the pipeline."""

    def __init__(self, settings: Settings, *, upstream: Upstream | None = None) -> None:
        self.settings = settings
        secret = settings.secret_key or load_or_create_key(settings.secret_key_file)
        self.box = SecretBox(secret)
        self.store = Store(settings.db_path)
        self.keys = KeyRing(self.store, self.box, ttl=settings.key_cache_seconds)
        self.pricing = PricingService(self.store)
        self.upstream = upstream or AiohttpUpstream(
            connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout
        )
        self.log_writer = LogWriter(
            settings.db_path,
            batch_size=settings.log_batch_size,
            interval=settings.log_flush_interval,
        )
        self.pipeline = ProxyPipeline(
            settings=settings,
            keys=self.keys,
            pricing=self.pricing,
            upstream=self.upstream,
            log_writer=self.log_writer,
        )

    async def start(self) -> None:
        """Start the log writer and load the price overrides."""
        self.log_writer.start()
        await self.pricing.reload()
        log.info(
            "lcm: database %s, price table %s", self.settings.db_path, self.pricing.table.version
        )

    async def flush_logs(self, timeout: float = 10.0) -> bool:
        """Wait until every call so far is in the database."""
        return await self.store.run(lambda _db: self.log_writer.flush(timeout))

    async def stop(self) -> None:
        """Close the upstream pool, write every queued log row, close the database."""
        await self.upstream.close()
        self.log_writer.close()
        self.store.close()
