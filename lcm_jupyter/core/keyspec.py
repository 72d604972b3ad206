"""The proxy key's fields, declared once, and their checks.

`KEY_FIELDS` is the one declaration of what a client may set on a key: each field's name
(the REST API's and the column's), default on create, check, how people name it, how it
is stored, and whether it is a number typed as text in the form or a `jupyter lcm keys
create` flag. The REST API validates with it (`validate_key_fields`), the store encodes
and decodes columns and builds the public record from it (store/keys.py), the key form
takes its labels, number fields and blank values from it (ui/keyform.py), and the CLI its
flags (cli/_keys.py). Adding a field is one row here, a migration adding its column, one
typed attribute of `store.keys.KeyRecord` (a test checks they agree) and, if the form
shows it, its widget.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .detect import provider_for_model
from .errors import BadRequest
from .settings import PROVIDERS

KEY_PROVIDERS = (*PROVIDERS, "auto")
ROUTING_MODES = ("auto", "manual", "off")
RULE_CONDITIONS = ("always", "simple-only", "short-only")
DEFAULT_THRESHOLDS = (80, 90, 100)


def validate_key_fields(data: Any, *, partial: bool) -> dict[str, Any]:
    """The checked, normalized fields of `data`; BadRequest naming the first bad one.

    With `partial` (PATCH) only the fields present are returned; otherwise every
    editable field is, with defaults filled in and `name` required.
    """
    if not isinstance(data, Mapping):
        raise BadRequest("the request body must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
    out: dict[str, Any] = {}
    values = data if partial else {**defaults(), **data}
    for name, value in values.items():
        out[name] = FIELDS[name].check(value)
    if not partial and not out["name"]:
        raise BadRequest("name is required", param="name")
    return out


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise BadRequest("name must be a non-empty string of at most 200 characters", param="name")
    return value.strip()


def _provider(value: Any) -> str:
    if value not in KEY_PROVIDERS:
        raise BadRequest(f"provider must be one of {', '.join(KEY_PROVIDERS)}", param="provider")
    return value


_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,1024}")


def _provider_api_keys(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise BadRequest(
            "provider_api_keys must be an object {provider: api_key}", param="provider_api_keys"
        )
    for provider, key in value.items():
        if provider not in PROVIDERS:
            raise BadRequest(
                f"provider_api_keys: unknown provider {provider!r} "
                f"(expected {', '.join(PROVIDERS)})",
                param="provider_api_keys",
            )
        if not isinstance(key, str) or not key.strip():
            raise BadRequest(
                f"provider_api_keys.{provider} must be a non-empty string",
                param="provider_api_keys",
            )
        if not _HEADER_SAFE.fullmatch(key.strip()):
            # It goes out in an HTTP header: a line break or a control character would
            # break every call made with it.
            raise BadRequest(
                f"provider_api_keys.{provider} must be printable ASCII without spaces or "
                "line breaks (check for a stray newline from copy and paste)",
                param="provider_api_keys",
            )
    return {p: k.strip() for p, k in value.items()}


def _optional_number(name: str, *, upper: float, integer: bool = False, positive: bool = False):
    def check(value: Any) -> float | int | None:
        if value is None:
            return None
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if (
            isinstance(value, bool)
            or not ok
            or not math.isfinite(value)
            or value < 0
            or value > upper
            or (positive and value == 0)
        ):
            kind = "a whole number" if integer else "a number"
            low = "above 0" if positive else "from 0"
            raise BadRequest(f"{name} must be null or {kind} {low} to {upper:g}", param=name)
        return value

    return check


def _bool(name: str):
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false", param=name)
        return value

    return check


def _thresholds(value: Any) -> list[int]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(t, int) and not isinstance(t, bool) and 0 < t <= 1000 for t in value)
    ):
        raise BadRequest(
            "budget_alert_thresholds must be a non-empty list of percentages, e.g. [80, 90, 100]",
            param="budget_alert_thresholds",
        )
    return sorted(set(value))


def _routing_mode(value: Any) -> str:
    if value not in ROUTING_MODES:
        raise BadRequest(
            f"routing_mode must be one of {', '.join(ROUTING_MODES)}", param="routing_mode"
        )
    return value


def _routing_rules(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise BadRequest("routing_rules must be a list", param="routing_rules")
    rules = []
    for i, rule in enumerate(value):
        if not isinstance(rule, Mapping):
            raise BadRequest(f"routing_rules[{i}] must be an object", param="routing_rules")
        from_model, to_model = rule.get("from_model"), rule.get("to_model")
        condition = rule.get("condition", "always")
        if (
            not isinstance(from_model, str)
            or not from_model
            or not isinstance(to_model, str)
            or not to_model
        ):
            raise BadRequest(
                f"routing_rules[{i}] needs from_model and to_model", param="routing_rules"
            )
        if condition not in RULE_CONDITIONS:
            raise BadRequest(
                f"routing_rules[{i}].condition must be one of {', '.join(RULE_CONDITIONS)}",
                param="routing_rules",
            )
        _same_provider(i, from_model, to_model)
        rules.append({"from_model": from_model, "to_model": to_model, "condition": condition})
    return rules


def _same_provider(i: int, from_model: str, to_model: str) -> None:
    """Refuse a rule whose target is another provider's model: a call keeps its provider's
    wire format, so routing could never apply it (it would be skipped on every call)."""
    pattern = from_model.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    source, target = provider_for_model(pattern), provider_for_model(to_model)
    if source and target and source != target:
        raise BadRequest(
            f"routing_rules[{i}]: {to_model} is a {target} model and {from_model} is {source}'s; "
            "a call can only be routed to a model of its own provider",
            param="routing_rules",
        )


def _cache_ttl(value: Any) -> int:
    # null means off, stored as 0
    return _optional_number("cache_ttl_seconds", upper=1e8, integer=True)(value) or 0


@dataclass(frozen=True, slots=True)
class KeyField:
    """One field a client may set on a proxy key.

    `storage`: how the column holds it ("value" as is, "json" text, "bool" 0/1, "secrets"
    a JSON object of provider -> encrypted key, shown masked). `number`: "int" or
    "float" for a number the form takes as text, blank meaning none (`blank` is what none
    is stored as). `choices`: the values it takes, when a fixed set. `flag`: the `jupyter
    lcm keys create` option that sets it, if any (`help` is that option's help).
    """

    name: str
    default: Any
    check: Callable[[Any], Any]
    label: str
    storage: str = "value"
    number: str | None = None
    blank: Any = None
    choices: tuple[str, ...] = ()
    flag: str | None = None
    help: str = ""


KEY_FIELDS: tuple[KeyField, ...] = (
    KeyField("name", None, _name, "name", help="What the key is for."),
    KeyField(
        "provider", "auto", _provider, "provider", choices=KEY_PROVIDERS, flag="provider",
        help="The provider the key is for (auto: any, detected per call).",
    ),
    KeyField("provider_api_keys", {}, _provider_api_keys, "provider API keys", storage="secrets"),
    # Bounds keep counters inside int64 (budgets are counted in 1e-10 USD units).
    KeyField(
        "monthly_budget_usd", None, _optional_number("monthly_budget_usd", upper=1e8),
        "monthly budget", number="float", flag="budget", help="Monthly budget, USD.",
    ),
    KeyField(
        "budget_alerts_enabled", True, _bool("budget_alerts_enabled"), "budget alerts",
        storage="bool",
    ),
    KeyField(
        "budget_alert_thresholds", list(DEFAULT_THRESHOLDS), _thresholds, "alert thresholds",
        storage="json",
    ),
    KeyField(
        "rate_limit_rpm", None,
        _optional_number("rate_limit_rpm", upper=1e7, integer=True, positive=True),
        "rate limit", number="int", flag="rpm", help="Requests per minute.",
    ),
    # Calls go through unchanged unless the user turns routing on (with its shadow savings
    # as the evidence): silent swaps break evaluations and reproducibility.
    KeyField(
        "routing_mode", "off", _routing_mode, "routing mode", choices=ROUTING_MODES,
        flag="routing",
        help="auto, manual (the key's rules) or off.",
    ),
    KeyField("routing_rules", [], _routing_rules, "routing rules", storage="json"),
    KeyField(
        "cache_ttl_seconds", 0, _cache_ttl, "response cache", number="int", blank=0,
        flag="cache-ttl", help="Seconds identical calls are answered from the cache (0: off).",
    ),
)  # fmt: skip
FIELDS: Mapping[str, KeyField] = {f.name: f for f in KEY_FIELDS}


def defaults() -> dict[str, Any]:
    """Every field's default on create (fresh copies: lists and dicts are not shared)."""
    return {f.name: copy.deepcopy(f.default) for f in KEY_FIELDS}
