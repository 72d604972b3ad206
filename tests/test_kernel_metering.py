"""Zero-config metering of a server's kernels (`kernel_metering`, server/kernel_env.py).

End to end: a real `jupyter server` started, as a spawner would start it, with the team's
provider keys in the standard variables; code in a real kernel that only uses
`openai.OpenAI()` and `anthropic.Anthropic()` is metered under the user's kernel key, and
no provider key reaches the kernel.
"""

from __future__ import annotations

import json

import pytest

from lcm_jupyter.core.keys import derived_proxy_key, hash_key
from lcm_jupyter.core.secretbox import SecretBox
from lcm_jupyter.server import kernel_env
from lcm_jupyter.store.db import open_database
from lcm_jupyter.store.keys import find_key_by_hash, list_keys, revoke_key

from .conftest import PROVIDER_KEY
from .test_kernel_auth import run_cell, serving_with_token

PLAIN_SDK_CODE = """
import json, os
import anthropic, openai
o = openai.OpenAI(max_retries=0).chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
a = anthropic.Anthropic(max_retries=0).messages.create(
    model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"env": dict(os.environ), "answered": [o.model, a.model]}))
"""


def metered_env(sim_url: str) -> dict[str, str]:
    """A server's environment with kernel metering, as a spawner starts it."""
    return {
        "LCM_KERNEL_METERING": "1",
        "LCM_ANTHROPIC_BASE_URL": sim_url,
        "JUPYTERHUB_USER": "ada",
        # As a spawner hands a team's keys to every user's server.
        "OPENAI_API_KEY": PROVIDER_KEY,
        "ANTHROPIC_API_KEY": PROVIDER_KEY,
    }


@pytest.fixture
def metered_server(tmp_path, thread_sim, jp_asyncio_loop):
    with serving_with_token(
        tmp_path, thread_sim.url, jp_asyncio_loop, metered_env(thread_sim.url)
    ) as server:
        yield server


async def test_plain_sdk_clients_in_a_kernel_are_metered_and_never_see_a_provider_key(
    metered_server,
):
    server = metered_server
    # As JupyterLab opens a notebook: a session on its path starts the kernel.
    resp = server.http.post(
        "api/sessions",
        json={"path": "work/analysis.ipynb", "type": "notebook", "kernel": {"name": "python3"}},
    )
    assert resp.status_code == 201, resp.text
    kernel_id = resp.json()["kernel"]["id"]
    try:
        out, _ = await run_cell(server, kernel_id, PLAIN_SDK_CODE)
    finally:
        server.shutdown_kernel(kernel_id)
    printed, cost_line = out.splitlines()
    seen = json.loads(printed)
    env = seen["env"]
    assert PROVIDER_KEY not in json.dumps(env)
    key = env["OPENAI_API_KEY"]
    # Its user's kernel key, and its own kernel's id (server/kernels.py).
    assert key.startswith("lcm-") and key.endswith("." + kernel_id)
    assert env["LCM_KERNEL_KEY"] == key
    # The cell's quiet line (lcm_jupyter.kernel_ext, loaded with no configuration).
    assert cost_line.startswith("2 LLM calls, ")
    assert env["ANTHROPIC_API_KEY"] == env["GEMINI_API_KEY"] == env["GOOGLE_API_KEY"] == key
    assert env["OPENAI_BASE_URL"] == server.url + "lcm/proxy/openai/v1"
    assert env["ANTHROPIC_BASE_URL"] == server.url + "lcm/proxy/anthropic"
    assert env["GOOGLE_GEMINI_BASE_URL"] == server.url + "lcm/proxy/google"
    assert seen["answered"][0].startswith("gpt-4o-mini")

    (record,) = server.http.get("lcm/api/keys").json()["keys"]
    assert record["name"] == "kernels of ada" and key.startswith(record["key_prefix"])
    assert sorted(record["provider_api_keys"]) == ["anthropic", "openai"]
    assert PROVIDER_KEY not in json.dumps(record)
    rows = server.http.get("lcm/api/logs").json()["logs"]
    assert sorted((r["provider"], r["key_id"], r["status"]) for r in rows) == [
        ("anthropic", record["id"], 200),
        ("openai", record["id"], 200),
    ]
    # Attributed to the user, the notebook whose session holds the kernel, and one cell.
    assert {(r["user"], r["notebook"]) for r in rows} == {("ada", "work/analysis.ipynb")}
    (cell,) = {r["cell"] for r in rows}
    assert cell is not None
    assert all(r["cost_usd"] > 0 for r in rows)


def test_the_kernel_key_is_the_same_at_every_start_and_stays_revoked(tmp_path):
    box = SecretBox(_fernet_key())
    db = open_database(tmp_path / "lcm.sqlite3")
    try:
        first, first_id = kernel_env.ensure_kernel_key(db, box, "ada", {"openai": "sk-a"})
        again = kernel_env.ensure_kernel_key(db, box, "ada", {"openai": "sk-b"})
        other = kernel_env.ensure_kernel_key(db, box, "bob", {})
        assert (first, first_id) == again != other
        # Made from the secret: another secret makes another key for the same user.
        assert derived_proxy_key(SecretBox(_fernet_key()).derive("kernel-key:ada")) != first
        record = find_key_by_hash(db, box, hash_key(first))
        assert record is not None and record.provider_api_keys == {"openai": "sk-b"}
        assert (record.id, record.owner) == (first_id, "ada")
        revoke_key(db, box, record.id)
        assert kernel_env.ensure_kernel_key(db, box, "ada", {"openai": "sk-c"})[0] == first
        assert [(k.name, k.revoked) for k in list_keys(db, box)] == [
            ("kernels of ada", True),
            ("kernels of bob", False),
        ]
    finally:
        db.close()


def test_provider_keys_are_taken_out_of_the_environment():
    environ = {
        "OPENAI_API_KEY": "sk-real",
        "GOOGLE_API_KEY": "g-real",
        "ANTHROPIC_API_KEY": "lcm-a-proxy-key-of-another-server",
        "PATH": "/bin",
    }
    assert kernel_env.take_provider_keys(environ) == {"openai": "sk-real", "google": "g-real"}
    assert environ == {"PATH": "/bin"}
    kernel_env.point_kernels(environ, "http://h/user/ada/", "lcm-k")
    assert environ["OPENAI_BASE_URL"] == "http://h/user/ada/lcm/proxy/openai/v1"
    assert environ["GEMINI_API_KEY"] == environ["OPENAI_API_KEY"] == "lcm-k"


def _fernet_key() -> bytes:
    from cryptography.fernet import Fernet

    return Fernet.generate_key()
