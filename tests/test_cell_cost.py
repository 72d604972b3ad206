"""Per-cell metering, the kernel's side (lcm_jupyter/kernel_ext.py, `%lcm cellcost`,
`%%lcm budget`).

The line's format is a pure function, tested as such. The rest runs end to end: a real
`jupyter server` started with kernel metering, as test_kernel_metering.py starts one, and
cells run in a real kernel over its websocket, with cell ids as JupyterLab sends them; what
the line says is compared with the call log's rows for the cell.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter

import pytest

from lcm_jupyter import kernel_ext
from lcm_jupyter.client import URL_ENV
from lcm_jupyter.kernel_ext import cell_cost_html, cell_cost_line, format_cell_money

from .conftest import wait_until
from .test_kernel_auth import Ran, execute, serving_with_token
from .test_kernel_metering import metered_env

# -- the line ----------------------------------------------------------------------------------


def test_the_line_says_calls_tokens_money_and_models():
    tally = {
        "cell": "c1",
        "calls": 3,
        "input_tokens": 2000,
        "output_tokens": 140,
        "cost_usd": 0.0123,
        "models": [["claude-haiku-4-5", 1], ["gpt-4o", 2]],
        "refused": 0,
        "budget_usd": None,
    }
    assert (
        cell_cost_line(tally) == "3 LLM calls, 2,140 tokens, $0.0123 (gpt-4o x2, claude-haiku-4-5)"
    )
    one = {"calls": 1, "input_tokens": 1, "output_tokens": 0, "cost_usd": 2e-6}
    assert cell_cost_line({**one, "models": [["gpt-4o-mini", 1]]}) == (
        "1 LLM call, 1 token, $0.0000020 (gpt-4o-mini)"
    )
    # By count, then by name; past five models, a count of the rest.
    models = [["e", 1], ["d", 1], ["c", 1], ["b", 2], ["a", 2], ["f", 1], ["g", 1]]
    line = cell_cost_line({**one, "calls": 9, "models": models})
    assert line is not None and line.endswith("(a x2, b x2, c, d, e, +2 more)")


def test_the_line_names_refused_calls_and_is_none_without_calls():
    assert cell_cost_line({"calls": 0, "refused": 0, "models": []}) is None
    assert cell_cost_line({}) is None
    tally = {"calls": 2, "input_tokens": 10, "output_tokens": 30, "cost_usd": 0.00031}
    tally |= {"models": [["gpt-4o", 2]], "refused": 1, "budget_usd": 0.0005}
    assert cell_cost_line(tally) == (
        "2 LLM calls, 40 tokens, $0.0003 (gpt-4o x2), 1 refused by the cell budget of $0.000500"
    )
    only_refused = {"calls": 0, "refused": 2, "budget_usd": 0.5, "models": []}
    assert cell_cost_line(only_refused) == "2 LLM calls refused by the cell budget of $0.50"


@pytest.mark.parametrize(
    ("usd", "shown"),
    [
        (0, "$0.0000"),
        (0.0123, "$0.0123"),
        (0.01235, "$0.0124"),  # half up on the decimal as written
        (0.00015, "$0.0002"),
        (0.0001, "$0.0001"),
        (0.000099, "$0.000099"),  # below $0.0001: two significant digits, never $0.0000
        (0.0000069, "$0.0000069"),
        (0.00000696, "$0.0000070"),
        (0.000099996, "$0.0001"),
        (1e-12, "$0.0000000000010"),
        (1234.5, "$1,234.5000"),
    ],
)
def test_money_has_four_decimals_or_two_significant_digits(usd, shown):
    assert format_cell_money(usd) == shown


def test_the_html_is_quiet_and_escaped():
    html = cell_cost_html("1 LLM call, 3 tokens, $0.0001 (<model>)")
    assert "(&lt;model&gt;)" in html and "font-size: 0.85em" in html and "opacity" in html


# -- in this process: a server that does not answer ----------------------------------------------


@pytest.fixture
def shell(monkeypatch):
    """IPython's shell with the kernel extension loaded as in a metered kernel."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()

    def load(url: str) -> None:
        monkeypatch.setenv(kernel_ext.KERNEL_KEY_ENV, "lcm-key.kernel-id")
        monkeypatch.setenv(URL_ENV, url)
        ip.run_line_magic("load_ext", "lcm_jupyter.kernel_ext")

    yield ip, load
    ip.run_line_magic("unload_ext", "lcm_jupyter.kernel_ext")


def test_a_server_that_never_answers_costs_one_timeout_then_nothing(shell, capsys, caplog):
    ip, load = shell
    with socket.socket() as silent:  # listens, never answers: connections wait in its backlog
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        load(f"http://127.0.0.1:{silent.getsockname()[1]}/")
        took = []
        for _ in range(3):
            start = time.monotonic()
            result = ip.run_cell("x = 1 + 1", store_history=True)
            took.append(time.monotonic() - start)
            assert result.success
    assert kernel_ext.POST_TIMEOUT - 0.1 < took[0] < kernel_ext.POST_TIMEOUT + 1
    assert max(took[1:]) < 0.2
    assert capsys.readouterr().err == ""  # nothing in the user's cells
    warnings = [r for r in caplog.records if "per-cell metering is off" in r.getMessage()]
    assert len(warnings) == 1 and "did not answer" in warnings[0].getMessage()

    ip.run_line_magic("lcm", "cellcost")
    out = capsys.readouterr().out
    assert out.startswith("cell cost line: off: the server failed") and "cellcost on" in out
    # A budget needs the server: the cell is refused, its body not run.
    result = ip.run_cell("%%lcm budget 0.5\nran = True", store_history=True)
    assert not result.success and "ran" not in ip.user_ns
    assert "the cell's budget was not set" in str(result.error_in_exec)


def test_a_refused_connection_turns_it_off_at_once(shell, capsys):
    ip, load = shell
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    load(f"http://127.0.0.1:{port}/")
    start = time.monotonic()
    assert ip.run_cell("y = 2", store_history=True).success
    assert time.monotonic() - start < 1
    assert kernel_ext.meter().failure is not None
    ip.run_line_magic("lcm", "cellcost on")  # tries again from the next cell
    assert capsys.readouterr().out == "cell cost line: on\n"
    assert ip.run_cell("y = 3", store_history=True).success
    assert kernel_ext.meter().failure is not None


# -- end to end: a real server, a real kernel ---------------------------------------------------

MODEL_CALLS = """
import anthropic, openai
chat = [{"role": "user", "content": "hi"}]
gpt = openai.OpenAI(max_retries=0)
gpt.chat.completions.create(model="gpt-4o", messages=chat, max_tokens=20)
get_ipython().run_cell("inner = 1")  # a cell run inside this one is part of it
gpt.chat.completions.create(model="gpt-4o", messages=chat, max_tokens=20)
anthropic.Anthropic(max_retries=0).messages.create(
    model="claude-haiku-4-5", max_tokens=20, messages=chat)
"""
# The simulator's reply quotes the prompt: a long one makes the output most of the cost.
PROMPT = "Tell me what a cell of this notebook may spend. " * 4
ONE_CALL = """
import openai
reply = openai.OpenAI(max_retries=0).chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": %r}], max_tokens=%d)
print(reply.usage.completion_tokens)
"""
CALLS_UNTIL_REFUSED = """
import openai
answered = 0
try:
    for _ in range(%d):
        openai.OpenAI(max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": %r}], max_tokens=%d)
        answered += 1
except openai.RateLimitError as err:
    print("refused after", answered, err.status_code, err.code)
else:
    print("all", answered, "answered")
"""


@pytest.fixture
def metered(tmp_path, thread_sim, jp_asyncio_loop):
    """A server with kernel metering (the team's provider keys in its environment) and a
    kernel of it."""
    env = metered_env(thread_sim.url)
    with serving_with_token(tmp_path, thread_sim.url, jp_asyncio_loop, env) as server:
        server.kernel_id = server.start_kernel()
        try:
            yield server
        finally:
            server.shutdown_kernel(server.kernel_id)


async def run(server, code: str, cell_id: str | None) -> Ran:
    """Execute `code` as a notebook cell of the server's kernel (`cell_id` in its metadata)."""
    return await execute(server, server.kernel_id, code, cell_id=cell_id, store_history=True)


def ok(ran: Ran) -> Ran:
    assert ran.error is None, "the cell raised:\n" + "\n".join(ran.error["traceback"])
    assert ran.reply is not None and ran.reply["status"] == "ok", ran.reply
    return ran


def rows_of(server, cell: str, count: int) -> list[dict]:
    """The log's rows of `cell`, once there are `count` of them."""

    def rows() -> list[dict]:
        logs = server.http.get("lcm/api/logs", params={"limit": 500}).json()["logs"]
        return [r for r in logs if r.get("cell") == cell]

    assert wait_until(lambda: len(rows()) >= count), f"{len(rows())} rows of {cell}"
    return rows()


def line_of(rows: list[dict], *, refused: int = 0, budget: float | None = None) -> str | None:
    """The line the log's rows of a cell make (its answered calls; those refused apart)."""
    answered = [r for r in rows if r["status"] < 400]
    return cell_cost_line(
        {
            "calls": len(answered),
            "input_tokens": sum(r["input_tokens"] or 0 for r in answered),
            "output_tokens": sum(r["output_tokens"] or 0 for r in answered),
            "cost_usd": sum(r["cost_usd"] or 0 for r in answered),
            "models": list(Counter(r["model"] for r in answered).items()),
            "refused": refused,
            "budget_usd": budget,
        }
    )


async def test_a_cell_with_calls_shows_one_line_that_agrees_with_the_log(metered):
    server = metered
    assert ok(await run(server, "quiet = 1", "no-calls")).displays == []

    ran = ok(await run(server, MODEL_CALLS, "three-calls"))
    rows = rows_of(server, "three-calls", 3)
    assert sorted((r["provider"], r["status"]) for r in rows) == [
        ("anthropic", 200),
        ("openai", 200),
        ("openai", 200),
    ]
    assert all(r["cost_usd"] > 0 for r in rows)
    [line] = ran.cost_lines
    assert len(ran.displays) == 1
    assert line == line_of(rows)
    assert line.startswith("3 LLM calls, ") and " x2, " in line
    html = ran.displays[0]["data"]["text/html"]
    assert "lcm-cell-cost" in html and "opacity" in html

    # No cell id (another frontend): the rows are the execution count's.
    ran = ok(await run(server, ONE_CALL % ("hi", 5), None))
    cell = str(ran.reply["execution_count"])
    [row] = rows_of(server, cell, 1)
    assert ran.cost_lines == [line_of([row])]

    # Off: no line, and the calls are still the cell's; on again: the line is back.
    ran = ok(await run(server, "%lcm cellcost off", "off"))
    assert ran.stdout.startswith("cell cost line: off") and ran.displays == []
    ran = ok(await run(server, ONE_CALL % ("hi", 5), "while-off"))
    assert ran.displays == []
    assert len(rows_of(server, "while-off", 1)) == 1
    assert ok(await run(server, "%lcm cellcost", "state")).stdout.startswith("cell cost line: off")
    assert ok(await run(server, "%lcm cellcost on", "on")).stdout == "cell cost line: on\n"
    ran = ok(await run(server, ONE_CALL % ("hi", 5), "on-again"))
    assert ran.cost_lines == [line_of(rows_of(server, "on-again", 1))]


async def test_a_cell_budget_refuses_the_calls_past_it(metered):
    server = metered
    # One call's cost, the same for every identical call to the simulator. A cell's budget
    # holds each call's worst case while it runs (a bound of its prompt, and max_tokens):
    # with max_tokens what the simulator writes, the hold is within half a call of the cost,
    # so a budget of N calls and a half lets N calls through and refuses the next.
    ran = ok(await run(server, ONE_CALL % (PROMPT, 1000), "measure"))
    cap = int(ran.stdout)  # what the simulator writes: max_tokens from now on
    [row] = rows_of(server, "measure", 1)
    assert row["output_tokens"] == cap
    per_call, allowed = row["cost_usd"], 3
    budget = allowed * per_call + per_call / 2

    ran = ok(
        await run(
            server, f"%%lcm budget {budget!r}\n" + CALLS_UNTIL_REFUSED % (9, PROMPT, cap), "b"
        )
    )
    assert ran.stdout == f"refused after {allowed} 429 budget_exceeded\n"
    rows = rows_of(server, "b", allowed)
    assert [r["status"] for r in rows if r["status"] < 400] == [200] * allowed
    [line] = ran.cost_lines
    assert line == line_of(rows, refused=1, budget=budget)
    assert line.endswith(", 1 refused by the cell budget of " + _money(budget))

    # Not caught, the refusal fails the cell, with the body's lines in its traceback.
    code = f"%%lcm budget {per_call / 2!r}\n" + ONE_CALL % (PROMPT, cap)
    ran = await run(server, code, "uncaught")
    assert ran.reply["status"] == "error" and ran.error["ename"] == "RateLimitError"
    assert "This cell's budget (%%lcm budget)" in ran.error["evalue"]
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(ran.error["traceback"]))
    call_line = code.splitlines().index("import openai") + 2  # the call, after the import
    assert re.search(rf"Cell In\[\d+\], line {call_line}\n", traceback), traceback
    assert f"--> {call_line} reply = openai.OpenAI(max_retries=0)" in traceback
    assert ran.cost_lines == ["1 LLM call refused by the cell budget of " + _money(per_call / 2)]

    # The next cell, without the magic, has no limit.
    ran = ok(await run(server, CALLS_UNTIL_REFUSED % (allowed + 1, PROMPT, cap), "unlimited"))
    assert ran.stdout == f"all {allowed + 1} answered\n"
    assert ran.cost_lines == [line_of(rows_of(server, "unlimited", allowed + 1))]

    # A bad budget: a usage error, and nothing of the cell runs.
    ran = await run(server, "%%lcm budget -1\nprint('ran')", "bad")
    assert ran.reply["status"] == "error" and ran.stdout == "" and ran.cost_lines == []
    assert "not an amount of dollars" in "".join(ran.err) + json.dumps(ran.error)


def _money(usd: float) -> str:
    from lcm_jupyter.core.money import format_money

    return format_money(usd)
