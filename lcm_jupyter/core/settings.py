"""The extension's options, declared once, and the frozen Settings the core reads.

`OPTIONS` is the one declaration of the configuration: each option's name (the trait
`LCMExtension.<name>`, and `LCM_<NAME>` its environment variable), type, default, help
and check. The traits are made from it (`server/config.py`), so `jupyter_server_config.py`,
the `LCM_*` variables, `jupyter lcm` and `--help-all` all read the same table; `Settings`,
the frozen value the pipeline takes, gets its defaults and checks from it too. Adding an
option is one row here and, when the core reads it, one typed field of `Settings`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .difficulty import THRESHOLD
from .providers import PROVIDERS

ENV_PREFIX = "LCM_"
DATA_DIR = "{jupyter data dir}"  # how help and docs name where Path defaults live


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _share(value: float) -> str | None:
    return None if 0 <= value <= 1 else "must be between 0 and 1"


def _http_url(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


def _postgres_url(value: str) -> str | None:
    if value.startswith(("postgresql://", "postgres://")):
        return None
    return "must be a postgresql:// URL (empty: SQLite at db_path)"


def _group_entry(entry: str) -> tuple[str, str] | None:
    group, sep, user = entry.partition(":")
    return (group.strip(), user.strip()) if sep and group.strip() and user.strip() else None


def _team_groups(value: tuple[str, ...]) -> str | None:
    bad = [e for e in value if _group_entry(e) is None]
    return f"entries must be 'group:user', not {', '.join(map(repr, bad))}" if bad else None


def parse_groups(entries: Iterable[str]) -> dict[str, set[str]]:
    """`team_groups` ("group:user" each, checked as the option is) as {group: {users}}."""
    groups: dict[str, set[str]] = {}
    for entry in entries:
        found = _group_entry(entry)
        if found is None:
            raise ValueError(f"team_groups: {entry!r} is not 'group:user'")
        groups.setdefault(found[0], set()).add(found[1])
    return groups


def _timezone(value: str) -> str | None:
    from .analytics import load_timezone  # zoneinfo, only when a timezone is checked

    try:
        load_timezone(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True, slots=True)
class Option:
    """One option of the extension: a trait, its environment variable, a Settings field.

    `type` is str, int, float, bool, tuple (of str: a list trait, comma-separated in its
    environment variable) or Path, whose default is relative to the Jupyter data
    directory. A str option whose default is empty means "none" when empty. `field` names
    the Settings field it fills when that differs from `name` ("base_urls.openai": one
    entry of a mapping; None: no field, the server reads the trait itself); `scale`
    multiplies the value on the way (hours to seconds).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    check: Callable[[Any], str | None] | None = None
    required: bool = False
    field: str | None = ""
    scale: float = 1

    @property
    def env(self) -> str:
        """The environment variable read when no config sets the option."""
        return ENV_PREFIX + self.name.upper()

    @property
    def field_name(self) -> str | None:
        """The Settings field this option fills (None: none)."""
        return self.name if self.field == "" else self.field

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` for this option, or None."""
        if value is None or value == "":
            return "must be set" if self.required else None
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(map(repr, self.choices))}, not {value!r}"
        return self.check(value) if self.check is not None else None


OPTIONS: tuple[Option, ...] = (
    Option("db_path", Path, "lcm/lcm.sqlite3", "SQLite database of keys and call logs."),
    Option(
        "db_url",
        str,
        "",
        "PostgreSQL database shared by every server of a team (postgresql://user:password@"
        "host:5432/dbname); empty: SQLite at db_path.",
        check=_postgres_url,
    ),
    Option(
        "redis_url",
        str,
        "",
        "Redis URL shared by all servers (empty: in-memory counters, this process only).",
    ),
    *(
        Option(
            f"{provider}_base_url",
            str,
            origin,
            f"{title} API origin that lcm/proxy/{provider}/ forwards to (a trailing version "
            "segment such as /v1 is not doubled).",
            check=_http_url,
            required=True,
            field=f"base_urls.{provider}",
        )
        for provider, title, origin in (
            ("openai", "OpenAI", "https://api.openai.com"),
            ("anthropic", "Anthropic", "https://api.anthropic.com"),
            ("google", "Gemini", "https://generativelanguage.googleapis.com"),
        )
    ),
    Option(
        "secret_key",
        str,
        "",
        "Fernet key that encrypts provider API keys at rest; every server sharing a "
        "database must share it. Empty: a key generated once into secret_key_file.",
    ),
    Option(
        "secret_key_file",
        Path,
        "lcm/secret.key",
        "Where the generated secret key lives (mode 0600).",
    ),
    Option(
        "upstream_connect_timeout",
        float,
        10.0,
        "Seconds to connect to a provider.",
        check=_positive,
        field="connect_timeout",
    ),
    Option(
        "upstream_read_timeout",
        float,
        # Between two bytes of an answer: reasoning models may think for minutes first.
        600.0,
        "Seconds a provider may stay silent (before its answer or between stream chunks).",
        check=_positive,
        field="read_timeout",
    ),
    Option(
        "max_request_body_bytes",
        int,
        32 * 1024 * 1024,
        "Largest request body accepted (413 above).",
        check=_positive,
        field="max_body_bytes",
    ),
    Option(
        "redis_timeout",
        float,
        # Tens of ms: a slow Redis must not stall calls; not less, or a GC pause trips the
        # breaker.
        0.1,
        "Seconds a Redis call may take before the outage policy (on_redis_outage) answers.",
        check=_positive,
    ),
    Option(
        "budget_mode",
        str,
        "hard",
        "hard: reserve each call's worst-case cost so concurrent calls cannot overspend; "
        "soft: check settled spend only.",
        choices=("hard", "soft"),
    ),
    Option("locale", str, "en", "Language of budget alerts.", choices=("en", "ko")),
    Option(
        "alert_webhook_url",
        str,
        "",
        "Slack-compatible webhook that budget alerts are POSTed to (empty: none).",
        check=_http_url,
    ),
    Option(
        "default_max_output_tokens",
        int,
        4096,
        "Output tokens reserved for a call that sets no max_tokens.",
        check=_positive,
    ),
    Option(
        "unpriced_reserve_usd",
        float,
        0.0,
        "USD held against the budget while a call to a model without a price runs (0: a "
        "budgeted key may not call a model without a price).",
        check=_not_negative,
    ),
    Option(
        "reconcile_interval_hours",
        float,
        24.0,
        "How often budget counters are rebuilt from the call log.",
        check=_positive,
        field="reconcile_interval_seconds",
        scale=3600,
    ),
    Option(
        "kernel_metering",
        bool,
        False,
        "Point the official SDKs in this server's kernels at the proxy with no code change: "
        "OPENAI_BASE_URL, ANTHROPIC_BASE_URL and GOOGLE_GEMINI_BASE_URL at lcm/proxy/, and a "
        "proxy key of this server's user in OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY "
        "and GOOGLE_API_KEY; provider keys found in those variables stay in the server (the "
        "key's provider keys) and never reach a kernel.",
        field=None,
    ),
    Option(
        "team_mode",
        bool,
        False,
        "A team on JupyterHub sharing db_url and redis_url: budgets per user and per hub group "
        "(set by admins), each user sees only their own calls and keys, only admins create "
        "keys, and kernels are metered (kernel_metering on).",
    ),
    Option(
        "team_admins",
        tuple,
        (),
        "Team mode: users who are lcm admins besides the hub's admins and holders of the hub "
        "scope custom:lcm:admin.",
    ),
    Option(
        "team_groups",
        tuple,
        (),
        "Team mode: group memberships as 'group:user' entries, besides the hub's groups (for a "
        "team without JupyterHub, or groups only lcm knows).",
        check=_team_groups,
    ),
    Option(
        "gc_freeze",
        bool,
        False,
        "Move the objects alive once the server has started out of the garbage collector's "
        "sight (gc.freeze), so full collections stop pausing every call (p99 at 32 "
        "connections ~130 ms -> ~30 ms in the proxy benchmark). Off by default: it affects "
        "every extension of the server, not only this one.",
        field=None,
    ),
    Option(
        "routing_min_confidence",
        float,
        round(1 - THRESHOLD, 4),  # the threshold chosen from the public evaluation
        "Auto routing moves a call down only when it is at least this sure the cheaper "
        "model suffices (1 - the learned difficulty score; the default is the threshold "
        "chosen from the public evaluation).",
        check=_share,
    ),
    Option(
        "quality_threshold",
        float,
        0.6,
        "A routed pair whose share of positive feedback falls below this stops being used "
        "by auto routing.",
        check=_share,
    ),
    Option(
        "quality_min_ratings",
        int,
        20,
        "Ratings a pair needs before the quality gate judges it.",
        check=_not_negative,
    ),
    Option(
        "analytics_timezone",
        str,
        "UTC",
        "IANA timezone whose calendar days analytics report (e.g. Asia/Seoul).",
        check=_timezone,
        required=True,
    ),
    Option(
        "on_redis_outage",
        str,
        "shared",
        "What answers for rate limits and budgets while Redis is away. 'shared': the "
        "database every server shares, one transaction a call: limits hold exactly across "
        "servers, at a database write per call. 'local': each server's own memory, rebuilt "
        "from the log: fast, but servers sharing Redis then each count alone (n servers may "
        "admit up to n times a limit). 'refuse': calls of keys with limits get 503 until "
        "Redis is back.",
        choices=("shared", "local", "refuse"),
    ),
    Option(
        "shutdown_grace_seconds",
        float,
        30.0,
        "When the server stops (SIGTERM), calls in flight, streams included, get this long "
        "to finish before they are cancelled; new calls get a 503 with Retry-After meanwhile.",
        check=_not_negative,
    ),
    Option(
        "unmetered_endpoints",
        tuple,
        (),
        "Endpoints that cost money but are not metered (batch jobs, fine-tuning, vector "
        "stores, background responses: 'responses.background') that keys with a budget may "
        "still call, as globs of the logged endpoint name (v1/batches, v1/fine_tuning/*). "
        "Their cost is not held against the budget.",
    ),
    Option(
        "price_catalog_file",
        Path,
        "lcm/genai-prices.json",
        "The price catalog `jupyter lcm pricing update` stores; used instead of the "
        "bundled genai-prices data when present.",
    ),
)
OPTION: Mapping[str, Option] = {o.name: o for o in OPTIONS}


def _default(name: str) -> Any:
    return OPTION[name].default


def _default_base_urls() -> dict[str, str]:
    return {p: _default(f"{p}_base_url") for p in PROVIDERS}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the pipeline needs to know, converted and checked once.

    Built from the traits by `Settings.from_options`; made directly in tests, where every
    field but the two paths defaults to its option's default.
    """

    db_path: Path
    secret_key_file: Path
    secret_key: str | None = None
    db_url: str | None = None
    redis_url: str | None = None
    base_urls: Mapping[str, str] = field(default_factory=_default_base_urls)
    connect_timeout: float = _default("upstream_connect_timeout")
    read_timeout: float = _default("upstream_read_timeout")
    max_body_bytes: int = _default("max_request_body_bytes")
    # Not options (tuned by measurement): how long a key record is trusted before it is
    # read again (a key revoked on another server sharing the database is refused here
    # within this time), and the log writer's batches.
    key_cache_seconds: float = 1.0
    log_batch_size: int = 500
    log_flush_interval: float = 0.25
    redis_timeout: float = _default("redis_timeout")
    budget_mode: str = _default("budget_mode")
    locale: str = _default("locale")
    alert_webhook_url: str | None = None
    default_max_output_tokens: int = _default("default_max_output_tokens")
    unpriced_reserve_usd: float = _default("unpriced_reserve_usd")
    reconcile_interval_seconds: float = (
        _default("reconcile_interval_hours") * OPTION["reconcile_interval_hours"].scale
    )
    routing_min_confidence: float = _default("routing_min_confidence")
    quality_threshold: float = _default("quality_threshold")
    quality_min_ratings: int = _default("quality_min_ratings")
    analytics_timezone: str = _default("analytics_timezone")
    on_redis_outage: str = _default("on_redis_outage")
    shutdown_grace_seconds: float = _default("shutdown_grace_seconds")
    unmetered_endpoints: tuple[str, ...] = _default("unmetered_endpoints")
    # None: the bundled catalog only.
    price_catalog_file: Path | None = None
    team_mode: bool = False
    team_admins: tuple[str, ...] = ()
    team_groups: tuple[str, ...] = ()

    @property
    def store_target(self) -> Path | str:
        """Where keys and logs live: the PostgreSQL URL, else the SQLite file."""
        return self.db_url or self.db_path

    def __post_init__(self) -> None:
        for option in OPTIONS:
            if option.field_name is None:
                continue
            problem = option.problem(self._value_of(option))
            if problem is not None:
                raise ValueError(f"{option.name} {problem}")

    def _value_of(self, option: Option) -> Any:
        """The option's value as configured (the inverse of `from_options`), for its check."""
        name = option.field_name or option.name
        if "." in name:
            mapping, key = name.split(".", 1)
            return getattr(self, mapping).get(key)
        value = getattr(self, name)
        return value / option.scale if option.scale != 1 and value is not None else value

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from option values by option name (the traits' values), converted:
        Path options to Paths, empty optional strings to None, hours to seconds."""
        fields: dict[str, Any] = {}
        for option in OPTIONS:
            name = option.field_name
            if name is None or option.name not in values:
                continue
            value = values[option.name]
            if option.type is Path:
                value = Path(value).expanduser() if value else None
            elif option.type is str and option.default == "" and value == "":
                value = None
            elif option.type is tuple:
                value = tuple(value)
            elif option.scale != 1:
                value = value * option.scale
            if "." in name:
                mapping, key = name.split(".", 1)
                fields.setdefault(mapping, {})[key] = value
            else:
                fields[name] = value
        return cls(**fields)
