"""Numbered schema migrations. Never renumber or edit one that has shipped: add a new one."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from .rollup import backfill_dims, create_and_backfill, create_summaries

if TYPE_CHECKING:
    from .db import SQLiteDatabase

migrations = Migrations("lcm_jupyter")

# The same on both engines (migrations_pg.py runs it too; PostgreSQL's REAL is 4 bytes).
SERVERS_TABLE = (
    "CREATE TABLE lcm_servers "
    "(server_id TEXT NOT NULL PRIMARY KEY, redis_ok_at DOUBLE PRECISION NOT NULL)"
)
# Who made each call, from which notebook and cell, and the budgets of a team's users and
# groups (0012, both engines). "user" is quoted: PostgreSQL reserves the word.
TEAM_SQL = (
    'ALTER TABLE proxy_logs ADD COLUMN "user" TEXT',
    "ALTER TABLE proxy_logs ADD COLUMN notebook TEXT",
    "ALTER TABLE proxy_logs ADD COLUMN cell TEXT",
    # The team budgets a call was charged to (",3,5,"): what they are rebuilt from, whatever
    # the groups are by then.
    "ALTER TABLE proxy_logs ADD COLUMN team_budget_ids TEXT",
    'CREATE INDEX idx_proxy_logs_user_created ON proxy_logs ("user", created_at)',
    "ALTER TABLE proxy_keys ADD COLUMN owner TEXT",
    """
    CREATE TABLE team_budgets (
        id {id},
        kind TEXT NOT NULL CHECK (kind IN ('user', 'group')),
        name TEXT NOT NULL,
        monthly_budget_usd DOUBLE PRECISION,
        budget_alerts_enabled INTEGER NOT NULL DEFAULT 1,
        budget_alert_thresholds TEXT NOT NULL DEFAULT '[80, 90, 100]',
        updated_at TEXT NOT NULL,
        UNIQUE (kind, name)
    )
    """,
)


@migrations(name="0001_initial")
def m0001_initial(db: Database) -> None:
    """Keys, the call log, price overrides and alerts."""
    db.execute(
        """
        CREATE TABLE proxy_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            key_prefix TEXT NOT NULL,
            provider TEXT NOT NULL DEFAULT 'auto'
                CHECK (provider IN ('openai', 'anthropic', 'google', 'auto')),
            provider_api_keys TEXT NOT NULL DEFAULT '{}',
            monthly_budget_usd REAL,
            budget_alerts_enabled INTEGER NOT NULL DEFAULT 1,
            budget_alert_thresholds TEXT NOT NULL DEFAULT '[80, 90, 100]',
            rate_limit_rpm INTEGER,
            routing_mode TEXT NOT NULL DEFAULT 'auto'
                CHECK (routing_mode IN ('auto', 'manual', 'off')),
            routing_rules TEXT NOT NULL DEFAULT '[]',
            cache_ttl_seconds INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            revoked_at TEXT
        )
        """
    )
    db.execute(
        """
        CREATE TABLE proxy_logs (
            id TEXT PRIMARY KEY,
            key_id INTEGER,
            provider TEXT,
            endpoint TEXT,
            method TEXT,
            requested_model TEXT,
            model TEXT,
            stream INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            cache_write_tokens INTEGER NOT NULL DEFAULT 0,
            reasoning_tokens INTEGER NOT NULL DEFAULT 0,
            usage_json TEXT,
            cost_usd REAL,
            unpriced INTEGER NOT NULL DEFAULT 0,
            pricing_version TEXT,
            savings_usd REAL NOT NULL DEFAULT 0,
            latency_ms REAL,
            ttfb_ms REAL,
            status INTEGER,
            error TEXT,
            cache_hit INTEGER NOT NULL DEFAULT 0,
            routing_decision TEXT,
            feedback INTEGER CHECK (feedback IN (-1, 1)),
            feedback_comment TEXT,
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_proxy_logs_created ON proxy_logs (created_at)")
    db.execute("CREATE INDEX idx_proxy_logs_key_created ON proxy_logs (key_id, created_at)")
    db.execute(
        """
        CREATE TABLE model_pricing (
            model TEXT PRIMARY KEY,
            provider TEXT NOT NULL,
            price_json TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key_id INTEGER NOT NULL,
            month TEXT NOT NULL,
            threshold INTEGER NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            created_at TEXT NOT NULL,
            read_at TEXT,
            UNIQUE (key_id, month, threshold)
        )
        """
    )


@migrations(name="0002_feedback_index")
def m0002_feedback_index(db: Database) -> None:
    """Rated calls are few: a partial index finds them without scanning the log."""
    db.execute(
        "CREATE INDEX idx_proxy_logs_feedback ON proxy_logs (feedback) WHERE feedback IS NOT NULL"
    )


@migrations(name="0003_usage_estimated")
def m0003_usage_estimated(db: Database) -> None:
    """Calls whose token count never arrived are logged with an estimate, flagged."""
    db.execute("ALTER TABLE proxy_logs ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0")


@migrations(name="0004_usage_rollup")
def m0004_usage_rollup(db: Database) -> None:
    """Usage per 15 minutes and key/provider/model for analytics, filled from the log so far."""
    create_and_backfill(cast("SQLiteDatabase", db))


@migrations(name="0005_usage_summaries")
def m0005_usage_summaries(db: Database) -> None:
    """Usage per UTC day and per dimension for long analytics periods, filled from the rollup."""
    create_summaries(cast("SQLiteDatabase", db))


@migrations(name="0006_priced_components")
def m0006_priced_components(db: Database) -> None:
    """Server-tool fees as a cost component of their own; billed-once references.

    `billed_refs` names what may be billed only once however often it is fetched (a
    background response, a batch's results): the first call that claims it is billed.
    """
    db.execute("ALTER TABLE proxy_logs ADD COLUMN tool_fees_usd REAL NOT NULL DEFAULT 0")
    db.execute(
        """
        CREATE TABLE billed_refs (
            ref TEXT PRIMARY KEY,
            log_id TEXT NOT NULL,
            key_id INTEGER,
            created_at TEXT NOT NULL
        )
        """
    )


@migrations(name="0007_shadow_routing")
def m0007_shadow_routing(db: Database) -> None:
    """What auto routing would have saved on calls made with routing off, per call.

    The partial index holds only the calls it would have routed: the per-key totals the
    dashboard shows read those, not the whole log.
    """
    db.execute("ALTER TABLE proxy_logs ADD COLUMN shadow_savings_usd REAL NOT NULL DEFAULT 0")
    db.execute(
        "CREATE INDEX idx_proxy_logs_shadow ON proxy_logs (key_id, created_at) "
        "WHERE shadow_savings_usd > 0"
    )


@migrations(name="0008_shared_counters")
def m0008_shared_counters(db: Database) -> None:
    """Holds and rate windows the servers share in the database while Redis is away."""
    db.execute(
        """
        CREATE TABLE shared_holds (
            call_id TEXT PRIMARY KEY,
            key_id INTEGER NOT NULL,
            month TEXT NOT NULL,
            units INTEGER NOT NULL,
            settled INTEGER NOT NULL DEFAULT 0,
            expires_at REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX idx_shared_holds_key ON shared_holds (key_id, month)")
    db.execute(
        "CREATE TABLE shared_rate "
        "(key_id INTEGER NOT NULL, call_id TEXT NOT NULL, at REAL NOT NULL)"
    )
    db.execute("CREATE INDEX idx_shared_rate_key ON shared_rate (key_id, at)")


@migrations(name="0009_log_filters")
def m0009_log_filters(db: Database) -> None:
    """The log listing filtered by model, newest first, without reading the whole log.

    The expression is the one the listing filters on (store/logs.py's MODEL_SQL, the model
    the rollups count a call under); SQLite uses an expression index only for the same text.
    """
    db.execute(
        "CREATE INDEX idx_proxy_logs_model_created ON proxy_logs "
        "(COALESCE(model, requested_model, ''), created_at)"
    )


@migrations(name="0010_meta")
def m0010_meta(db: Database) -> None:
    """Facts about the database itself: the check value of the secret its provider keys are
    encrypted with (store/secret.py)."""
    db.execute("CREATE TABLE lcm_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")


@migrations(name="0011_servers")
def m0011_servers(db: Database) -> None:
    """Which servers count on Redis now (store/counters_db.py): a server that lost Redis
    while others still count there must not decide limits alone in the database."""
    db.execute(SERVERS_TABLE)


@migrations(name="0012_team")
def m0012_team(db: Database) -> None:
    """Attribution of calls to user, notebook and cell; budgets per user and per group.

    The rollups gain two dimensions, `user` and `notebook`: the calls logged before have
    neither, so they are backfilled under '' (store/rollup.py `backfill_dims`)."""
    for sql in TEAM_SQL:
        db.execute(sql.format(id="INTEGER PRIMARY KEY AUTOINCREMENT"))
    backfill_dims(cast("SQLiteDatabase", db))
