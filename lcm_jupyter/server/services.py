"""Everything the handlers share, built from Settings, started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from ..core import difficulty
from ..core.secretbox import SecretBox, load_or_create_key
from ..core.settings import Settings, parse_groups
from ..store.counters import Counters, RefusingCounters, SharedKV, SoftSharedKV
from ..store.counters_db import DatabaseCounters
from ..store.counters_memory import MemoryCounters
from ..store.db import describe
from ..store.journal import Journal, journal_dir, logged_ids
from ..store.logwriter import LogWriter
from ..store.secret import check_secret
from ..store.store import Store
from .alerts import AlertService
from .breaker import FailoverCounters, State
from .budgets import Guard
from .cache import ResponseCache
from .kernel_env import server_user
from .keyring import KeyRing
from .pipeline import ProxyPipeline
from .pricing import PricingService
from .routing import Router
from .team import HubAPI, TeamBudgets, TeamDirectory
from .upstream import AiohttpUpstream, Upstream

log = logging.getLogger(__name__)

REDIS_NOTE_SECONDS = 1.0
"""How often a server says whether it counts on Redis (counters_db.REDIS_SEEN_SECONDS: 3)."""


def _server_id() -> str:
    """This server's name among those sharing the database: host, process, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LCMServices:
    """The store, the key ring, the pricing service, the upstream client and the pipeline."""

    def __init__(self, settings: Settings, *, upstream: Upstream | None = None) -> None:
        self.settings = settings
        secret = settings.secret_key or load_or_create_key(settings.secret_key_file)
        self.box = SecretBox(secret)
        self.store = Store(settings.store_target)  # the database migrated
        try:  # before anything is served: a wrong secret stops the extension, said plainly
            self.store.run_sync(
                check_secret,
                self.box,
                db_path=settings.store_target,
                secret_file=settings.secret_key_file,
            )
        except BaseException:
            self.store.close()
            raise
        self.keys = KeyRing(self.store, self.box, ttl=settings.key_cache_seconds)
        self.pricing = PricingService(self.store, settings.price_catalog_file)
        self.upstream = upstream or AiohttpUpstream(
            connect_timeout=settings.connect_timeout, read_timeout=settings.read_timeout
        )
        self.log_writer = LogWriter(
            settings.store_target,
            batch_size=settings.log_batch_size,
            interval=settings.log_flush_interval,
        )
        self.journal = self._open_journal(settings)
        if self.journal is not None:
            self.log_writer.on_commit = self.journal.committed
        # The shared database counters, when they are Redis's fallback (on_redis_outage).
        self._shared: DatabaseCounters | None = None
        self.counters, shared = self._make_counters(settings)
        # The response cache and alert dedup: the same store, outside the breaker.
        self.shared_kv = SoftSharedKV(shared)
        self.alerts = AlertService(
            store=self.store,
            counters=self.shared_kv,
            locale=settings.locale,
            webhook_url=settings.alert_webhook_url,
        )
        self.guard = Guard(
            counters=self.counters,
            store=self.store,
            box=self.box,
            alerts=self.alerts,
            soft_budgets=settings.budget_mode == "soft",
            default_output_tokens=settings.default_max_output_tokens,
            unpriced_reserve_usd=settings.unpriced_reserve_usd,
            flush=self.flush_logs,
            # What a store taking over needs in its rate windows (only Redis has a fallback).
            track_admissions=isinstance(self.counters, FailoverCounters),
        )
        # Budgets per user and per group; who is an admin, and in which groups (team.py).
        directory = TeamDirectory(
            owner=server_user(),
            admins=settings.team_admins,
            groups=parse_groups(settings.team_groups),
            hub=HubAPI.from_environment() if settings.team_mode else None,
        )
        self.team = TeamBudgets(self.store, directory, self.box)
        self.router = Router(
            pricing=self.pricing,
            store=self.store,
            min_confidence=settings.routing_min_confidence,
            quality_threshold=settings.quality_threshold,
            quality_min_ratings=settings.quality_min_ratings,
        )
        self.pipeline: ProxyPipeline = ProxyPipeline(
            settings=settings,
            keys=self.keys,
            pricing=self.pricing,
            upstream=self.upstream,
            log_writer=self.log_writer,
            store=self.store,
            guard=self.guard,
            cache=ResponseCache(self.shared_kv),
            router=self.router,
            journal=self.journal,
            team=self.team,
        )
        self.log_writer.prepare = self.pipeline.judge_shadow
        self._reconciler: asyncio.Task | None = None
        self._redis_notes: asyncio.Task | None = None
        self._started = False
        self._stopping: asyncio.Future[None] | None = None

    @staticmethod
    def _open_journal(settings: Settings) -> Journal | None:
        where = journal_dir(settings.db_path)
        if where is None:
            return None
        try:
            return Journal(where)
        except OSError:  # a read-only directory: serve anyway, as before the journal
            log.exception("lcm: no call journal at %s; a crash may lose recent rows", where)
            return None

    async def _recover_journal(self) -> None:
        """Replay what dead servers on this database left in the journal (see journal.py)."""
        if self.journal is None:
            return
        try:
            await self.journal.recover(
                logged=lambda ids: self.store.run(logged_ids, ids),
                submit=self.log_writer.submit,
                flush=self.flush_logs,
                release=lambda key_id, call_id, month: self.counters.release(
                    key_id=key_id, call_id=call_id, month=month
                ),
                prices=lambda: self.pricing.table,
            )
        except Exception:
            log.exception("lcm: replaying the call journal failed; it is kept for the next start")

    def _make_counters(self, settings: Settings) -> tuple[Counters, SharedKV]:
        """The counters admission uses, and the store the cache and alert marks live in."""
        if not settings.redis_url:
            memory = MemoryCounters()
            return memory, memory
        from ..store.counters_redis import RedisCounters  # only when Redis is configured

        redis = RedisCounters(settings.redis_url, timeout=settings.redis_timeout)
        fallback: Counters
        if settings.on_redis_outage == "shared":
            fallback = self._shared = DatabaseCounters(self.store, server_id=_server_id())
        elif settings.on_redis_outage == "refuse":
            fallback = RefusingCounters()
        else:
            fallback = MemoryCounters()
        breaker = FailoverCounters(redis, fallback, resync=self._resync)
        if self._shared is not None:
            self._shared.superseded = lambda: breaker.state is not State.OPEN
        return breaker, redis

    async def _resync(self, counters: Counters) -> None:
        # Redis taking over again: reservations it kept of calls since settled elsewhere
        # (or made by admits that timed out) are forgotten when their calls are over, those
        # of calls in flight on any server kept. Either way the
        # store taking over gets the rate windows of the last minute (from the one left,
        # when it can be read, this process's admissions and the log).
        breaker = self.counters
        source: Counters | None = None
        primary = False
        if isinstance(breaker, FailoverCounters):
            primary = counters is breaker.primary
            source = breaker.fallback if primary else breaker.primary
        await self.guard.rebuild(counters, drop=primary, source=source, windows=True)

    async def reconcile(self, *, key_id: int | None = None) -> dict:
        """Make the budget counters equal to the logged spend; the drift per key."""
        return await self.guard.reconcile(key_id=key_id)

    async def start(self) -> None:
        """Start the log writer, load price overrides, rebuild the counters, start reconciling."""
        if self._started:
            return
        self._started = True
        self.log_writer.start()
        await self.pricing.reload()
        # Before the counters are rebuilt from the log: it then has the recovered rows.
        await self._recover_journal()
        # The router's weights (1.3 MB) are read now, not on the first call to judge.
        await asyncio.to_thread(difficulty.preload)
        await self.router.load()
        try:
            await self.reconcile()
        except Exception:
            log.exception("lcm: initial reconcile failed; counters start from zero")
        self._reconciler = asyncio.ensure_future(self._reconcile_periodically())
        if self._shared is not None:
            self._redis_notes = asyncio.ensure_future(self._note_redis_periodically(self._shared))
        log.info(
            "lcm: database %s, counters %s, price table %s",
            describe(self.settings.store_target),
            self.counters.name,
            self.pricing.table.version,
        )

    async def _note_redis_periodically(self, shared: DatabaseCounters) -> None:
        """Say once a second whether this server counts on Redis, so that a server deciding
        limits in the database while Redis is away for it alone refuses instead of counting
        alone (store/counters_db.py)."""
        breaker = self.counters
        assert isinstance(breaker, FailoverCounters)
        while True:
            breaker.changed.clear()
            try:
                ok = await breaker.counting_on_primary()
                await shared.note_redis(ok)
            except Exception:
                log.exception("lcm: could not record whether this server counts on Redis")
            # At once when the breaker moves: a server leaving Redis says so before the
            # others, deciding in the database meanwhile, wait for it.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(breaker.changed.wait(), REDIS_NOTE_SECONDS)

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                await self.reconcile()
            except Exception:
                log.exception("lcm: scheduled reconcile failed")

    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Wait until calls in flight are booked and logged and their alerts sent."""
        idle = await self.pipeline.idle(timeout)
        await self.guard.drain()
        return idle and await self.flush_logs(timeout)

    async def flush_logs(self, timeout: float = 10.0) -> bool:
        """Wait until every call so far is in the database."""
        # Not on the store's threads: key lookups on the proxy path must not queue behind it.
        return await asyncio.to_thread(self.log_writer.flush, timeout)

    async def stop(self) -> None:
        """Drain, close the upstream pool, write every queued log row, close the database.

        Idempotent: a second signal during the drain waits for the same stop."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        # New calls are refused (503) from now on; calls in flight, streams included, get
        # the grace time to finish: each books its cost and logs its row. Only then does
        # the upstream pool close (earlier, calls still being served would fail with 502).
        await self.pipeline.drain(timeout=self.settings.shutdown_grace_seconds)
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
            self._reconciler = None
        if self._redis_notes is not None and self._shared is not None:
            self._redis_notes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._redis_notes
            self._redis_notes = None
            with contextlib.suppress(Exception):  # a stopped server counts nowhere
                # Bounded: a database that is gone must not hold the stop (others see the
                # word go stale within REDIS_SEEN_SECONDS anyway).
                await asyncio.wait_for(self._shared.note_redis(False), REDIS_NOTE_SECONDS * 2)
        await self.upstream.close()
        await self.guard.drain()
        await self.counters.close()
        self.pipeline.closed = True
        self.log_writer.close()
        if self.journal is not None:
            self.journal.close()  # everything is committed: its files go
        self.store.close()
