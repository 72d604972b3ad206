"""Zero-config metering of a server's kernels (`kernel_metering`): the official SDKs' own
environment variables point at the proxy, with a proxy key of the server's user.

Kernels inherit the server's environment. With `kernel_metering` on, at start the server
- takes the provider keys found in the standard variables (OPENAI_API_KEY, ...: how a
  spawner hands a team's keys to every user's server) out of its environment, so that no
  kernel started from now on sees them, and keeps them server-side as the provider keys of
  the user's kernel key;
- puts in their place the kernel key, and the proxy's URLs in the SDKs' base-URL
  variables, so `openai.OpenAI()`, `anthropic.Anthropic()`, `genai.Client()` and every
  library built on them are metered without a code change. A key or base URL the code
  passes itself still wins, as with any SDK.

The kernel key is derived from the secret (SecretBox.derive) and the user's name, so the
server makes the same key at every start, and every server of a team sharing the secret
the same one for a user, while only its hash is stored (as for every key). Revoked by an
admin, it stays revoked: the kernels' calls are then refused.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import MutableMapping

from ..core.keys import KEY_PREFIX, derived_proxy_key, hash_key
from ..core.keyspec import validate_key_fields
from ..core.secretbox import SecretBox
from ..store.db import Database
from ..store.keys import create_key, find_key_by_hash, update_key

# The variables each official SDK reads: its key(s), and its base URL with the proxy's path.
PROVIDER_KEY_ENV = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "google": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
BASE_URL_ENV = {
    "openai": ("OPENAI_BASE_URL", "lcm/proxy/openai/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", "lcm/proxy/anthropic"),
    "google": ("GOOGLE_GEMINI_BASE_URL", "lcm/proxy/google"),
}


def server_user() -> str:
    """Whose server this is: JupyterHub's user, else the process's."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def take_provider_keys(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Remove every provider key variable from `environ`; {provider: key} of those set (a
    proxy key left there by a server this one was started from is not a provider key)."""
    found: dict[str, str] = {}
    for provider, names in PROVIDER_KEY_ENV.items():
        for name in names:
            value = environ.pop(name, "").strip()
            if value and not value.startswith(KEY_PREFIX):
                found.setdefault(provider, value)
    return found


def ensure_kernel_key(
    db: Database, box: SecretBox, user: str, provider_keys: dict[str, str]
) -> tuple[str, int]:
    """The plain kernel key of `user` and its id, stored (created, or given the provider
    keys found now, or its owner) if it needs to be."""
    plain = derived_proxy_key(box.derive(f"kernel-key:{user}"))
    record = find_key_by_hash(db, box, hash_key(plain))
    if record is None:
        fields = {
            "name": f"kernels of {user}",
            "provider": "auto",
            "routing_mode": "off",
            "provider_api_keys": provider_keys,
        }
        record, _ = create_key(
            db, box, validate_key_fields(fields, partial=False), plain=plain, owner=user
        )
    elif any(record.provider_api_keys.get(p) != k for p, k in provider_keys.items()):
        update_key(db, box, record.id, {"provider_api_keys": provider_keys})
    if record.owner != user:  # made before keys had owners
        db.execute("UPDATE proxy_keys SET owner = ? WHERE id = ?", [user, record.id])
    return plain, record.id


def point_kernels(environ: MutableMapping[str, str], server_url: str, plain: str) -> None:
    """Set the SDKs' variables in `environ` (the server's: kernels inherit it)."""
    for name, path in BASE_URL_ENV.values():
        environ[name] = server_url + path
    for names in PROVIDER_KEY_ENV.values():
        for name in names:
            environ[name] = plain
