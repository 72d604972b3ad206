"""The Jupyter server extension: configuration, routes, start and stop."""

from __future__ import annotations

import gc
import os
import re
from urllib.parse import unquote

from jupyter_server._tz import utcnow
from jupyter_server.extension.application import ExtensionApp

from ..core.settings import Settings
from .analytics_handlers import analytics_handlers
from .api_handlers import api_handlers
from .config import LCMOptions, build_settings
from .kernel_auth import give_to_kernels
from .kernel_env import ensure_kernel_key, point_kernels, server_user, take_provider_keys
from .kernels import KernelBook, meter_each_kernel
from .proxy_handlers import kernel_handlers, proxy_handlers
from .services import LCMServices
from .team_handlers import team_handlers


class LCMExtension(ExtensionApp, LCMOptions):
    """LLM cost manager: proxies, prices and logs every LLM call made from notebooks.

    Its configuration is `LCMOptions`: one trait per option of `core.settings.OPTIONS`
    (`c.LCMExtension.db_path`, ..., each with its `LCM_*` environment variable as fallback).
    """

    name = "lcm_jupyter"
    load_other_extensions = True
    lcm: LCMServices  # set by initialize_settings

    def lcm_settings(self) -> Settings:
        """The traits as one checked Settings value."""
        return build_settings(self)

    def initialize_settings(self) -> None:
        self.lcm = LCMServices(self.lcm_settings())
        self.lcm.pipeline.on_activity = self._proxy_activity

    def _meter_kernels(self, serverapp) -> None:
        """Point the SDKs in kernels started from now on at the proxy (kernel_env.py).
        Before the first await, as give_to_kernels: one key lookup (or creation) at start."""
        found = take_provider_keys(os.environ)
        plain, key_id = self.lcm.store.run_sync(
            ensure_kernel_key, self.lcm.box, server_user(), found
        )
        # Whatever the server starts bypassing its kernel manager gets the user's key...
        point_kernels(os.environ, serverapp.connection_url, plain)
        # ...and each kernel a key of its own, naming its notebook and cells (kernels.py).
        sessions = serverapp.session_manager

        async def notebook_of(kernel_id: str) -> str | None:
            return (await sessions.get_session(kernel_id=kernel_id))["path"]

        book = self.lcm.pipeline.kernels = KernelBook(notebook_of)
        meter_each_kernel(
            serverapp.kernel_manager,
            book,
            server_url=serverapp.connection_url,
            plain=plain,
            key_id=key_id,
        )
        meant = ", ".join(sorted(found)) or "none found in the environment"
        self.log.info("lcm: kernels metered through the proxy (provider keys: %s)", meant)

    def _proxy_activity(self) -> None:
        # A `*_last_activity` setting is part of ServerApp.last_activity(), which JupyterHub's
        # idle culler sees through the single-user server's activity reports: a server used
        # only through the proxy is in use.
        assert self.serverapp is not None
        self.serverapp.web_app.settings["lcm_proxy_last_activity"] = utcnow()

    def initialize_handlers(self) -> None:
        self.handlers.extend(proxy_handlers(self.lcm.pipeline))
        self.handlers.extend(kernel_handlers(self.lcm.pipeline))
        self.handlers.extend(team_handlers(self.lcm))  # before budgets/{key_id}
        self.handlers.extend(api_handlers(self.lcm))
        self.handlers.extend(analytics_handlers(self.lcm))

    def _prepare_handlers(self) -> None:
        super()._prepare_handlers()
        # A base_url with escapes (JupyterHub's /user/a%40b/ for e-mail user names) reaches
        # the server unescaped from clients that normalize URLs (aiohttp, so google-genai):
        # route that spelling to the proxy too.
        assert self.serverapp is not None  # linked before its handlers are prepared
        web_app = self.serverapp.web_app
        base = web_app.settings["base_url"]
        plain = unquote(base)
        if plain != base:
            rules = [
                (re.escape(plain.rstrip("/")) + pattern, handler, kwargs)
                for pattern, handler, kwargs in proxy_handlers(self.lcm.pipeline)
            ]
            web_app.add_handlers(".*$", rules)

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        # Kernels inherit the server's environment: this is how lcm_jupyter.client finds us,
        # with a credential for lcm/api only, never the server's token (kernel_auth.py).
        # Before the first await: the server already starts kernels (a restored notebook's)
        # while the services start.
        give_to_kernels(serverapp)
        if self.kernel_metering or self.team_mode:
            self._meter_kernels(serverapp)
        await self.lcm.start()
        if self.gc_freeze:
            # The server's start-up objects (~240k) are rescanned by every full collection:
            # ~110 ms pauses under load. Freezing them cut p99 at 32 connections from
            # ~130 ms to ~30 ms and raised throughput 12% (tests/benchmarks/README.md).
            gc.freeze()
        self.log.info(
            "lcm: proxy at %slcm/proxy/{openai,anthropic,google,v2}/", serverapp.connection_url
        )

    async def stop_extension(self) -> None:
        # Not there when the extension failed to load (a bad option): the server must
        # still stop.
        lcm = getattr(self, "lcm", None)
        if lcm is not None:
            await lcm.stop()
