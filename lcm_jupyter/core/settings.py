"""The proxy's settings as one frozen value, made once from the extension's traits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .providers import PROVIDERS

DEFAULT_BASE_URLS: Mapping[str, str] = MappingProxyType(
    {
        "openai": "https://api.openai.com",
        "anthropic": "https://api.anthropic.com",
        "google": "https://generativelanguage.googleapis.com",
    }
)
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
# Between two bytes of an answer: reasoning models may think for minutes first.
DEFAULT_READ_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the pipeline needs to know, converted and checked once."""

    db_path: Path
    secret_key_file: Path
    secret_key: str | None = None
    redis_url: str | None = None
    base_urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_BASE_URLS))
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # How long a key record is trusted before it is read again: a key revoked on another
    # server (sharing the database) is refused here within this time.
    key_cache_seconds: float = 1.0
    log_batch_size: int = 500
    log_flush_interval: float = 0.25
    # Tens of ms: a slow Redis must not stall calls; not less, or a GC pause trips the breaker.
    redis_timeout: float = 0.1
    budget_mode: str = "hard"
    locale: str = "en"
    alert_webhook_url: str | None = None
    default_max_output_tokens: int = 4096
    unpriced_reserve_usd: float = 0.0
    reconcile_interval_seconds: float = 24 * 3600.0
    # Confidence that the cheaper model suffices (1 - the difficulty score) routing needs.
    routing_min_confidence: float = 0.75
    quality_threshold: float = 0.6
    quality_min_ratings: int = 20
    # IANA name; the days of analytics are calendar days there.
    analytics_timezone: str = "UTC"
    # While Redis is away: "shared" (the database all servers share decides, exactly),
    # "local" (this process's memory: fast, but each server counts alone) or "refuse".
    on_redis_outage: str = "shared"
    # At SIGTERM, how long calls in flight (streams included) may take to finish.
    shutdown_grace_seconds: float = 30.0
    # Endpoint names (globs) a key with a budget may call although nothing meters them.
    unmetered_endpoints: tuple[str, ...] = ()
    # Where `jupyter lcm pricing update` stores a newer price catalog (None: bundled only).
    price_catalog_file: Path | None = None

    def __post_init__(self) -> None:
        missing = [p for p in PROVIDERS if not self.base_urls.get(p)]
        if missing:
            raise ValueError(f"no base URL for provider(s): {', '.join(missing)}")
        if self.max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be positive")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("upstream timeouts must be positive")
        if self.budget_mode not in ("hard", "soft"):
            raise ValueError("budget_mode must be 'hard' or 'soft'")
        if self.on_redis_outage not in ("shared", "local", "refuse"):
            raise ValueError("on_redis_outage must be 'shared', 'local' or 'refuse'")
        if self.shutdown_grace_seconds < 0:
            raise ValueError("shutdown_grace_seconds must not be negative")
        if self.redis_timeout <= 0 or self.reconcile_interval_seconds <= 0:
            raise ValueError("redis_timeout and reconcile_interval_seconds must be positive")
