"""The kernel-side client: reach the extension's REST API and proxy from notebook code.

With no arguments it finds the extension by itself: the extension puts its URL and a
credential of the kernels' own, good for its `lcm/api` only (`LCM_SERVER_URL`,
`LCM_KERNEL_TOKEN`), in the environment of the notebook server before kernels start, and
kernels inherit them; so it works on servers with a token, a password or JupyterHub alike.
A Jupyter token can be passed (`token=`) or set as `LCM_SERVER_TOKEN`; JupyterHub's
`JUPYTERHUB_API_TOKEN` is used when there is nothing else.

    from lcm_jupyter import client
    lcm = client.LCMClient()
    key = lcm.create_key(name="me", provider="auto", provider_api_keys={...})["key"]
    openai = client.openai_client(key)
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from ._env import HUB_TOKEN_ENV, KERNEL_AUTH_SCHEME, KERNEL_TOKEN_ENV, TOKEN_ENV, URL_ENV

PROVIDER_PATHS = {
    "openai": "lcm/proxy/openai/v1",
    "anthropic": "lcm/proxy/anthropic",
    "google": "lcm/proxy/google",
    "v2": "lcm/proxy/v2",
}


class LCMClientError(RuntimeError):
    """The extension answered with an error (its message and status are kept)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.param = param  # the request field the server named, when it named one


def server_url(url: str | None = None) -> str:
    """The notebook server's base URL (with base_url, ending in '/')."""
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise LCMClientError(
            0,
            f"lcm-jupyter extension not found: {URL_ENV} is not set in this kernel. Pass "
            "url= (the server's URL with its base_url), or start the proxy here with %lcm serve.",
        )
    return url if url.endswith("/") else url + "/"


def auth_headers(url: str | None = None, token: str | None = None) -> dict[str, str]:
    """The Authorization header LCMClient sends: `token` if given, else `LCM_SERVER_TOKEN`,
    else the kernel credential (`LCM_KERNEL_TOKEN`, only to the `LCM_SERVER_URL` it came
    with), else `JUPYTERHUB_API_TOKEN`; none if there is none of these."""
    env = os.environ
    token = token or env.get(TOKEN_ENV)
    if token:
        return {"Authorization": f"token {token}"}
    kernel_token = env.get(KERNEL_TOKEN_ENV)
    if kernel_token and (url is None or _same_server(url, env.get(URL_ENV))):
        return {"Authorization": f"{KERNEL_AUTH_SCHEME} {kernel_token}"}
    hub_token = env.get(HUB_TOKEN_ENV)
    return {"Authorization": f"token {hub_token}"} if hub_token else {}


def _same_server(url: str, env_url: str | None) -> bool:
    return env_url is not None and url.rstrip("/") == env_url.rstrip("/")


def _no_credential() -> str:
    if os.environ.get(KERNEL_TOKEN_ENV):
        return f"no credential sent: this kernel's is for {os.environ.get(URL_ENV)}; pass token="
    return f"no credential sent: {KERNEL_TOKEN_ENV} is not set here; pass token="


def proxy_url(provider: str, url: str | None = None) -> str:
    """The base URL to give an SDK for `provider` (openai, anthropic, google or v2)."""
    if provider not in PROVIDER_PATHS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDER_PATHS)}")
    return server_url(url) + PROVIDER_PATHS[provider]


def openai_client(key: str, *, url: str | None = None, **kwargs: Any):
    """An `openai.OpenAI` client that goes through the proxy with proxy key `key`."""
    import openai

    return openai.OpenAI(base_url=proxy_url("openai", url), api_key=key, **kwargs)


def anthropic_client(key: str, *, url: str | None = None, **kwargs: Any):
    """An `anthropic.Anthropic` client that goes through the proxy with proxy key `key`."""
    import anthropic

    return anthropic.Anthropic(base_url=proxy_url("anthropic", url), api_key=key, **kwargs)


def genai_client(key: str, *, url: str | None = None, **kwargs: Any):
    """A `google.genai.Client` that goes through the proxy with proxy key `key`."""
    from google import genai
    from google.genai import types

    options = types.HttpOptions(base_url=proxy_url("google", url))
    return genai.Client(api_key=key, http_options=options, **kwargs)


class LCMClient:
    """The management REST API (keys, logs, budgets, alerts, pricing, routing quality, and
    on JupyterHub the team: spend and budgets per user and group)."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        self.url = server_url(url)
        headers = auth_headers(url, token)
        self._http = httpx.Client(base_url=self.url + "lcm/api/", headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> LCMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None, **params: Any) -> Any:
        """One API call; the decoded JSON (or text for CSV), LCMClientError on an error."""
        params = {k: v for k, v in params.items() if v is not None}
        try:
            resp = self._http.request(method, path, json=json, params=params or None)
        except httpx.HTTPError as exc:
            raise LCMClientError(0, f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            param = None
            try:
                body = resp.json()
                error = body.get("error", body)
                message = error.get("message") if isinstance(error, dict) else str(error)
                param = error.get("param") if isinstance(error, dict) else None
            except ValueError:
                message = resp.text[:500]
            message = message or resp.reason_phrase
            if resp.status_code == 403 and "Authorization" not in self._http.headers:
                message += f" ({_no_credential()})"
            raise LCMClientError(resp.status_code, message, param)
        if resp.headers.get("content-type", "").startswith("text/csv"):
            return resp.text
        return resp.json()

    def status(self) -> dict:
        """Version, database path, counters backend (redis or memory), price-table version."""
        return self.request("GET", "status")

    # -- keys ------------------------------------------------------------------------------------

    def list_keys(self, *, include_revoked: bool = True) -> list[dict]:
        """All proxy keys (provider keys masked)."""
        flag = "true" if include_revoked else "false"
        return self.request("GET", "keys", include_revoked=flag)["keys"]

    def get_key(self, key_id: int) -> dict:
        """One key's record (provider keys masked)."""
        return self.request("GET", f"keys/{key_id}")

    def create_key(self, **fields: Any) -> dict:
        """Create a key; the answer holds the plain `key`, shown this once."""
        return self.request("POST", "keys", json=fields)

    def update_key(self, key_id: int, **fields: Any) -> dict:
        """Change a key's settings."""
        return self.request("PATCH", f"keys/{key_id}", json=fields)

    def revoke_key(self, key_id: int) -> dict:
        """Revoke a key (its logs stay)."""
        return self.request("DELETE", f"keys/{key_id}")

    # -- calls, money, routing -------------------------------------------------------------------

    def logs(
        self,
        *,
        key_id: int | None = None,
        limit: int = 100,
        before: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        status: str | int | None = None,
        start: str | None = None,
        end: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict]:
        """Logged calls, newest first, those the filters keep: `model`, `provider`, `status`
        (ok, error, cache_hit, 2xx..5xx or a code such as 429), days `start`..`end`
        (YYYY-MM-DD, inclusive, in the server's analytics timezone) or instants
        `since`..`until` (ISO 8601 with an offset; `until` excluded). `before`: the id of
        the last call of the previous page."""
        filters = {"model": model, "provider": provider, "status": status, "start": start}
        filters.update(end=end, since=since, until=until)
        return self.request("GET", "logs", key_id=key_id, limit=limit, before=before, **filters)[
            "logs"
        ]

    def log(self, log_id: str) -> dict:
        """One logged call by its id (`x-lcm-request-id`): every field the log keeps."""
        return self.request("GET", f"logs/{quote(log_id, safe='')}")

    def feedback(self, log_id: str, score: int, comment: str | None = None) -> dict:
        """Rate a call's answer (+1/-1); a second rating replaces the first."""
        body = {"score": score} if comment is None else {"score": score, "comment": comment}
        return self.request("POST", f"logs/{log_id}/feedback", json=body)

    def budget(self, key_id: int) -> dict:
        """This month's budget, spend, reservations and remainder of a key."""
        return self.request("GET", f"budgets/{key_id}")

    def budgets(self) -> list[dict]:
        """Every key's budget, spend, reservations and remainder this month (one call)."""
        return self.request("GET", "budgets")["budgets"]

    def reconcile(self, key_id: int | None = None) -> dict:
        """Rebuild budget counters from the call log; the drift per key."""
        return self.request("POST", "reconcile", json={} if key_id is None else {"key_id": key_id})

    def alerts(self, *, unread: bool = False, key_id: int | None = None) -> list[dict]:
        """Budget alerts, newest first."""
        return self.request("GET", "alerts", unread="true" if unread else None, key_id=key_id)[
            "alerts"
        ]

    def mark_alerts_read(self, ids: list[int] | None = None) -> int:
        """Mark alerts read (all when `ids` is None); how many changed."""
        body = {} if ids is None else {"ids": ids}
        return self.request("POST", "alerts/read", json=body)["marked_read"]

    def pricing(self) -> dict:
        """The price table in force."""
        return self.request("GET", "pricing")

    def set_prices(self, *prices: dict) -> dict:
        """Override prices (USD per million tokens)."""
        return self.request("PUT", "pricing", json={"models": list(prices)})

    def reset_price(self, model: str) -> dict:
        """Drop a price override: the bundled price (if any) applies again."""
        return self.request("DELETE", f"pricing/{quote(model, safe='')}")

    def routing_quality(self) -> dict:
        """Feedback scores per routed pair and intent."""
        return self.request("GET", "routing/quality")

    def timeseries(
        self,
        period: str | None = "30d",
        *,
        key_id: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        user: str | None = None,
        notebook: str | None = None,
        **params: Any,
    ) -> Any:
        """Cost, savings, requests and tokens per day (every day present), over the calls
        the filters keep: `key_id`, `provider`, `model`, `user` (a JupyterHub user's name)
        or `notebook` (its path). `start`/`end` (YYYY-MM-DD) with `period=None` for any
        days; `format="csv"` for CSV text."""
        filters = _filters(key_id, provider, model, user, notebook)
        return self.request("GET", "analytics/timeseries", period=period, **filters, **params)

    def breakdown(
        self,
        by: str = "model",
        period: str | None = "30d",
        *,
        key_id: int | None = None,
        provider: str | None = None,
        model: str | None = None,
        user: str | None = None,
        notebook: str | None = None,
        **params: Any,
    ) -> Any:
        """Cost and usage per model, provider, key, user or notebook, by cost, over the
        calls the filters keep (as `timeseries`); `limit`, and `format="csv"` for CSV text."""
        filters = _filters(key_id, provider, model, user, notebook)
        return self.request("GET", "analytics/breakdown", by=by, period=period, **filters, **params)

    def shadow_savings(self, period: str = "30d", **params: Any) -> Any:
        """Per key: what auto routing would have saved on calls made with routing off."""
        return self.request("GET", "analytics/shadow", period=period, **params)

    # -- teams (JupyterHub) ----------------------------------------------------------------------

    def team(self, month: str | None = None) -> dict:
        """A month's spend (default: this one; `month` is YYYY-MM) per user, with their
        top models and notebooks, and per group, each with its budget. A non-admin gets
        their own row and their groups; `admin` says which the caller is."""
        return self.request("GET", "team", month=month)

    def user_budgets(self) -> list[dict]:
        """Every user's monthly budget, spend, reservations and remainder this month (a
        non-admin: their own)."""
        return self.request("GET", "budgets/users")["budgets"]

    def group_budgets(self) -> list[dict]:
        """Every group's monthly budget, spend, reservations and remainder this month (a
        non-admin: their groups')."""
        return self.request("GET", "budgets/groups")["budgets"]

    def user_budget(self, name: str) -> dict:
        """One user's monthly budget, spend, reservations and remainder this month."""
        return self.request("GET", _budget_path("users", name))

    def group_budget(self, name: str) -> dict:
        """One group's monthly budget, spend, reservations and remainder this month."""
        return self.request("GET", _budget_path("groups", name))

    def set_user_budget(
        self,
        name: str,
        usd: float | None,
        *,
        thresholds: list[int] | None = None,
        alerts: bool | None = None,
    ) -> dict:
        """Set a user's monthly budget in USD (None: no budget) and, when given, its alert
        `thresholds` (percentages) and whether `alerts` fire; admins only (403 otherwise)."""
        body = _budget_body(usd, thresholds, alerts)
        return self.request("PUT", _budget_path("users", name), json=body)

    def set_group_budget(
        self,
        name: str,
        usd: float | None,
        *,
        thresholds: list[int] | None = None,
        alerts: bool | None = None,
    ) -> dict:
        """Set a group's monthly budget, shared by its members (as `set_user_budget`)."""
        body = _budget_body(usd, thresholds, alerts)
        return self.request("PUT", _budget_path("groups", name), json=body)


def _filters(
    key_id: int | None,
    provider: str | None,
    model: str | None,
    user: str | None,
    notebook: str | None,
) -> dict[str, Any]:
    """The analytics filters as query parameters (None ones are dropped by `request`)."""
    return {
        "key_id": key_id,
        "provider": provider,
        "model": model,
        "user": user,
        "notebook": notebook,
    }


def _budget_path(kind: str, name: str) -> str:
    # A hub group may have spaces and a user an "@": one path segment whatever the name.
    return f"budgets/{kind}/{quote(name, safe='')}"


def _budget_body(usd: float | None, thresholds: list[int] | None, alerts: bool | None) -> dict:
    body: dict[str, Any] = {"monthly_budget_usd": usd}
    if thresholds is not None:
        body["budget_alert_thresholds"] = list(thresholds)
    if alerts is not None:
        body["budget_alerts_enabled"] = alerts
    return body
