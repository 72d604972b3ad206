"""lcm-jupyter: an LLM cost manager that lives inside Jupyter.

Importing this package is cheap: the server extension, the store and the
widgets are imported only when used.
"""

from __future__ import annotations

from ._version import __version__

__all__ = [
    "LCMClient",
    "__version__",
    "anthropic_client",
    "genai_client",
    "openai_client",
    "proxy_url",
    "serve",
]

# The kernel-side helpers, imported on first use (httpx and the SDKs are not cheap).
_CLIENT_NAMES = frozenset(
    {"LCMClient", "anthropic_client", "genai_client", "openai_client", "proxy_url"}
)


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    if name == "serve":
        from .kernel_server import serve

        return serve
    raise AttributeError(f"module 'lcm_jupyter' has no attribute {name!r}")


def _jupyter_server_extension_points() -> list[dict]:
    from .server.app import LCMExtension

    return [{"module": "lcm_jupyter.server.app", "app": LCMExtension}]


def load_ipython_extension(ipython) -> None:
    """`%load_ext lcm_jupyter`: register the `%lcm` magic (IPython is imported only now)."""
    from .magics import load_ipython_extension as load

    load(ipython)
