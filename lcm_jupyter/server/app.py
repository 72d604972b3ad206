"""The Jupyter server extension: configuration, routes, start and stop."""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path
from urllib.parse import unquote

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Integer, List, TraitError, Unicode, default, validate

from ..client import TOKEN_ENV, URL_ENV
from ..core.analytics import load_timezone
from ..core.routing import DEFAULT_MIN_CONFIDENCE
from ..core.settings import (
    DEFAULT_BASE_URLS,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_READ_TIMEOUT,
    Settings,
)
from .analytics_handlers import analytics_handlers
from .api_handlers import api_handlers
from .proxy_handlers import proxy_handlers
from .services import LCMServices


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _timezone_name(name: str) -> str:
    # At start-up, not on the first dashboard load: a typo should stop the server.
    try:
        load_timezone(name)
    except ValueError as exc:
        raise TraitError(str(exc)) from None
    return name


class LCMExtension(ExtensionApp):
    """LLM cost manager: proxies, prices and logs every LLM call made from notebooks."""

    name = "lcm_jupyter"
    load_other_extensions = True

    db_path = Unicode(config=True, help="SQLite database of keys and call logs. Env: LCM_DB_PATH.")
    redis_url = Unicode(
        "",
        config=True,
        help="Redis URL shared by all servers (empty: in-memory). Env: LCM_REDIS_URL.",
    )
    openai_base_url = Unicode(config=True, help="OpenAI API origin. Env: LCM_OPENAI_BASE_URL.")
    anthropic_base_url = Unicode(
        config=True, help="Anthropic API origin. Env: LCM_ANTHROPIC_BASE_URL."
    )
    google_base_url = Unicode(config=True, help="Gemini API origin. Env: LCM_GOOGLE_BASE_URL.")
    secret_key = Unicode(
        "",
        config=True,
        help="Fernet key that encrypts provider API keys at rest. Env: LCM_SECRET_KEY. "
        "Empty: a key generated once into secret_key_file.",
    )
    secret_key_file = Unicode(
        config=True,
        help="Where the generated secret key lives (mode 0600). Env: LCM_SECRET_KEY_FILE.",
    )
    upstream_connect_timeout = Float(
        config=True, help="Seconds to connect to a provider. Env: LCM_UPSTREAM_CONNECT_TIMEOUT."
    )
    upstream_read_timeout = Float(
        config=True,
        help="Seconds a provider may stay silent (before its answer or between stream chunks)."
        " Env: LCM_UPSTREAM_READ_TIMEOUT.",
    )
    max_request_body_bytes = Integer(
        config=True,
        help="Largest request body accepted (413 above). Env: LCM_MAX_REQUEST_BODY_BYTES.",
    )

    redis_timeout = Float(
        config=True,
        help="Seconds a Redis call may take before the outage policy (on_redis_outage) answers. "
        "Env: LCM_REDIS_TIMEOUT.",
    )
    budget_mode = Enum(
        ["hard", "soft"],
        config=True,
        help="hard: reserve each call's worst-case cost so concurrent calls cannot overspend; "
        "soft: check settled spend only. Env: LCM_BUDGET_MODE.",
    )
    locale = Enum(["en", "ko"], config=True, help="Language of budget alerts. Env: LCM_LOCALE.")
    alert_webhook_url = Unicode(
        config=True,
        help="Slack-compatible webhook that budget alerts are POSTed to (empty: none). "
        "Env: LCM_ALERT_WEBHOOK_URL.",
    )
    default_max_output_tokens = Integer(
        config=True,
        help="Output tokens reserved for a call that sets no max_tokens. "
        "Env: LCM_DEFAULT_MAX_OUTPUT_TOKENS.",
    )
    unpriced_reserve_usd = Float(
        config=True,
        help="USD held against the budget while a call to a model without a price runs. "
        "Env: LCM_UNPRICED_RESERVE_USD.",
    )
    reconcile_interval_hours = Float(
        config=True,
        help="How often budget counters are rebuilt from the call log. "
        "Env: LCM_RECONCILE_INTERVAL_HOURS.",
    )

    gc_freeze = Bool(
        config=True,
        help="Move the objects alive once the server has started out of the garbage "
        "collector's sight (gc.freeze), so full collections stop pausing every call. "
        "Env: LCM_GC_FREEZE (0 to turn off).",
    )

    @default("gc_freeze")
    def _default_gc_freeze(self) -> bool:
        return (_env("LCM_GC_FREEZE") or "1").lower() not in ("0", "false", "no", "off")

    routing_min_confidence = Float(
        config=True,
        help="Auto routing moves a call down only when it is at least this sure the cheaper "
        "model suffices (1 - the learned difficulty score; the default, 0.75, is the "
        "threshold chosen from the public evaluation). Env: LCM_ROUTING_MIN_CONFIDENCE.",
    )
    quality_threshold = Float(
        config=True,
        help="A routed pair whose share of positive feedback falls below this stops being "
        "used by auto routing. Env: LCM_QUALITY_THRESHOLD.",
    )
    quality_min_ratings = Integer(
        config=True,
        help="Ratings a pair needs before the quality gate judges it. "
        "Env: LCM_QUALITY_MIN_RATINGS.",
    )

    analytics_timezone = Unicode(
        config=True,
        help="IANA timezone whose calendar days analytics report (e.g. Asia/Seoul). "
        "Env: LCM_ANALYTICS_TIMEZONE.",
    )

    on_redis_outage = Enum(
        ["shared", "local", "refuse"],
        config=True,
        help="What answers for rate limits and budgets while Redis is away. 'shared' (the "
        "default): the database every server shares, one transaction a call: limits hold "
        "exactly across servers, at a database write per call. 'local': each server's own "
        "memory, rebuilt from the log: fast, but servers sharing Redis then each count alone "
        "(n servers may admit up to n times a limit). 'refuse': calls of keys with limits "
        "get 503 until Redis is back. Env: LCM_ON_REDIS_OUTAGE.",
    )

    shutdown_grace_seconds = Float(
        config=True,
        help="When the server stops (SIGTERM), calls in flight, streams included, get this long "
        "to finish before they are cancelled; new calls get a 503 with Retry-After meanwhile. "
        "Env: LCM_SHUTDOWN_GRACE_SECONDS.",
    )

    @default("shutdown_grace_seconds")
    def _default_shutdown_grace(self) -> float:
        return float(_env("LCM_SHUTDOWN_GRACE_SECONDS") or 30.0)

    @default("on_redis_outage")
    def _default_on_redis_outage(self) -> str:
        return _env("LCM_ON_REDIS_OUTAGE") or "shared"

    unmetered_endpoints = List(
        Unicode(),
        config=True,
        help="Endpoints that cost money but are not metered (batch jobs, fine-tuning, vector "
        "stores, background responses: 'responses.background') that keys with a budget may "
        "still call, as globs of the logged endpoint name (v1/batches, v1/fine_tuning/*). "
        "Their cost is not held against the budget. Env: LCM_UNMETERED_ENDPOINTS "
        "(comma-separated).",
    )
    price_catalog_file = Unicode(
        config=True,
        help="The price catalog `jupyter lcm pricing update` stores; used instead of the "
        "bundled genai-prices data when present. Env: LCM_PRICE_CATALOG_FILE.",
    )

    @default("unmetered_endpoints")
    def _default_unmetered(self) -> list[str]:
        raw = _env("LCM_UNMETERED_ENDPOINTS") or ""
        return [p.strip() for p in raw.split(",") if p.strip()]

    @default("price_catalog_file")
    def _default_catalog_file(self) -> str:
        return _env("LCM_PRICE_CATALOG_FILE") or str(
            Path(jupyter_data_dir()) / "lcm" / "genai-prices.json"
        )

    @default("analytics_timezone")
    def _default_analytics_timezone(self) -> str:
        # Checked here too: traitlets does not validate dynamic defaults.
        return _timezone_name(_env("LCM_ANALYTICS_TIMEZONE") or "UTC")

    @validate("analytics_timezone")
    def _check_analytics_timezone(self, proposal) -> str:
        return _timezone_name(proposal["value"])

    @default("routing_min_confidence")
    def _default_min_confidence(self) -> float:
        return float(_env("LCM_ROUTING_MIN_CONFIDENCE") or DEFAULT_MIN_CONFIDENCE)

    @default("quality_threshold")
    def _default_quality_threshold(self) -> float:
        return float(_env("LCM_QUALITY_THRESHOLD") or 0.6)

    @default("quality_min_ratings")
    def _default_quality_min_ratings(self) -> int:
        return int(_env("LCM_QUALITY_MIN_RATINGS") or 20)

    @default("redis_timeout")
    def _default_redis_timeout(self) -> float:
        return float(_env("LCM_REDIS_TIMEOUT") or 0.1)

    @default("budget_mode")
    def _default_budget_mode(self) -> str:
        return _env("LCM_BUDGET_MODE") or "hard"

    @default("locale")
    def _default_locale(self) -> str:
        return _env("LCM_LOCALE") or "en"

    @default("alert_webhook_url")
    def _default_webhook(self) -> str:
        return _env("LCM_ALERT_WEBHOOK_URL") or ""

    @default("default_max_output_tokens")
    def _default_max_output(self) -> int:
        return int(_env("LCM_DEFAULT_MAX_OUTPUT_TOKENS") or 4096)

    @default("unpriced_reserve_usd")
    def _default_unpriced_reserve(self) -> float:
        return float(_env("LCM_UNPRICED_RESERVE_USD") or 0.0)

    @default("reconcile_interval_hours")
    def _default_reconcile_interval(self) -> float:
        return float(_env("LCM_RECONCILE_INTERVAL_HOURS") or 24.0)

    @default("db_path")
    def _default_db_path(self) -> str:
        return _env("LCM_DB_PATH") or str(Path(jupyter_data_dir()) / "lcm" / "lcm.sqlite3")

    @default("redis_url")
    def _default_redis_url(self) -> str:
        return _env("LCM_REDIS_URL", "") or ""

    @default("openai_base_url")
    def _default_openai(self) -> str:
        return _env("LCM_OPENAI_BASE_URL") or DEFAULT_BASE_URLS["openai"]

    @default("anthropic_base_url")
    def _default_anthropic(self) -> str:
        return _env("LCM_ANTHROPIC_BASE_URL") or DEFAULT_BASE_URLS["anthropic"]

    @default("google_base_url")
    def _default_google(self) -> str:
        return _env("LCM_GOOGLE_BASE_URL") or DEFAULT_BASE_URLS["google"]

    @default("secret_key")
    def _default_secret_key(self) -> str:
        return _env("LCM_SECRET_KEY", "") or ""

    @default("secret_key_file")
    def _default_secret_key_file(self) -> str:
        return _env("LCM_SECRET_KEY_FILE") or str(Path(jupyter_data_dir()) / "lcm" / "secret.key")

    @default("upstream_connect_timeout")
    def _default_connect_timeout(self) -> float:
        return float(_env("LCM_UPSTREAM_CONNECT_TIMEOUT") or DEFAULT_CONNECT_TIMEOUT)

    @default("upstream_read_timeout")
    def _default_read_timeout(self) -> float:
        return float(_env("LCM_UPSTREAM_READ_TIMEOUT") or DEFAULT_READ_TIMEOUT)

    @default("max_request_body_bytes")
    def _default_max_body(self) -> int:
        return int(_env("LCM_MAX_REQUEST_BODY_BYTES") or DEFAULT_MAX_BODY_BYTES)

    def lcm_settings(self) -> Settings:
        """The traits as one checked Settings value."""
        return Settings(
            db_path=Path(self.db_path).expanduser(),
            secret_key_file=Path(self.secret_key_file).expanduser(),
            secret_key=self.secret_key or None,
            redis_url=self.redis_url or None,
            base_urls={
                "openai": self.openai_base_url,
                "anthropic": self.anthropic_base_url,
                "google": self.google_base_url,
            },
            connect_timeout=self.upstream_connect_timeout,
            read_timeout=self.upstream_read_timeout,
            max_body_bytes=self.max_request_body_bytes,
            redis_timeout=self.redis_timeout,
            budget_mode=self.budget_mode,
            locale=self.locale,
            alert_webhook_url=self.alert_webhook_url or None,
            default_max_output_tokens=self.default_max_output_tokens,
            unpriced_reserve_usd=self.unpriced_reserve_usd,
            reconcile_interval_seconds=self.reconcile_interval_hours * 3600,
            routing_min_confidence=self.routing_min_confidence,
            quality_threshold=self.quality_threshold,
            quality_min_ratings=self.quality_min_ratings,
            analytics_timezone=self.analytics_timezone,
            unmetered_endpoints=tuple(self.unmetered_endpoints),
            on_redis_outage=self.on_redis_outage,
            shutdown_grace_seconds=self.shutdown_grace_seconds,
            price_catalog_file=Path(self.price_catalog_file).expanduser()
            if self.price_catalog_file
            else None,
        )

    def initialize_settings(self) -> None:
        self.lcm = LCMServices(self.lcm_settings())

    def initialize_handlers(self) -> None:
        self.handlers.extend(proxy_handlers(self.lcm.pipeline))
        self.handlers.extend(api_handlers(self.lcm))
        self.handlers.extend(analytics_handlers(self.lcm))

    def _prepare_handlers(self) -> None:
        super()._prepare_handlers()
        # A base_url with escapes (JupyterHub's /user/a%40b/ for e-mail user names) reaches
        # the server unescaped from clients that normalize URLs (aiohttp, so google-genai):
        # route that spelling to the proxy too.
        base = self.serverapp.web_app.settings["base_url"]
        plain = unquote(base)
        if plain != base:
            rules = [
                (re.escape(plain.rstrip("/")) + pattern, handler, kwargs)
                for pattern, handler, kwargs in proxy_handlers(self.lcm.pipeline)
            ]
            self.serverapp.web_app.add_handlers(".*$", rules)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        await self.lcm.start()
        if self.gc_freeze:
            # The server's start-up objects (~240k) are rescanned by every full collection:
            # ~110 ms pauses under load. Freezing them cut p99 at 32 connections from
            # ~130 ms to ~30 ms and raised throughput 12% (tests/benchmarks/README.md).
            gc.freeze()
        # Kernels inherit the server's environment: this is how lcm_jupyter.client finds us.
        os.environ[URL_ENV] = serverapp.connection_url
        token = getattr(serverapp.identity_provider, "token", "")
        if token:
            os.environ[TOKEN_ENV] = token
        self.log.info(
            "lcm: proxy at %slcm/proxy/{openai,anthropic,google,v2}/", serverapp.connection_url
        )

    async def stop_extension(self) -> None:
        await self.lcm.stop()
