"""The kernels' own credential: it opens this server's `lcm/api`, and nothing else.

Kernels inherit the server's environment. The server's own token (or a password login)
opens everything, contents, terminals and new kernels (code execution), so it is not
given to them: a password-only server has no token to give at all. Instead each server
process makes a random secret at start, puts it in its environment for kernels to inherit
(`LCM_KERNEL_TOKEN`, beside `LCM_SERVER_URL`) and accepts it only in the management and
analytics handlers (`LCMAPIHandler`), sent as `Authorization: lcm-kernel <secret>` (or as
`Authorization: token <secret>`, for code that passes it as a token).

Why it stays scoped: Jupyter's identity providers (the default one and JupyterHub's) read
only the `token`/`bearer` schemes, cookies and `?token=`, and compare a token with their
own, so every other handler of the server sees no credential at all; `LCMAPIHandler`
alone recognises the secret, and then authorises `lcm:*` resources only. A header that
browsers never send by themselves needs no XSRF or origin check, as with Jupyter's token.

It is neither a proxy key nor a provider key (those never go into a kernel's
environment): whoever holds it can do what the management API does (create and revoke
proxy keys, set budgets and prices, read the call log), but cannot read a provider key
(the API masks them), run code, read files or reach another server. It changes each time
the server starts, and is never logged.
"""

from __future__ import annotations

import hmac
import os
import secrets
from typing import Any

from jupyter_server.auth import Authorizer, IdentityProvider, User
from tornado import web

from .._env import KERNEL_AUTH_SCHEME, KERNEL_TOKEN_ENV, TOKEN_ENV, URL_ENV

SETTINGS_KEY = "lcm_kernel_credential"
"""Where the tornado application's settings keep the `KernelCredential` its handlers accept."""
KERNEL_USER = User(username="lcm-kernel", name="lcm-kernel", display_name="a kernel")


class KernelCredential:
    """A server's secret for its kernels; compared in constant time, never shown in a repr."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret or secrets.token_urlsafe(32)

    def matches(self, presented: str) -> bool:
        """True if `presented` is this secret."""
        return hmac.compare_digest(presented.encode(), self.secret.encode())

    @property
    def header(self) -> str:
        """The Authorization header value that presents it."""
        return f"{KERNEL_AUTH_SCHEME} {self.secret}"

    def __repr__(self) -> str:
        return "<KernelCredential>"


class LCMOnlyAuthorizer(Authorizer):
    """Allows the `lcm` and `lcm:*` resources, nothing else."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource == "lcm" or resource.startswith("lcm:")


class NoLogin(IdentityProvider):
    """Nobody logs in (for the kernel-hosted server): the kernel credential is the only way."""

    def get_user(self, handler: web.RequestHandler) -> None:
        return None


LCM_ONLY = LCMOnlyAuthorizer()


def kernel_user(handler: web.RequestHandler) -> User | None:
    """The kernel user if the request presents this server's kernel credential; None if it
    presents none (Jupyter's login applies then); 403 if it claims the scheme wrongly.

    Also taken as `Authorization: token <secret>` (`LCMClient(url, token=<secret>)`); a token
    that is not the secret is left to Jupyter's login, which may know it."""
    scheme, _, value = handler.request.headers.get("Authorization", "").strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    credential = handler.settings.get(SETTINGS_KEY)
    if scheme == KERNEL_AUTH_SCHEME:
        if credential is None or not value or not credential.matches(value):
            raise web.HTTPError(403, "not this server's kernel credential")
        return KERNEL_USER
    if scheme in ("token", "bearer") and value and credential is not None:
        return KERNEL_USER if credential.matches(value) else None
    return None


def give_to_kernels(serverapp: Any) -> KernelCredential:
    """Make the server's kernel credential, accept it on lcm/api, and put it (with the
    server's URL) in the environment kernels started from now on inherit."""
    credential = KernelCredential()
    serverapp.web_app.settings[SETTINGS_KEY] = credential
    os.environ[URL_ENV] = serverapp.connection_url
    os.environ[KERNEL_TOKEN_ENV] = credential.secret
    # The server's own token never goes to kernels; one inherited from elsewhere (this
    # server started from another's terminal) would be another server's, and win over ours.
    os.environ.pop(TOKEN_ENV, None)
    return credential
