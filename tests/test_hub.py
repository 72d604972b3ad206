"""A team under a real JupyterHub (tests/hub_fixtures.py): alice and bob (group `research`)
and ada (admin), each with a single-user server loading the extension, all sharing one
PostgreSQL, one Redis and one secret, with every kernel metered (`kernel_metering`) and the
team's provider keys handed to the servers by the spawner, as a team would deploy it.

One hub for the module: starting it and three servers is most of the module's time.
"""

from __future__ import annotations

import json
import math
import uuid

import pytest

from lcm_jupyter.testing import SimulatedProvider

from .conftest import PROVIDER_KEY, stored_rows, wait_until
from .hub_fixtures import ADMIN, ADMIN_SCOPE, GROUP, USERS, Hub, hub_fixture  # noqa: F401
from .pg_fixtures import drop_database, new_database
from .redis_fixtures import emptied

NOTEBOOK = "analysis.ipynb"
# All a notebook does: the plain SDK, no key, no base URL.
PLAIN_CALL = """
from openai import OpenAI
r = OpenAI(max_retries=0).chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
print(r.model)
"""
PLAIN_ANTHROPIC_CALL = """
import anthropic
r = anthropic.Anthropic(max_retries=0).messages.create(
    model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
print(r.model)
"""
ENVIRON = "import json, os\nprint(json.dumps(dict(os.environ)))"
# What the hub says to the server's own token, which kernels inherit from the server.
WHOAMI = """
import json, os, urllib.request
req = urllib.request.Request(os.environ["JUPYTERHUB_API_URL"] + "/user",
    headers={"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]})
with urllib.request.urlopen(req, timeout=30) as resp:
    print(json.dumps(json.load(resp)))
"""


@pytest.fixture(scope="module")
def provider():
    """The simulated OpenAI/Anthropic upstream, for the whole module (accepts PROVIDER_KEY)."""
    with SimulatedProvider.run_in_thread(api_keys=[PROVIDER_KEY]) as running:
        yield running


@pytest.fixture(scope="module")
def team_database(pg_server):
    url = new_database(pg_server)
    yield url
    drop_database(pg_server, url)


@pytest.fixture(scope="module")
def hub_environment(provider, team_database, _redis_session):
    """What the spawner gives every user's server: the team's database, Redis and secret,
    the upstreams, and the team's provider keys in the standard variables."""
    from cryptography.fernet import Fernet

    return {
        "LCM_DB_URL": team_database,
        "LCM_REDIS_URL": emptied(_redis_session),
        "LCM_SECRET_KEY": Fernet.generate_key().decode(),
        "LCM_KERNEL_METERING": "1",
        "LCM_TEAM_MODE": "1",
        "LCM_OPENAI_BASE_URL": provider.url,
        "LCM_ANTHROPIC_BASE_URL": provider.url,
        "LCM_GOOGLE_BASE_URL": provider.url,
        "OPENAI_API_KEY": PROVIDER_KEY,
        "ANTHROPIC_API_KEY": PROVIDER_KEY,
    }


@pytest.fixture(scope="module")
def kernels(hub):
    """One kernel per user, for a notebook (alice's and bob's: analysis.ipynb)."""
    return {
        user: hub.start_session(user, NOTEBOOK if user != ADMIN else "admin.ipynb")
        for user in USERS
    }


def kernel_key(hub: Hub, user: str) -> dict:
    """The user's kernel key, as their own server lists it."""
    resp = hub.user_http(user).get("lcm/api/keys")
    assert resp.status_code == 200, resp.text
    mine = [k for k in resp.json()["keys"] if k["name"] == f"kernels of {user}"]
    assert len(mine) == 1, resp.json()
    return mine[0]


def logs_of(hub: Hub, user: str, key_id: int) -> list[dict]:
    resp = hub.user_http(user).get("lcm/api/logs", params={"key_id": key_id})
    assert resp.status_code == 200, resp.text
    return resp.json()["logs"]


def metered_call(
    hub: Hub, kernels: dict, user: str, code: str = PLAIN_CALL, cell_id: str | None = None
) -> tuple[str, dict, dict]:
    """Run `code` (one call) in the user's kernel: its stdout, the execute_reply, and the
    call's log row."""
    key_id = kernel_key(hub, user)["id"]
    before = {row["id"] for row in logs_of(hub, user, key_id)}
    out, reply = hub.run_cell(user, kernels[user], code, cell_id=cell_id)
    new = wait_until(lambda: [r for r in logs_of(hub, user, key_id) if r["id"] not in before])
    assert len(new) == 1, new
    return out, reply, new[0]


# -- the hub and its servers -------------------------------------------------------------------


def test_every_users_server_loads_the_extension_and_only_its_user_opens_it(hub):
    for user in USERS:
        resp = hub.user_http(user).get("lcm/api/status")
        assert resp.status_code == 200, (user, resp.status_code, resp.text)
        assert "version" in resp.json()
    # Another user's token opens neither the server nor its lcm API.
    for user, other in (("alice", "bob"), ("bob", "alice")):
        http = hub.user_http(user, as_user=other)
        for path in ("lcm/api/status", "lcm/api/keys", "api/contents"):
            resp = http.get(path)
            assert resp.status_code in (302, 403), (user, other, path, resp.status_code)
    # Nor does no token at all.
    http = hub.user_http("alice")
    resp = http.get("lcm/api/status", headers={"Authorization": ""})
    assert resp.status_code in (302, 403)


def test_plain_sdk_calls_in_each_kernel_are_metered_under_the_users_kernel_key(hub, kernels):
    for user in ("alice", "bob"):
        out, _, row = metered_call(hub, kernels, user)
        assert out.startswith("gpt-4o-mini"), out
        key = kernel_key(hub, user)
        assert key["name"] == f"kernels of {user}"
        assert row["key_id"] == key["id"]
        assert row["provider"] == "openai" and row["status"] == 200
        assert row["cost_usd"] is not None and row["cost_usd"] > 0
        # The team's provider key stayed server-side: the kernel holds the user's proxy key.
        env = json.loads(hub.run_cell(user, kernels[user], ENVIRON)[0])
        assert PROVIDER_KEY not in json.dumps(env)
        assert env["OPENAI_API_KEY"].startswith(key["key_prefix"])
        assert env["OPENAI_BASE_URL"].endswith(f"/user/{user}/lcm/proxy/openai/v1")
    # Two users, two keys in the one shared database.
    assert kernel_key(hub, "alice")["id"] != kernel_key(hub, "bob")["id"]
    # The Anthropic SDK's own variables too, with nothing configured in the notebook.
    out, _, row = metered_call(hub, kernels, "bob", PLAIN_ANTHROPIC_CALL)
    assert out.startswith("claude-3-5-haiku"), out
    assert (row["provider"], row["status"], row["user"]) == ("anthropic", 200, "bob")
    assert row["cost_usd"] > 0


def test_the_server_token_tells_the_user_their_groups_and_whether_they_are_admin(hub, kernels):
    seen = {
        user: json.loads(hub.run_cell(user, kernels[user], WHOAMI)[0])
        for user in ("alice", "bob", ADMIN)
    }
    for user in ("alice", "bob"):
        model = seen[user]
        assert model["kind"] == "user" and model["name"] == user
        assert model["admin"] is False
        assert model["groups"] == [GROUP]
        assert ADMIN_SCOPE not in model["scopes"]
    assert seen[ADMIN]["admin"] is True
    assert seen[ADMIN]["groups"] == []
    # What the server token holds (hub_fixtures.SERVER_TOKEN_SCOPES cut to what its user
    # holds, expanded). The model has kind, name, admin, groups, last_activity, user_info
    # (null), token_id, session_id and scopes; no roles, servers or created (those would
    # need read:users, read:roles:users, read:servers).
    for user in ("alice", "bob"):
        assert sorted(seen[user]["scopes"]) == [
            f"access:servers!server={user}/",
            f"read:users:activity!user={user}",
            f"read:users:groups!user={user}",
            f"read:users:name!user={user}",
            f"users:activity!user={user}",
        ]
    # The admin's reads every user's name and groups and every group (the team view).
    assert sorted(seen[ADMIN]["scopes"]) == [
        "access:servers!server=ada/",
        ADMIN_SCOPE,
        "read:groups",
        "read:groups:name",
        "read:users:activity!user=ada",
        "read:users:groups",
        "read:users:name",
        "users:activity!user=ada",
    ]
    for model in seen.values():
        assert "roles" not in model and "servers" not in model


# -- team mode: per-user attribution, group budgets, the admin's view --------------------------

# One call, answered or refused: what came back, as JSON on stdout.
BUDGETED_CALL = """
import json, openai
try:
    r = openai.OpenAI(max_retries=0).chat.completions.create(
        model="gpt-4o-mini", max_tokens=%d, messages=[{"role": "user", "content": "hi"}])
    print(json.dumps({"model": r.model}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "code": e.code, "error": type(e).__name__}))
"""


def test_log_records_carry_the_user_the_notebook_and_the_cell(hub, kernels):
    cell_id = str(uuid.uuid4())
    _, _, row = metered_call(hub, kernels, "alice", cell_id=cell_id)
    assert (row["user"], row["notebook"], row["cell"]) == ("alice", NOTEBOOK, cell_id)
    # A frontend that sends no cell id: the cell is its execution count.
    _, reply, row = metered_call(hub, kernels, "bob")
    assert (row["user"], row["notebook"]) == ("bob", NOTEBOOK)
    assert row["cell"] == str(reply["execution_count"])


def test_members_cannot_create_keys_in_team_mode(hub):
    resp = hub.user_http("alice").post("lcm/api/keys", json={"name": "mine"})
    assert resp.status_code == 403, resp.text
    assert "mine" not in [
        k["name"] for k in hub.user_http("alice").get("lcm/api/keys").json()["keys"]
    ]


def test_the_admin_sees_every_users_spend(hub, kernels):
    for user in ("alice", "bob"):
        metered_call(hub, kernels, user)
    resp = hub.user_http(ADMIN).get("lcm/api/team")
    assert resp.status_code == 200, resp.text
    users = {u["name"]: u for u in resp.json()["users"]}
    assert {"alice", "bob"} <= set(users)
    assert users["alice"]["spent_usd"] > 0 and users["bob"]["spent_usd"] > 0
    # A member's view: themselves alone.
    resp = hub.user_http("alice").get("lcm/api/team")
    assert resp.status_code == 200, resp.text
    assert [u["name"] for u in resp.json()["users"]] == ["alice"]


def test_a_group_budget_refuses_every_members_calls_once_spent(hub, kernels, team_database):
    # What one call costs, from the simulator's usage; the same call capped at its own
    # output (max_tokens) costs the same, and reserves about as much in hard budget mode.
    _, _, row = metered_call(hub, kernels, "alice")
    per_call = row["cost_usd"]
    assert per_call > 0
    call = BUDGETED_CALL % row["output_tokens"]
    # A group's budget counts the calls charged to it from when it is set: two fit, and
    # the reservation of a third would pass it.
    budget = 2.5 * per_call
    fits = math.floor(budget / per_call)
    path = f"lcm/api/budgets/groups/{GROUP}"
    resp = hub.user_http("alice").put(path, json={"monthly_budget_usd": budget})
    assert resp.status_code == 403, resp.text
    resp = hub.user_http(ADMIN).put(path, json={"monthly_budget_usd": budget})
    assert resp.status_code == 200, resp.text

    # The members call in turn until each is refused. The other servers see the new budget
    # within their cache's time (server/team.py, BUDGETS_TTL_SECONDS): calls before that
    # are answered and not charged to it.
    answers: dict[str, list[dict]] = {"alice": [], "bob": []}
    for turn in range(40):
        waiting = [u for u, seen in answers.items() if not seen or "status" not in seen[-1]]
        if not waiting:
            break
        user = waiting[turn % len(waiting)]
        answers[user].append(budgeted_call(hub, kernels, user, call, team_database))
    refusal = {"status": 429, "code": "budget_exceeded", "error": "RateLimitError"}
    charged = 0
    for seen in answers.values():
        assert seen[-1] == refusal, answers
        answered = seen[:-1]
        assert all("model" in a for a in answered), answers
        # Once a server charges the group, it charges every call.
        flags = [a["charged"] for a in answered]
        assert flags == sorted(flags), answers
        charged += sum(flags)
    # Hard budgets reserve a call's worst case first: the group's spend never passes it.
    assert charged == fits, answers
    state = hub.user_http(ADMIN).get(path).json()
    assert state["spent_usd"] == pytest.approx(fits * per_call)
    assert state["spent_usd"] <= budget


def budgeted_call(hub: Hub, kernels: dict, user: str, code: str, db_url: str) -> dict:
    """One BUDGETED_CALL in the user's kernel: what came back, and for an answered call
    whether it was charged to a team budget (its row's team_budget_ids, which the API
    does not show)."""
    key_id = kernel_key(hub, user)["id"]
    before = {row["id"] for row in logs_of(hub, user, key_id)}
    out, _ = hub.run_cell(user, kernels[user], code)
    answer = json.loads(out)
    if "model" in answer:
        new = wait_until(lambda: [r for r in logs_of(hub, user, key_id) if r["id"] not in before])
        assert len(new) == 1 and new[0]["status"] == 200, new
        sql = "SELECT team_budget_ids FROM proxy_logs WHERE id = ?"
        ((stored,),) = [stored_rows({"db_url": db_url}, sql, [new[0]["id"]])]
        answer["charged"] = bool(stored["team_budget_ids"])
    return answer
