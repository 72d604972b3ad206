"""Errors the proxy answers with, and their rendering in each provider's own shape.

One class tree, one renderer. Each error knows its HTTP status and a short code;
`render_error` turns it into the JSON that provider's SDK expects, so that
`openai`, `anthropic` and `google-genai` raise their usual exception types::

    LCMError (500)
    ├── BadRequest (400)
    │   ├── InvalidJSON (400)
    │   ├── ModelNotPriced (400)
    │   └── ProviderNotDetected (400)
    ├── AuthenticationFailed (401)
    ├── PermissionDenied (403)
    │   └── EndpointNotMetered (403)
    ├── NotFound (404)
    ├── PayloadTooLarge (413)
    ├── RateLimited (429)
    ├── BudgetExceeded (429)
    ├── LimitsUnavailable (503)
    ├── UpstreamUnavailable (502)
    └── UpstreamTimeout (504)
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .providers import ADAPTERS, Adapter


class LCMError(Exception):
    """Base of every error the proxy answers with itself."""

    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = dict(headers or {})


class BadRequest(LCMError):
    """The request cannot be understood as sent."""

    status = 400
    code = "invalid_request"


class InvalidJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "invalid_json"


class ProviderNotDetected(BadRequest):
    """The unified route could not tell which provider a request is for."""

    code = "provider_not_detected"


class ModelNotPriced(BadRequest):
    """A budgeted key called a model the price table cannot price: its cost could not be
    held against the budget, so the call is refused rather than let through uncounted."""

    code = "model_not_priced"


class AuthenticationFailed(LCMError):
    """The proxy key is missing, unknown or revoked."""

    status = 401
    code = "invalid_api_key"


class PermissionDenied(LCMError):
    """The proxy key is valid but may not make this call."""

    status = 403
    code = "permission_denied"


class EndpointNotMetered(PermissionDenied):
    """A budgeted key called an endpoint that costs money but is not metered here."""

    code = "endpoint_not_metered"


class NotFound(LCMError):
    """The resource does not exist."""

    status = 404
    code = "not_found"


class PayloadTooLarge(LCMError):
    """The request body is over the configured limit."""

    status = 413
    code = "request_too_large"


class RateLimited(LCMError):
    """The key's rate limit is exhausted for now."""

    status = 429
    code = "rate_limit_exceeded"


class BudgetExceeded(LCMError):
    """The key's monthly budget is exhausted."""

    status = 429
    code = "budget_exceeded"


class LimitsUnavailable(LCMError):
    """The key's limits cannot be checked now (Redis away, and the server set to refuse)."""

    status = 503
    code = "limits_unavailable"


class UpstreamUnavailable(LCMError):
    """The provider could not be reached."""

    status = 502
    code = "upstream_unreachable"


class UpstreamTimeout(LCMError):
    """The provider did not answer in time."""

    status = 504
    code = "upstream_timeout"


def error_payload(provider: str | None, err: LCMError, request_id: str = "") -> dict:
    """The error as a JSON object in `provider`'s shape (OpenAI's when unknown)."""
    return _adapter(provider).error_payload(
        err.status, err.message, err.code, err.param, request_id
    )


def render_error(provider: str | None, err: LCMError, request_id: str = "") -> bytes:
    """The error's response body in `provider`'s shape."""
    return json.dumps(error_payload(provider, err, request_id)).encode()


def render_stream_error(provider: str | None, err: LCMError, request_id: str = "") -> bytes:
    """The error as one more event of an SSE stream whose headers are already sent.

    Each SDK raises when it reads this, instead of taking a cut stream as complete.
    """
    return _adapter(provider).stream_error(error_payload(provider, err, request_id))


def _adapter(provider: str | None) -> Adapter:
    return ADAPTERS.get(provider or "openai") or ADAPTERS["openai"]
