"""Team mode in one real Jupyter server (server/team.py, team_handlers.py): budgets per
user and per group, who may do what, attribution of calls to users, and the team budgets'
counters rebuilt from the log. The hub's side (admins and groups from a real JupyterHub,
users' kernels) is tests/test_hub.py's; here the team comes from the static options, and
the one asking the REST API is the server's user, ada.
"""

from __future__ import annotations

import json
import math
import socket

import openai
import pytest

from lcm_jupyter.core.budget import to_units
from lcm_jupyter.core.keyspec import validate_key_fields
from lcm_jupyter.server.team import HubAPI, Member, TeamDirectory
from lcm_jupyter.store import keys as key_table
from lcm_jupyter.store.team import TEAM_KEYS

from .conftest import PROVIDER_KEY, openai_via, rounded_units, stored_rows

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(params=[True], ids=["ada-admin"])
def admin(request):
    return request.param


@pytest.fixture
def lcm_config(lcm_config, monkeypatch, admin):
    monkeypatch.setenv("JUPYTERHUB_USER", "ada")
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return {
        **lcm_config,
        "team_mode": True,
        "team_admins": ["ada"] if admin else [],
        "team_groups": ["research:ada", "research:bob", "ops:cy"],
    }


def _key_of(lcm, owner: str) -> str:
    """A key of `owner`, made in the store (as an admin's server would for them)."""
    fields = validate_key_fields(
        {
            "name": f"key of {owner}",
            "routing_mode": "off",
            "provider_api_keys": {"openai": PROVIDER_KEY},
        },
        partial=False,
    )
    _, plain = lcm.store.run_sync(key_table.create_key, lcm.box, fields, owner=owner)
    return plain


async def _call(base_url: str, key: str):
    return await openai_via(base_url, key).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=16
    )


def _units(rows) -> int:
    return sum(rounded_units(r["cost_usd"], 10**10) for r in rows)


async def test_a_group_budget_stops_every_member_and_counts_to_the_unit(lcm, api, base_url, logs):
    ada, bob, cy = (_key_of(lcm, u) for u in ("ada", "bob", "cy"))
    await _call(base_url, ada)
    (first,) = await logs()
    cost = first["cost_usd"]
    assert first["user"] == "ada" and cost > 0
    # Room for the first call's spend and two more of the same: each holds its worst case
    # (16 output tokens), so the third may be refused before the budget is quite reached.
    budget = round(cost * 3.5, 10)
    status, record = await api("PUT", "budgets/groups/research", {"monthly_budget_usd": budget})
    assert status == 200, record
    # The group's counter starts at what the log says was charged to it: nothing yet.
    assert (record["budget_usd"], record["spent_usd"]) == (budget, 0.0)

    answered, refused = 0, []
    for key in [bob, ada, bob, ada, bob, ada]:
        try:
            await _call(base_url, key)
            answered += 1
        except openai.RateLimitError as exc:
            refused.append(exc)
    assert 2 <= answered <= 3 and len(refused) == 6 - answered
    for exc in refused:
        assert exc.code == "budget_exceeded"
        assert "group research" in exc.message
    # Refused for both members; cy (another group) is not limited.
    await _call(base_url, cy)

    rows = await logs(limit=100)
    charged = [r for r in rows if r["status"] == 200 and r["user"] in ("ada", "bob")][:answered]
    status, groups = await api("GET", "budgets/groups")
    (research,) = [b for b in groups["budgets"] if b["name"] == "research"]
    assert to_units(research["spent_usd"]) == _units(charged) <= to_units(budget)
    assert research["reserved_usd"] == 0.0

    # The log can always rebuild the counter: spoil it, reconcile, and it is back.
    group_id = -_budget_id(lcm, "group", "research")
    month = rows[0]["created_at"][:7]
    await lcm.counters.set_spent(key_id=group_id, month=month, spent=1)
    status, report = await api("POST", "reconcile", {})
    assert status == 200, report
    (entry,) = [t for t in report["team_budgets"] if t["name"] == "research"]
    assert to_units(entry["logged_usd"]) == _units(charged)
    state = await lcm.counters.budget(key_id=group_id, month=month)
    assert state.spent == _units(charged)


def _budget_id(lcm, kind: str, name: str) -> int:
    from lcm_jupyter.store.team import get_budget

    found = lcm.store.run_sync(get_budget, kind, name)
    assert found is not None
    return found.id


async def test_a_user_budget_counts_the_month_so_far_and_stops_that_user_only(
    lcm, api, base_url, logs
):
    ada, bob = _key_of(lcm, "ada"), _key_of(lcm, "bob")
    await _call(base_url, bob)
    await _call(base_url, bob)
    spent = _units(await logs())
    # Set below what bob has spent this month: his next call is refused, ada's is not.
    status, record = await api(
        "PUT", "budgets/users/bob", {"monthly_budget_usd": spent / 1e10 * 1.5}
    )
    assert status == 200, record
    assert to_units(record["spent_usd"]) == spent
    with pytest.raises(openai.RateLimitError) as refused:
        await _call(base_url, bob)
    assert refused.value.code == "budget_exceeded" and "user bob" in refused.value.message
    await _call(base_url, ada)
    status, users = await api("GET", "budgets/users")
    assert [b["name"] for b in users["budgets"]] == ["bob"]


async def test_analytics_break_down_by_user_with_exact_costs(lcm, api, base_url, logs):
    ada, bob = _key_of(lcm, "ada"), _key_of(lcm, "bob")
    for key in (ada, bob, bob):
        await _call(base_url, key)
    rows = await logs()
    status, body = await api("GET", "analytics/breakdown", by="user", period="7d")
    assert status == 200, body
    got = {i["name"]: (i["requests"], to_units(i["cost_usd"])) for i in body["items"]}
    want = {
        user: (
            sum(1 for r in rows if r["user"] == user),
            _units(r for r in rows if r["user"] == user),
        )
        for user in ("ada", "bob")
    }
    assert got == want
    status, series = await api("GET", "analytics/timeseries", period="7d", user="bob")
    assert sum(p["requests"] for p in series["points"]) == 2
    assert math.isclose(
        sum(p["cost_usd"] for p in series["points"]), want["bob"][1] / 1e10, rel_tol=1e-12
    )
    status, mine = await api("GET", "logs", user="bob")
    assert {r["user"] for r in mine["logs"]} == {"bob"} and len(mine["logs"]) == 2

    status, view = await api("GET", "team")
    assert status == 200, view
    assert view["me"] == "ada" and view["admin"] is True
    by_name = {u["name"]: u for u in view["users"]}
    assert to_units(by_name["bob"]["spent_usd"]) == want["bob"][1]
    assert by_name["bob"]["groups"] == ["research"]
    assert by_name["bob"]["top_models"][0]["name"].startswith("gpt-4o-mini")
    (research,) = [g for g in view["groups"] if g["name"] == "research"]
    assert research["members"] == ["ada", "bob"] and research["requests"] == 3


@pytest.mark.parametrize("admin", [False], ids=["ada-user"], indirect=True)
async def test_a_user_who_is_not_an_admin_sees_only_their_own_and_sets_nothing(
    lcm, api, base_url, logs
):
    ada, bob = _key_of(lcm, "ada"), _key_of(lcm, "bob")
    await _call(base_url, ada)
    await _call(base_url, bob)
    status, body = await api("POST", "keys", {"name": "mine", "monthly_budget_usd": 5})
    assert status == 403 and body["error"]["code"] == "permission_denied"
    status, body = await api("PUT", "budgets/users/ada", {"monthly_budget_usd": 100})
    assert status == 403
    status, body = await api("PUT", "budgets/groups/research", {"monthly_budget_usd": 100})
    assert status == 403
    status, keys = await api("GET", "keys")
    assert [k["owner"] for k in keys["keys"]] == ["ada"]
    rows = await logs()
    assert [r["user"] for r in rows] == ["ada"]
    status, body = await api("GET", "analytics/breakdown", by="user", period="7d")
    assert [i["name"] for i in body["items"]] == ["ada"]
    status, view = await api("GET", "team")
    assert [u["name"] for u in view["users"]] == ["ada"] and view["admin"] is False
    assert [g["name"] for g in view["groups"]] == ["research"]
    status, body = await api("POST", "reconcile", {})
    assert status == 403


async def test_an_admin_key_needs_a_budget_in_team_mode(api):
    status, body = await api("POST", "keys", {"name": "no budget"})
    assert status == 400 and body["error"]["param"] == "monthly_budget_usd"
    status, body = await api("POST", "keys", {"name": "budgeted", "monthly_budget_usd": 5})
    assert status == 201 and body["owner"] == "ada"


async def test_the_teams_provider_keys_serve_keys_without_their_own(lcm, api, base_url, logs):
    fields = validate_key_fields({"name": "bare", "routing_mode": "off"}, partial=False)
    _, bare = lcm.store.run_sync(key_table.create_key, lcm.box, fields, owner="bob")
    with pytest.raises(openai.PermissionDeniedError):
        await _call(base_url, bare)
    status, body = await api("PUT", "team/provider_keys", {"openai": PROVIDER_KEY})
    assert status == 200, body
    shown = body["provider_api_keys"]["openai"]
    assert PROVIDER_KEY not in json.dumps(body) and shown.endswith(PROVIDER_KEY[-4:])
    lcm.team.forget()  # as another server, whose copy is at most 2 s old
    answer = await _call(base_url, bare)
    assert answer.model.startswith("gpt-4o-mini")
    (row,) = [r for r in await logs() if r["status"] == 200]
    assert row["user"] == "bob"
    # Stored encrypted, as a key's own provider keys are.
    stored = stored_rows(lcm.settings, "SELECT value FROM lcm_meta WHERE name = ?", [TEAM_KEYS])
    assert PROVIDER_KEY not in stored[0]["value"]
    status, body = await api("PUT", "team/provider_keys", {"openai": None})
    assert status == 200 and body["provider_api_keys"] == {}
    status, body = await api("PUT", "team/provider_keys", {"nope": "x"})
    assert status == 400


@pytest.mark.parametrize("admin", [False], ids=["ada-user"], indirect=True)
async def test_only_an_admin_sets_the_teams_provider_keys(api):
    status, body = await api("PUT", "team/provider_keys", {"openai": PROVIDER_KEY})
    assert status == 403 and body["error"]["code"] == "permission_denied"
    status, body = await api("GET", "team/provider_keys")
    assert status == 200 and body["provider_api_keys"] == {}


async def test_a_hub_that_does_not_answer_refuses_calls_while_groups_have_budgets(
    lcm, api, base_url
):
    # The hub's API on a port nothing listens on: a real refused connection.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = TeamDirectory(owner="ada", hub=HubAPI(f"http://127.0.0.1:{port}/hub/api", "t"))
    served_by, lcm.team.directory = lcm.team.directory, directory
    bob = _key_of(lcm, "bob")
    await _call(base_url, bob)  # no group budget: nothing to tell, the call goes through
    lcm.team.directory = served_by
    status, body = await api("PUT", "budgets/groups/research", {"monthly_budget_usd": 10})
    assert status == 200, body
    lcm.team.directory = directory
    # Nor does the REST API guess who asks.
    status, body = await api("GET", "team")
    assert status == 503 and body["error"]["code"] == "hub_unavailable"
    with pytest.raises(openai.InternalServerError) as refused:
        await _call(base_url, bob)
    assert refused.value.status_code == 503
    assert "does not answer who bob is" in refused.value.message
    # Once the hub has said who a user is, that answer stands while it is away.
    directory._members["bob"] = (0.0, Member("bob", False, ("ops",)))
    await _call(base_url, bob)
