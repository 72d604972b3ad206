"""Team mode: who is an admin, which groups a user is in, and which team budgets a call
is charged to.

The architecture (DESIGN.md, "Teams"): every user's server runs the extension and shares
one PostgreSQL and one Redis with the others, so a budget per user or per group holds
across them all. Who is an admin and a user's groups come from JupyterHub, asked with this
server's own token (`JUPYTERHUB_API_TOKEN`; the hub config adds `read:users:name`,
`read:users:groups`, `read:groups` and `custom:lcm:admin` to `c.Spawner.server_token_scopes`,
so `GET /hub/api/user` answers the owner's admin flag, groups and scopes, and an admin's
server may read everyone's), plus the static `team_admins` and `team_groups` options
(for a team without a hub, or to add to it). An admin is the hub's (`admin: true`), a
holder of the custom hub scope `custom:lcm:admin`, or named in `team_admins`.

Answers are kept a minute: a change on the hub reaches the servers within that. A hub that
does not answer leaves the last answer standing; with none yet, a user's calls are refused
(503) while any group has a budget, rather than let them past their groups' budgets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from ..core.errors import LCMError, LimitsUnavailable
from ..core.secretbox import SecretBox
from ..store import team as team_table
from ..store.store import Store
from ..store.team import TeamBudget

log = logging.getLogger("lcm_jupyter")

ADMIN_SCOPE = "custom:lcm:admin"
MEMBER_TTL_SECONDS = 60.0
BUDGETS_TTL_SECONDS = 2.0
"""How long the budgets table is taken as known (a PUT through this server: at once)."""
_HUB_TIMEOUT_SECONDS = 5.0


class HubUnavailable(LCMError):
    """JupyterHub did not say who a user is, and nothing said it before."""

    status = 503
    code = "hub_unavailable"


@dataclass(frozen=True, slots=True)
class Member:
    """A user as the team sees them."""

    name: str
    admin: bool
    groups: tuple[str, ...]

    def sees(self, kind: str, name: str) -> bool:
        """Whether they may see a user's or group's budget: an admin every one, a user
        their own and their groups'."""
        return self.admin or (name == self.name if kind == "user" else name in self.groups)


class HubAPI:
    """The few JupyterHub REST calls team mode makes, with this server's token."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + "/"
        self._token = token

    @classmethod
    def from_environment(cls) -> HubAPI | None:
        url, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
        return cls(url, token) if url and token else None

    async def get(self, path: str) -> dict | None:
        """The JSON at `path`, or None when the token may not read it (403/404)."""
        request_url = self.url + path
        try:
            answer = await AsyncHTTPClient().fetch(
                request_url,
                headers={"Authorization": f"token {self._token}"},
                request_timeout=_HUB_TIMEOUT_SECONDS,
            )
        except HTTPClientError as exc:
            if exc.code in (403, 404):
                return None
            raise
        return json.loads(answer.body)


class TeamDirectory:
    """Members of the team: the hub's answers and the static options, kept a minute."""

    def __init__(
        self,
        *,
        owner: str,
        admins: Iterable[str] = (),
        groups: dict[str, set[str]] | None = None,
        hub: HubAPI | None = None,
        clock=time.monotonic,
    ) -> None:
        self.owner = owner
        self._admins = set(admins)
        self._groups = groups or {}
        self._hub = hub
        self._clock = clock
        self._members: dict[str, tuple[float, Member]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _static(self, name: str) -> Member:
        groups = tuple(sorted(g for g, users in self._groups.items() if name in users))
        return Member(name, name in self._admins, groups)

    async def member(self, name: str) -> Member:
        """`name` as the team sees them (the hub asked at most once a minute)."""
        hit = self._members.get(name)
        now = self._clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        # One hub request per user, however many of their calls wait for it.
        async with self._locks.setdefault(name, asyncio.Lock()):
            hit = self._members.get(name)
            if hit is not None and hit[0] > now:
                return hit[1]
            member = await self._ask(name, stale=hit[1] if hit else None)
            self._members[name] = (self._clock() + MEMBER_TTL_SECONDS, member)
            return member

    async def _ask(self, name: str, stale: Member | None) -> Member:
        static = self._static(name)
        if self._hub is None:
            return static
        try:
            # The owner's own model answers its scopes too; another user's, what this
            # server's token may read of it (perhaps nothing: then the options alone).
            model = await self._hub.get(
                "user" if name == self.owner else f"users/{quote(name, safe='')}"
            )
        except Exception as exc:
            log.warning("lcm: JupyterHub did not answer who %s is (%s)", name, exc)
            if stale is None:
                raise HubUnavailable(
                    f"JupyterHub does not answer who {name} is (admin, groups): {exc}"
                ) from exc
            return stale
        if model is None or model.get("name") != name:
            return static
        admin = bool(model.get("admin")) or ADMIN_SCOPE in (model.get("scopes") or ())
        groups = set(model.get("groups") or ()) | set(static.groups)
        return Member(name, admin or static.admin, tuple(sorted(groups)))

    async def members_of(self, group: str) -> list[str] | None:
        """The users of `group` as far as this server can tell (None: it cannot)."""
        known = set(self._groups.get(group, ()))
        if self._hub is not None:
            try:
                model = await self._hub.get(f"groups/{quote(group, safe='')}")
            except Exception as exc:
                log.warning("lcm: JupyterHub did not answer group %s (%s)", group, exc)
                model = None
            if model is not None:
                return sorted(known | set(model.get("users") or ()))
        return sorted(known) if known else None

    def forget(self) -> None:
        self._members.clear()


def _team_state(db, box: SecretBox) -> tuple[list[TeamBudget], dict[str, str]]:
    return team_table.list_budgets(db), team_table.team_provider_keys(db, box)


class TeamBudgets:
    """The budgets table and the team's provider keys as the request path reads them: kept
    a moment, like the key ring."""

    def __init__(self, store: Store, directory: TeamDirectory, box: SecretBox) -> None:
        self._store = store
        self._box = box
        self.directory = directory
        self._budgets: dict[tuple[str, str], TeamBudget] = {}
        self._keys: dict[str, str] = {}
        self._until = 0.0

    async def _table(self) -> dict[tuple[str, str], TeamBudget]:
        now = time.monotonic()
        if now >= self._until:
            rows, self._keys = await self._store.run(_team_state, self._box)
            self._budgets = {(b.kind, b.name): b for b in rows}
            self._until = now + BUDGETS_TTL_SECONDS
        return self._budgets

    async def provider_key(self, provider: str) -> str | None:
        """The team's key for `provider` (an admin's `PUT lcm/api/team/provider_keys`)."""
        await self._table()
        return self._keys.get(provider)

    def forget(self) -> None:
        self._until = 0.0

    async def for_user(self, user: str | None) -> list[TeamBudget]:
        """The budgets a call of `user` is charged to: theirs and their groups' (those with a
        limit), user first."""
        if not user:
            return []
        table = await self._table()
        if not table:
            return []
        try:
            member = await self.directory.member(user)
        except HubUnavailable as exc:
            if any(kind == "group" for kind, _ in table):
                raise LimitsUnavailable(
                    f"{exc.message}. Calls are refused meanwhile: its groups' budgets "
                    "cannot be told. Try again shortly.",
                    headers={"retry-after": "5"},
                ) from exc
            member = Member(user, False, ())
        wanted = [("user", user), *(("group", g) for g in member.groups)]
        found = (table.get(w) for w in wanted)
        return [b for b in found if b is not None and b.monthly_budget_usd is not None]

    async def all(self) -> list[TeamBudget]:
        return list((await self._table()).values())
