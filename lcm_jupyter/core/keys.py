"""Proxy keys: making them, hashing them, finding them in a request, masking secrets.

A proxy key is `lcm-` followed by 32 random bytes (urlsafe base64). Only its
sha256 is stored; the plain key is shown once, when it is made.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qsl

KEY_PREFIX = "lcm-"
_RANDOM_BYTES = 32
DISPLAY_PREFIX_LEN = 12


def generate_proxy_key() -> str:
    """A new plain proxy key."""
    return KEY_PREFIX + secrets.token_urlsafe(_RANDOM_BYTES)


def derived_proxy_key(material: bytes) -> str:
    """A plain proxy key made from 32 secret bytes (SecretBox.derive) instead of at random."""
    return KEY_PREFIX + base64.urlsafe_b64encode(material[:_RANDOM_BYTES]).rstrip(b"=").decode()


def hash_key(plain: str) -> str:
    """The stored form of a proxy key (hex sha256).

    A fast hash is right here: keys carry 256 random bits, so there is nothing
    for a slow password hash to protect against, and lookups are on the hot path.
    """
    return hashlib.sha256(plain.encode()).hexdigest()


def display_prefix(plain: str) -> str:
    """The part of a proxy key that may be shown to tell keys apart."""
    return plain[:DISPLAY_PREFIX_LEN]


def mask_secret(secret: str) -> str:
    """A provider key as it may be shown: its first and last 4 characters at most."""
    if len(secret) <= 12:
        return "*" * len(secret)
    return f"{secret[:4]}...{secret[-4:]}"


def key_from_request(headers: Mapping[str, str], query: str) -> str | None:
    """The proxy key wherever an SDK sends it.

    `headers` has lower-case names. OpenAI and the current Anthropic SDK send
    `Authorization: Bearer`, older Anthropic ones `x-api-key`, google-genai
    `x-goog-api-key`, and plain Gemini REST calls `?key=`.
    """
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    for name in ("x-api-key", "x-goog-api-key"):
        value = headers.get(name)
        if value:
            return value.strip()
    if query and "key=" in query:
        for name, value in parse_qsl(query, keep_blank_values=False):
            if name == "key":
                return value
    return None
