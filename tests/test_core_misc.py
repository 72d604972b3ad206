"""Errors in each provider's shape, proxy-key parsing, ids, and a cheap, pure core."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lcm_jupyter.core import errors
from lcm_jupyter.core.ids import new_log_id
from lcm_jupyter.core.keys import generate_proxy_key, key_from_request, mask_secret


@pytest.mark.parametrize(
    "err, status",
    [
        (errors.AuthenticationFailed("bad key"), 401),
        (errors.InvalidJSON("bad json"), 400),
        (errors.PayloadTooLarge("too big"), 413),
        (errors.BudgetExceeded("$10.00 / $10.00"), 429),
        (errors.UpstreamUnavailable("down"), 502),
        (errors.UpstreamTimeout("slow"), 504),
    ],
)
def test_error_shapes(err, status):
    assert err.status == status
    oai = json.loads(errors.render_error("openai", err))
    assert oai["error"]["message"] == err.message and oai["error"]["code"] == err.code
    ant = json.loads(errors.render_error("anthropic", err, "req1"))
    assert ant["type"] == "error" and ant["error"]["message"] == err.message
    assert ant["request_id"] == "req1"
    goog = json.loads(errors.render_error("google", err))
    assert goog["error"]["code"] == status and goog["error"]["status"]
    assert json.loads(errors.render_error(None, err)) == oai


def test_budget_exceeded_code_in_every_shape():
    err = errors.BudgetExceeded("spent $10.00 of $10.00")
    assert json.loads(errors.render_error("openai", err))["error"]["code"] == "budget_exceeded"
    assert json.loads(errors.render_error("anthropic", err))["error"]["code"] == "budget_exceeded"
    google = json.loads(errors.render_error("google", err))["error"]
    assert google["status"] == "RESOURCE_EXHAUSTED"
    assert google["details"][0]["reason"] == "BUDGET_EXCEEDED"


def test_stream_error_events():
    err = errors.UpstreamTimeout("slow")
    assert errors.render_stream_error("anthropic", err).startswith(b"event: error\ndata: {")
    assert errors.render_stream_error("openai", err).endswith(b"\n\n")


def test_proxy_key_is_read_wherever_sdks_send_it():
    assert key_from_request({"authorization": "Bearer lcm-a"}, "") == "lcm-a"
    assert key_from_request({"x-api-key": "lcm-b"}, "") == "lcm-b"
    assert key_from_request({"x-goog-api-key": "lcm-c"}, "") == "lcm-c"
    assert key_from_request({}, "alt=sse&key=lcm-d") == "lcm-d"
    assert key_from_request({"authorization": "Basic abc"}, "") is None
    assert key_from_request({}, "") is None


def test_keys_and_ids():
    key = generate_proxy_key()
    assert key.startswith("lcm-") and len(key) == 4 + 43  # 32 random bytes
    assert generate_proxy_key() != key
    assert mask_secret("sk-1234567890abcdef") == "sk-1...cdef"
    assert mask_secret("short") == "*****"
    ids = [new_log_id() for _ in range(100)]
    assert len(set(ids)) == 100 and all(len(i) == 32 for i in ids)
    assert sorted(ids) == ids  # by time, then by order within the process


def test_a_forked_process_makes_ids_of_its_own():
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: same counter state as the parent, but a new prefix
        os.write(write, new_log_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    mine = new_log_id()
    assert len(child) == 32 and child[12:24] != mine[12:24]


def test_core_and_package_import_without_server_or_widgets():
    code = (
        "import sys, lcm_jupyter, lcm_jupyter.core.pricing, lcm_jupyter.core.streams, "
        "lcm_jupyter.core.detect, lcm_jupyter.core.errors, lcm_jupyter.core.keyspec\n"
        "heavy = [m for m in ('tornado', 'jupyter_server', 'ipywidgets', 'IPython', 'aiohttp', "
        "'redis', 'cryptography') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_imports_nothing_from_store_server_or_ui():
    """One direction of imports: server/ui/magics -> core/store, never back into core."""
    import ast
    from pathlib import Path

    import lcm_jupyter.core

    for path in Path(lcm_jupyter.core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:
                raise AssertionError(f"{path.name} imports ..{node.module}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                module = getattr(node, "module", None) or ""
                for name in [*names, module]:
                    assert not name.startswith(("lcm_jupyter.store", "lcm_jupyter.server")), (
                        path.name,
                        name,
                    )


def test_package_exports_are_complete_and_lazy():
    code = (
        "import sys, lcm_jupyter\n"
        "assert 'httpx' not in sys.modules\n"
        "missing = [n for n in lcm_jupyter.__all__ if not hasattr(lcm_jupyter, n)]\n"
        "print(','.join(missing))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    import lcm_jupyter
    from lcm_jupyter import client

    assert lcm_jupyter.openai_client is client.openai_client
    with pytest.raises(AttributeError):
        lcm_jupyter.nope  # noqa: B018
