"""`%lcm` and `jupyter lcm reconcile|report`, against a server in a process of its own.

As in test_client.py, the magic's client blocks, so the server and the simulated
provider run outside the test's loop.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import types

import pytest

from lcm_jupyter import cli
from lcm_jupyter import client as lcm_client
from lcm_jupyter.client import LCMClient
from lcm_jupyter.core.money import format_money
from lcm_jupyter.testing import SimulatedProvider

from .conftest import PROVIDER_KEY, wait_until
from .servers import TOKEN, free_port, server_env, start_server, stop, wait_ready

BUDGET = 2e-4  # one small call spends a few percent of it


@pytest.fixture
def server(tmp_path, jp_asyncio_loop, monkeypatch):
    with SimulatedProvider(api_keys=[PROVIDER_KEY]).run_in_thread() as sim:
        env = server_env(tmp_path, LCM_OPENAI_BASE_URL=sim.url)
        port = free_port()
        proc = start_server(port, env, tmp_path)
        url = f"http://127.0.0.1:{port}/"
        try:
            jp_asyncio_loop.run_until_complete(wait_ready(url, proc))
            monkeypatch.setenv(lcm_client.URL_ENV, url)  # as the extension sets it for kernels
            monkeypatch.setenv(lcm_client.TOKEN_ENV, TOKEN)
            yield url
        finally:
            stop([proc])


@pytest.fixture
def ip():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lcm_jupyter")
    return lambda line: shell.run_line_magic("lcm", line)


def _one_call_and_an_alert(lcm: LCMClient) -> tuple[dict, list[dict]]:
    """A key, one priced call through the openai SDK, crossing the key's 1% alert."""
    created = lcm.create_key(
        name="nb",
        routing_mode="off",
        rate_limit_rpm=600,
        monthly_budget_usd=BUDGET,
        budget_alert_thresholds=[1],
        provider_api_keys={"openai": PROVIDER_KEY},
    )
    sdk = lcm_client.openai_client(created["key"], max_retries=0)
    chat = [{"role": "user", "content": "hello"}]
    assert sdk.chat.completions.create(model="gpt-4o-mini", messages=chat, max_tokens=20).choices
    assert wait_until(lambda: len(lcm.logs()) == 1)
    assert wait_until(lambda: lcm.alerts())
    return created, lcm.logs()


def test_the_magic_shows_status_keys_report_reconcile_and_alerts(server, ip, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import fails: the HTML Table path
    with LCMClient() as lcm:
        created, logs = _one_call_and_an_alert(lcm)
    cost = sum(r["cost_usd"] or 0 for r in logs)
    assert cost > 0
    capsys.readouterr()

    assert ip("status") is None
    out = capsys.readouterr().out
    assert f"reachable at {server}" in out
    assert "keys: 1 (1 active, 0 revoked)" in out
    assert "calls logged today (" in out and f": {len(logs)}, $" in out
    assert "counters: in-memory (no Redis configured); budgets: hard" in out
    assert "database: " in out and "shared.sqlite3" in out
    assert "price table: genai-prices-" in out

    table = ip("keys")
    assert table.rows == [
        {
            "id": created["id"],
            "name": "nb",
            "prefix": created["key_prefix"],
            "provider": "auto",
            "budget_usd": BUDGET,
            "rpm": 600,
            "routing_mode": "off",
            "revoked": False,
        }
    ]
    assert "<td>nb</td>" in table._repr_html_()
    assert repr(table).splitlines()[0].split() == list(table.columns)

    table = ip("report")  # no pandas here: an HTML table with a text repr
    out = capsys.readouterr().out
    assert "30d (" in out and f"{len(logs)} requests, {format_money(cost)}," in out
    assert "e-0" not in out  # money, never 6.9e-06
    [item] = table.rows
    assert item["name"] == "gpt-4o-mini" and item["requests"] == len(logs)
    assert item["cost_usd"] == pytest.approx(cost, abs=1e-12)
    assert "gpt-4o-mini" in repr(table) and "<table>" in table._repr_html_()

    answer = ip("report --by key --period 7d --format json")
    assert answer["by"] == "key" and answer["period"] == "7d"
    assert [(i["name"], i["key_id"]) for i in answer["items"]] == [("nb", created["id"])]
    assert answer["totals"]["requests"] == len(logs)
    assert answer["totals"]["cost_usd"] == pytest.approx(cost, abs=1e-12)
    assert answer["totals"]["input_tokens"] == sum(r["input_tokens"] or 0 for r in logs)
    assert answer["totals"]["output_tokens"] == sum(r["output_tokens"] or 0 for r in logs)

    assert ip("report --by provider --format csv") is None
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["name"] == "openai" and int(row["requests"]) == len(logs)
    assert float(row["cost_usd"]) == pytest.approx(cost, abs=1e-12)

    assert ip(f"reconcile --key {created['id']}") is None
    exact = format_money(cost, exact=True)  # every stored digit: "$0.0000069"
    out = capsys.readouterr().out
    assert "(counters: memory)" in out
    assert f"key {created['id']} (nb): counter {exact}, logged {exact}, drift $0.00" in out

    alerts = ip("alerts --unread")
    assert alerts.rows and all(a["key_id"] == created["id"] for a in alerts.rows)
    assert [a["threshold"] for a in alerts.rows] == [1]
    with LCMClient() as lcm:
        lcm.mark_alerts_read()
    assert ip("alerts --unread") is None
    assert capsys.readouterr().out.strip() == "no unread alerts"
    assert len(ip("alerts")) == len(alerts)

    # A key without a budget has no counter: reconcile reports what it logged, no drift.
    with LCMClient() as lcm:
        open_key = lcm.create_key(name="open", provider_api_keys={"openai": PROVIDER_KEY})
        sdk = lcm_client.openai_client(open_key["key"], max_retries=0)
        chat = [{"role": "user", "content": "hello"}]
        assert sdk.chat.completions.create(model="gpt-4o-mini", messages=chat).choices
        assert wait_until(lambda: len(lcm.logs(key_id=open_key["id"])) == 1)
        spent = lcm.logs(key_id=open_key["id"])[0]["cost_usd"]
        entry = next(k for k in lcm.reconcile()["keys"] if k["key_id"] == open_key["id"])
        assert (entry["counter_usd"], entry["drift_usd"], entry["budget_usd"]) == (None,) * 3
    capsys.readouterr()
    assert ip("reconcile") is None
    lines = capsys.readouterr().out.splitlines()
    [line] = [x for x in lines if f"key {open_key['id']} (open)" in x]
    assert line.endswith(
        f"logged {format_money(spent, exact=True)}; no budget, so no counter to reconcile"
    )
    assert "drift" not in line
    [budgeted] = [x for x in lines if f"key {created['id']} (nb)" in x]
    assert budgeted.endswith("drift $0.00")


def test_the_magic_returns_a_dataframe_when_pandas_is_there(server, ip, monkeypatch):
    fake = types.ModuleType("pandas")
    fake.DataFrame = lambda rows, columns: ("DataFrame", rows, columns)
    monkeypatch.setitem(sys.modules, "pandas", fake)
    with LCMClient() as lcm:
        lcm.create_key(name="df", provider_api_keys={"openai": PROVIDER_KEY})
    kind, rows, columns = ip("keys")
    assert kind == "DataFrame" and rows[0]["name"] == "df" and columns[0] == "id"


def test_bad_arguments_and_errors_print_one_message(ip, capsys, monkeypatch):
    for line in ("", "help"):
        assert ip(line) is None
        out = capsys.readouterr().out
        assert "usage: %lcm" in out and "reconcile" in out and "alerts" in out
    assert ip("bogus") is None
    err = capsys.readouterr().err
    assert err.startswith("usage: %lcm") and "invalid choice: 'bogus'" in err
    assert ip("report --by colour") is None
    err = capsys.readouterr().err
    assert "usage: %lcm report" in err and "invalid choice: 'colour'" in err
    assert ip("report -h") is None
    assert "--period" in capsys.readouterr().out

    monkeypatch.delenv(lcm_client.URL_ENV, raising=False)
    for line in ("keys", "dashboard"):
        assert ip(line) is None
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert "LCM_SERVER_URL is not set" in captured.err and "--url" in captured.err
    url = f"http://127.0.0.1:{free_port()}/"
    for line in ("status", "keys", "report", "reconcile", "alerts --unread"):
        assert ip(f"{line} --url {url} --token x") is None
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert captured.err.startswith(f"lcm: cannot reach {url}")
    board = ip(f"dashboard --url {url} --token x")  # a widget, which shows its error inside
    assert board.messages.kind == "error" and f"cannot reach {url}" in board.messages.text
    assert capsys.readouterr().err == ""


def test_cell_costs_and_cell_budgets_need_a_metered_kernel(ip, capsys, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.delenv("LCM_KERNEL_KEY", raising=False)
    for line in ("cellcost", "cellcost off", "cellcost on"):
        assert ip(line) is None
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1
        assert "not started with kernel metering (LCM_KERNEL_KEY is not set)" in captured.err
    assert ip("cellcost sideways") is None
    assert "invalid choice: 'sideways'" in capsys.readouterr().err
    assert ip("budget 0.5") is None  # a cell magic only
    assert "budget is a cell magic: put %%lcm budget 0.5 on" in capsys.readouterr().err

    shell = InteractiveShell.instance()
    shell.user_ns.pop("ran", None)
    for line, says in (
        ("budget -1", "not an amount of dollars, 0 or more: '-1'"),
        ("budget lots", "not an amount of dollars, 0 or more: 'lots'"),
        ("budget nan", "not an amount of dollars"),
        ("budget", "usage: %%lcm budget USD"),
        ("budget 1 2", "usage: %%lcm budget USD"),
        ("status", "%%lcm only runs a cell with a budget"),
        ("budget 0.5", "needs a kernel started with kernel metering"),
    ):
        result = shell.run_cell(f"%%lcm {line}\nran = True")
        assert type(result.error_in_exec).__name__ == "UsageError", line
        assert says in str(result.error_in_exec), line
        assert "ran" not in shell.user_ns  # the cell's body never runs


def test_server_errors_print_one_line(server, ip, capsys):
    assert ip("keys --token wrong") is None
    captured = capsys.readouterr()
    assert captured.err.startswith("lcm: server answered 403") and captured.err.count("\n") == 1
    assert "pass --token" in captured.err
    assert ip("report --period 12d") is None
    captured = capsys.readouterr()
    assert captured.err.startswith("lcm: server answered 400: period must be one of")


def test_cli_reconcile_and_report(server, capsys, monkeypatch):
    with LCMClient() as lcm:
        created, logs = _one_call_and_an_alert(lcm)
    cost = sum(r["cost_usd"] or 0 for r in logs)
    monkeypatch.delenv(lcm_client.URL_ENV)  # the options work without the environment
    monkeypatch.delenv(lcm_client.TOKEN_ENV)
    opts = ["--url", server, "--token", TOKEN]
    capsys.readouterr()

    assert cli.main(["reconcile", "--key", str(created["id"]), *opts]) == 0
    exact = format_money(cost, exact=True)
    out = capsys.readouterr().out
    assert out.startswith("reconciled ")
    assert f"key {created['id']} (nb): counter {exact}, logged {exact}, drift $0.00" in out

    assert cli.main(["report", *opts]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{len(logs)} requests, {format_money(cost)}," in out[0]
    assert not any("e-0" in line for line in out)  # money, never 6.9e-06
    assert out[1].split()[:2] == ["name", "cost_usd"] and out[2].startswith("gpt-4o-mini ")

    assert cli.main(["report", "--by", "provider", "--format", "csv", *opts]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["name"] == "openai" and int(row["requests"]) == len(logs)

    assert cli.main(["report", "--by", "key", "--period", "7d", "--format", "json", *opts]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["items"][0]["key_id"] == created["id"]
    assert answer["totals"]["cost_usd"] == pytest.approx(cost, abs=1e-12)

    assert cli.main(["report", "--url", server, "--token", "wrong"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        cli.main(["report", "--by", "colour", *opts])
    assert "invalid choice: 'colour'" in capsys.readouterr().err
    url = f"http://127.0.0.1:{free_port()}/"
    assert cli.main(["reconcile", "--url", url]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot reach {url}")


def test_importing_the_package_does_not_import_ipython():
    code = "import sys, lcm_jupyter; sys.exit('IPython' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


async def test_nothing_blocks_the_loop_meanwhile():
    import asyncio

    await asyncio.sleep(0)  # keeps pytest-jupyter's loop fixture in use across this module
