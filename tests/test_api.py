"""The management REST API: Jupyter auth, keys CRUD, logs, pricing."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import httpx
import openai
import pytest

from .conftest import PROVIDER_KEY, openai_via, stored_rows


async def test_api_refuses_requests_without_the_jupyter_token(base_url):
    async with httpx.AsyncClient() as http:
        for method, path in [
            ("GET", "keys"),
            ("POST", "keys"),
            ("GET", "logs"),
            ("PUT", "pricing"),
            ("GET", "budgets"),
        ]:
            resp = await http.request(method, f"{base_url}lcm/api/{path}", json={"name": "x"})
            assert resp.status_code == 403, (method, path)
        # the proxy itself needs no Jupyter token, only a proxy key
        resp = await http.post(f"{base_url}lcm/proxy/openai/v1/chat/completions", json={})
        assert resp.status_code == 401


async def test_create_key_shows_plain_key_once_and_stores_only_its_hash(api, lcm_config):
    status, record = await api(
        "POST",
        "keys",
        {
            "name": "team-a",
            "provider": "openai",
            "provider_api_keys": {"openai": "sk-proj-abcdefghijklmnop1234"},
            "monthly_budget_usd": 25.5,
            "rate_limit_rpm": 60,
            "routing_mode": "off",
            "routing_rules": [{"from_model": "gpt-4o*", "to_model": "gpt-4o-mini"}],
        },
    )
    assert status == 201
    key = record["key"]
    assert key.startswith("lcm-") and len(key) >= 4 + 43
    assert record["key_prefix"] == key[:12]
    assert record["provider_api_keys"] == {"openai": "sk-p...1234"}
    assert record["routing_rules"][0]["condition"] == "always"

    status, again = await api("GET", f"keys/{record['id']}")
    assert status == 200 and "key" not in again
    assert again["monthly_budget_usd"] == 25.5

    ((stored,),) = [stored_rows(lcm_config, "SELECT key_hash, provider_api_keys FROM proxy_keys")]
    assert stored["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert "sk-proj" not in stored["provider_api_keys"]  # encrypted at rest
    tables = ["proxy_keys", "proxy_logs", "alerts", "model_pricing", "lcm_meta"]
    dump = "\n".join(str(stored_rows(lcm_config, f"SELECT * FROM {t}")) for t in tables)
    assert key not in dump and "sk-proj-abcdefghijklmnop1234" not in dump
    if not lcm_config["db_url"]:  # and nowhere in the file either
        dump = "\n".join(sqlite3.connect(lcm_config["db_path"]).iterdump())
        assert key not in dump and "sk-proj-abcdefghijklmnop1234" not in dump


CROSS_PROVIDER_RULE = {"from_model": "gpt-4o*", "to_model": "claude-3-haiku"}


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "name"),
        ({"name": "x", "provider": "mistral"}, "provider"),
        ({"name": "x", "monthly_budget_usd": -1}, "monthly_budget_usd"),
        ({"name": "x", "rate_limit_rpm": 0}, "rate_limit_rpm"),
        ({"name": "x", "routing_mode": "smart"}, "routing_mode"),
        ({"name": "x", "provider_api_keys": {"azure": "k"}}, "provider_api_keys"),
        ({"name": "x", "budget_alert_thresholds": []}, "budget_alert_thresholds"),
        ({"name": "x", "routing_rules": [{"from_model": "a"}]}, "routing_rules"),
        (
            {
                "name": "x",
                "routing_rules": [{"from_model": "gpt-4o*", "to_model": "claude-3-haiku"}],
            },
            "routing_rules",
        ),
        ({"name": "x", "colour": "blue"}, "colour"),
    ],
)
async def test_invalid_key_fields_are_400(api, body, param):
    status, error = await api("POST", "keys", body)
    assert status == 400
    assert error["error"]["param"] == param


async def test_patch_and_delete_key(api, make_key, base_url):
    record = await make_key(provider="auto")
    kid = record["id"]
    status, patched = await api(
        "PATCH",
        f"keys/{kid}",
        {"name": "renamed", "provider_api_keys": {"openai": "sk-new-key-000000"}},
    )
    assert status == 200
    assert patched["name"] == "renamed"
    # merged per provider: the others are kept
    assert set(patched["provider_api_keys"]) == {"openai", "anthropic", "google"}
    assert patched["provider_api_keys"]["openai"] == "sk-n...0000"

    status, _ = await api("PATCH", f"keys/{kid}", {"provider": "nope"})
    assert status == 400
    assert (await api("GET", "keys/999"))[0] == 404
    assert (await api("PATCH", "keys/999", {"name": "x"}))[0] == 404
    assert (await api("DELETE", "keys/abc"))[0] == 404

    status, listing = await api("GET", "keys")
    assert [k["id"] for k in listing["keys"]] == [kid]
    status, revoked = await api("DELETE", f"keys/{kid}")
    assert revoked["revoked_at"]
    status, listing = await api("GET", "keys", include_revoked="false")
    assert listing["keys"] == []


async def test_provider_key_change_takes_effect_at_once(api, make_key, base_url, sim):
    record = await make_key()
    client = openai_via(base_url, record["key"])
    await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
    )
    await api("PATCH", f"keys/{record['id']}", {"provider_api_keys": {"openai": "sk-wrong-000000"}})
    with pytest.raises(openai.AuthenticationError):  # the simulator refuses the new upstream key
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}]
        )
    assert sim.requests[-1].headers["authorization"] == "Bearer sk-wrong-000000"
    await api("PATCH", f"keys/{record['id']}", {"provider_api_keys": {"openai": PROVIDER_KEY}})


async def test_logs_paging_and_filter(api, make_key, base_url, logs):
    first = await make_key(name="first")
    second = await make_key(name="second")
    for record, n in ((first, 3), (second, 2)):
        client = openai_via(base_url, record["key"])
        for i in range(n):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"call {i}"}]
            )
    everything = await logs()
    assert len(everything) == 5
    assert [r["id"] for r in everything] == sorted((r["id"] for r in everything), reverse=True)
    status, page1 = await api("GET", "logs", limit="2")
    status, page2 = await api("GET", "logs", limit="2", before=page1["next_before"])
    assert [r["id"] for r in page1["logs"] + page2["logs"]] == [r["id"] for r in everything[:4]]
    only_first = await logs(key_id=str(first["id"]))
    assert len(only_first) == 3 and {r["key_id"] for r in only_first} == {first["id"]}
    assert (await api("GET", "logs", limit="0"))[0] == 400
    status, one = await api("GET", f"logs/{everything[0]['id']}")
    assert status == 200 and one["id"] == everything[0]["id"]
    assert (await api("GET", "logs/nope"))[0] == 404


async def test_pricing_override_changes_new_costs_not_old_ones(api, make_key, base_url, logs):
    status, table = await api("GET", "pricing")
    assert status == 200 and len(table["models"]) >= 40
    bundled_version = table["version"]
    record = await make_key()
    client = openai_via(base_url, record["key"])
    before = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "price me"}]
    )
    status, table = await api(
        "PUT",
        "pricing",
        {"model": "gpt-4o-mini", "provider": "openai", "input": "1", "output": "2"},
    )
    assert status == 200
    assert table["version"] != bundled_version
    (row,) = [m for m in table["models"] if m["model"] == "gpt-4o-mini"]
    assert row["source"] == "override"
    after = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "price me"}]
    )
    new, old = await logs()
    assert old["pricing_version"] == bundled_version
    assert new["pricing_version"] == table["version"]
    u = after.usage
    assert new["cost_usd"] == (u.prompt_tokens * 1 + u.completion_tokens * 2) / 1_000_000
    assert old["cost_usd"] != new["cost_usd"] and before.usage.prompt_tokens == u.prompt_tokens

    assert (
        await api(
            "PUT", "pricing", {"model": "x", "provider": "openai", "input": "-1", "output": "1"}
        )
    )[0] == 400
    assert (await api("DELETE", "pricing/gpt-4o-mini"))[0] == 200
    assert (await api("GET", "pricing"))[1]["version"] == bundled_version
    assert (await api("DELETE", "pricing/gpt-4o-mini"))[0] == 404
    json.dumps(table)  # JSON-safe


async def test_huge_numbers_are_client_errors_not_500(api):
    assert (await api("GET", "keys/99999999999999999999"))[0] == 404
    assert (await api("GET", "logs", key_id="99999999999999999999"))[0] == 400
    assert (await api("POST", "keys", {"name": "x", "rate_limit_rpm": 10**30}))[0] == 400
    assert (await api("POST", "keys", {"name": "x", "monthly_budget_usd": 1e30}))[0] == 400
    assert (await api("POST", "keys", {"name": "x", "cache_ttl_seconds": 10**20}))[0] == 400
    assert (await api("POST", "reconcile", {"key_id": 10**20}))[0] == 400
    assert (await api("POST", "alerts/read", {"ids": [10**20]}))[0] == 400


async def test_status_says_where_the_data_is(api, lcm_config, lcm):
    status, info = await api("GET", "status")
    assert status == 200
    assert info["db_path"] == lcm_config["db_path"]
    assert info["counters"] == "memory" and info["redis_configured"] is False
    assert info["pricing_version"] == lcm.pricing.table.version
    assert info["logs_failed"] == 0


async def test_proxy_calls_count_as_the_servers_activity(jp_serverapp, base_url, make_key):
    """JupyterHub's idle culler sees a single-user server's `last_activity()`: a server used
    only through the proxy is in use. Requests without a valid key are not activity."""
    from jupyter_server._tz import utcnow

    settings = jp_serverapp.web_app.settings
    record = await make_key()
    with pytest.raises(openai.AuthenticationError):
        await openai_via(base_url, "lcm-not-a-key").models.list()
    assert "lcm_proxy_last_activity" not in settings
    before = utcnow()
    await openai_via(base_url, record["key"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    stamp = settings["lcm_proxy_last_activity"]
    assert before <= stamp <= utcnow()
    assert jp_serverapp.web_app.last_activity() >= stamp
