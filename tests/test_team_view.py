"""The team's side of the widgets and the client: TeamView, the budget row, the dashboard's
user and notebook breakdowns, and `LCMClient`'s team calls.

The pure helpers are checked first; then the widgets, the client and the reports against
two users' Jupyter servers in team mode on one database (`team`): ada's (an lcm admin) and
bob's (not one), with the static `team_admins` and `team_groups` options (a team without a
hub; tests/test_hub.py runs a real JupyterHub). The calls go through the official SDKs, so
the figures are the ones the proxy metered: alice's and bob's with their kernel keys (no
notebook), ada's from two notebooks (a session's kernel each).
"""

from __future__ import annotations

import asyncio
import math
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from lcm_jupyter import cli
from lcm_jupyter._env import KERNEL_TOKEN_ENV, TOKEN_ENV, URL_ENV
from lcm_jupyter.client import LCMClient, LCMClientError
from lcm_jupyter.core.analytics import BREAKDOWN_BY
from lcm_jupyter.core.budget import current_month
from lcm_jupyter.core.keyspec import DEFAULT_THRESHOLDS
from lcm_jupyter.core.secretbox import SecretBox, load_or_create_key
from lcm_jupyter.server.kernel_env import ensure_kernel_key
from lcm_jupyter.server.kernels import kernel_key
from lcm_jupyter.store.db import open_database
from lcm_jupyter.testing import SimulatedProvider
from lcm_jupyter.ui import Dashboard, TeamView
from lcm_jupyter.ui import dashboard as dash
from lcm_jupyter.ui._common import AlertThresholds, money
from lcm_jupyter.ui.team import (
    budget_payload,
    budget_values,
    group_records,
    recent_months,
    top_text,
    user_records,
)

from .conftest import PROVIDER_KEY, expected_cost, wait_until
from .servers import TOKEN, free_port, server_env, start_server, stop, wait_ready
from .test_ui_dashboard import Requests, _bar, _click

ANSWER = {
    "month": "2026-12",
    "me": "ada",
    "admin": True,
    "users": [
        {
            "name": "alice",
            "groups": ["research", "nlp"],
            "spent_usd": 1.5,
            "budget_usd": 10.0,
            "remaining_usd": 8.5,
            "requests": 30,
            "top_models": [
                {"name": "gpt-4o", "cost_usd": 1.0, "requests": 10},
                {"name": "gpt-4o-mini", "cost_usd": 0.3, "requests": 15},
                {"name": "o3-mini", "cost_usd": 0.15, "requests": 4},
                {"name": "gpt-4.1-nano", "cost_usd": 0.05, "requests": 1},
            ],
            "top_notebooks": [{"name": "work/eval.ipynb", "cost_usd": 1.5, "requests": 30}],
        },
        {
            "name": "bob",
            "groups": [],
            "spent_usd": 0.0,
            "budget_usd": None,
            "remaining_usd": None,
            "requests": 0,
            "top_models": [],
            "top_notebooks": [],
        },
    ],
    "groups": [
        {
            "name": "research",
            "members": ["alice", "bob"],
            "spent_usd": 1.5,
            "budget_usd": 20.0,
            "remaining_usd": 18.5,
            "requests": 30,
        }
    ],
}


# -- pure helpers --------------------------------------------------------------------------------


def test_the_month_picker_offers_a_year_back_across_new_year():
    assert recent_months("2026-02", 4) == ["2026-02", "2026-01", "2025-12", "2025-11"]
    assert len(recent_months("2026-12")) == 12
    for bad in ("2026-13", "26-01", "2026-1"):
        try:
            recent_months(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} taken as a month")


def test_team_records_are_the_answer_as_the_tables_show_it():
    alice, bob = user_records(ANSWER)
    assert alice["groups"] == "research, nlp" and bob["groups"] == ""
    assert (alice["spent_usd"], alice["budget_usd"], alice["remaining_usd"]) == (1.5, 10.0, 8.5)
    assert alice["top_models"] == "gpt-4o $1.00, gpt-4o-mini $0.30, o3-mini $0.15 (+1)"
    assert alice["top_models_tip"].splitlines()[-1] == "gpt-4.1-nano: $0.05, 1 call"
    assert alice["top_notebooks"] == "work/eval.ipynb $1.50"
    assert bob["top_models"] == "" and bob["budget_usd"] is None
    (research,) = group_records(ANSWER)
    assert research["members"] == "alice, bob" and research["remaining_usd"] == 18.5
    assert top_text([]) == ""


def test_the_budget_row_sends_what_the_api_takes_and_names_what_it_would_refuse():
    values = budget_values({"budget_usd": 12.5, "budget_alert_thresholds": [50, 100]})
    assert values == {
        "monthly_budget_usd": "12.5",
        "budget_alerts_enabled": True,
        "budget_alert_thresholds": [50, 100],
    }
    fresh = budget_values(None)
    assert fresh["monthly_budget_usd"] == "" and fresh["budget_alert_thresholds"] == list(
        DEFAULT_THRESHOLDS
    )
    assert budget_payload(values) == (
        {
            "monthly_budget_usd": 12.5,
            "budget_alerts_enabled": True,
            "budget_alert_thresholds": [50, 100],
        },
        {},
    )
    # Blank is no budget; "$1,000" is a thousand dollars.
    assert budget_payload({**values, "monthly_budget_usd": ""})[0]["monthly_budget_usd"] is None
    assert (
        budget_payload({**values, "monthly_budget_usd": "$1,000"})[0]["monthly_budget_usd"] == 1000
    )
    # Alerts off with nothing ticked: the thresholds are left as they are.
    quiet = budget_payload(
        {**values, "budget_alerts_enabled": False, "budget_alert_thresholds": []}
    )
    assert quiet == ({"monthly_budget_usd": 12.5, "budget_alerts_enabled": False}, {})
    _, errors = budget_payload({**values, "monthly_budget_usd": "-1"})
    assert errors == {"monthly_budget_usd": "Must be blank or a number from 0 to 100,000,000."}
    _, errors = budget_payload({**values, "monthly_budget_usd": "ten"})
    assert errors == {"monthly_budget_usd": "Enter a number, or leave it blank."}
    _, errors = budget_payload({**values, "budget_alert_thresholds": []})
    assert set(errors) == {"budget_alert_thresholds"}


def test_alert_thresholds_are_greyed_out_while_alerts_are_off():
    row = AlertThresholds()
    switch = row.switch
    switch.value = True
    row.set([50, 100])
    assert list(row.boxes) == [50, 80, 90, 100] and row.chosen == [50, 100]
    switch.value = False
    assert all(box.disabled for box in row.boxes.values())
    row.set([80])  # boxes made again follow the switch too
    assert list(row.boxes) == list(DEFAULT_THRESHOLDS) and row.boxes[80].disabled
    switch.value = True
    assert not any(box.disabled for box in row.boxes.values())


def test_user_and_notebook_bars_filter_on_their_name_and_a_long_path_keeps_its_end():
    path = "projects/forecasting/2026/quarterly/revenue-forecast.ipynb"
    items = [
        {"name": "alice", "cost_usd": 2.0},
        {"name": "(none)", "cost_usd": 1.0},
    ]
    alice, nobody = dash.breakdown_bars("user", items)
    assert alice.filter == ("user", "alice") and nobody.filter is None
    (bar,) = dash.breakdown_bars("notebook", [{"name": path, "cost_usd": 1.0}])
    assert bar.filter == ("notebook", path) and bar.name == path
    assert bar.label.startswith("…") and bar.label.endswith("revenue-forecast.ipynb")
    assert len(bar.label) == dash.LABEL_WIDTH
    assert dash.filter_params(bar.filter) == {"notebook": path}
    assert dash.describe_filter(alice.filter) == "user alice"
    # A model's long name still keeps its start.
    (model,) = dash.breakdown_bars("model", [{"name": "x" * 40, "cost_usd": 1.0}])
    assert model.label.endswith("…") and model.label.startswith("x")
    assert set(dash.NOUNS) == set(BREAKDOWN_BY)


# -- against a team's servers --------------------------------------------------------------------

ADMIN, GROUP, MEMBERS = "ada", "research", ("alice", "bob")
NOTEBOOKS = ("work/forecast.ipynb", "projects/quarterly/revenue/very-long-notebook-name.ipynb")
CHAT = [{"role": "user", "content": "Say hello to the team."}]


@dataclass
class Team:
    """The team's servers: ada's (an lcm admin) and bob's (not one), on one database."""

    admin_url: str
    member_url: str
    costs: dict[tuple[str, str, str], float]  # (user, model, notebook or "(none)") -> USD
    keys: dict[str, str]  # user -> their kernel key

    def admin(self) -> LCMClient:
        return LCMClient(self.admin_url, TOKEN)

    def member(self) -> LCMClient:
        return LCMClient(self.member_url, TOKEN)

    def spent(self, user: str | None = None, notebook: str | None = None) -> float:
        return math.fsum(
            c
            for (u, _m, nb), c in self.costs.items()
            if (user is None or u == user) and (notebook is None or nb == notebook)
        )


def _start(tmp: Path, sim_url: str, user: str) -> tuple[subprocess.Popen, str]:
    """A user's Jupyter server in team mode on the shared database, as a spawner starts it:
    the provider keys in the SDKs' variables, the user in JUPYTERHUB_USER (no hub API here:
    the admins and groups come from the static options)."""
    env = server_env(
        tmp,
        LCM_OPENAI_BASE_URL=sim_url,
        LCM_ANTHROPIC_BASE_URL=sim_url,
        LCM_GOOGLE_BASE_URL=sim_url,
        LCM_TEAM_MODE="1",
        LCM_TEAM_ADMINS=ADMIN,
        LCM_TEAM_GROUPS=",".join(f"{GROUP}:{m}" for m in MEMBERS),
        JUPYTERHUB_USER=user,
        OPENAI_API_KEY=PROVIDER_KEY,
        ANTHROPIC_API_KEY=PROVIDER_KEY,
    )
    for name in (
        URL_ENV,
        KERNEL_TOKEN_ENV,
        TOKEN_ENV,
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_API_URL",
    ):
        env.pop(name, None)
    root = tmp / f"root-{user}"
    root.mkdir()
    port = free_port()
    return start_server(port, env, root), f"http://127.0.0.1:{port}/"


def _kernel_key(db_path: Path, secret_file: Path, user: str) -> str:
    """A user's kernel key, as their own server makes it at its start (server/kernel_env.py)."""
    box = SecretBox(load_or_create_key(secret_file))
    db = open_database(db_path)
    try:
        providers = dict.fromkeys(("openai", "anthropic"), PROVIDER_KEY)
        return ensure_kernel_key(db, box, user, providers)[0]
    finally:
        db.close()


def _openai_call(url: str, key: str, model: str) -> float:
    sdk = openai.OpenAI(base_url=f"{url}lcm/proxy/openai/v1", api_key=key, max_retries=0)
    usage = sdk.chat.completions.create(model=model, messages=CHAT, max_tokens=20).usage
    return expected_cost(model, uncached=usage.prompt_tokens, out=usage.completion_tokens)


def _anthropic_call(url: str, key: str, model: str) -> float:
    sdk = anthropic.Anthropic(base_url=f"{url}lcm/proxy/anthropic", api_key=key, max_retries=0)
    usage = sdk.messages.create(model=model, messages=CHAT, max_tokens=20).usage
    return expected_cost(model, uncached=usage.input_tokens, out=usage.output_tokens)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """ada's and bob's servers; calls by alice and bob with their kernel keys (no notebook),
    and by ada from two notebooks (a session's kernel each: the proxy names the notebook)."""
    tmp = tmp_path_factory.mktemp("team")
    with SimulatedProvider.run_in_thread(api_keys=[PROVIDER_KEY]) as sim:
        procs: list[subprocess.Popen] = []
        try:
            admin_proc, admin_url = _start(tmp, sim.url, ADMIN)
            procs.append(admin_proc)
            asyncio.run(wait_ready(admin_url, admin_proc))  # migrates the database first
            member_proc, member_url = _start(tmp, sim.url, "bob")
            procs.append(member_proc)
            asyncio.run(wait_ready(member_url, member_proc))
            db_path, secret = tmp / "shared.sqlite3", tmp / "secret.key"
            keys = {u: _kernel_key(db_path, secret, u) for u in (ADMIN, *MEMBERS)}
            costs: dict[tuple[str, str, str], float] = defaultdict(float)
            for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
                costs["alice", model, "(none)"] += _openai_call(admin_url, keys["alice"], model)
            costs["bob", "claude-3-5-haiku", "(none)"] += _anthropic_call(
                member_url, keys["bob"], "claude-3-5-haiku"
            )
            with httpx.Client(
                base_url=admin_url, headers={"Authorization": f"token {TOKEN}"}, timeout=60
            ) as jupyter:
                for path, model in zip(NOTEBOOKS, ("gpt-4o", "gpt-4o-mini"), strict=True):
                    session = jupyter.post(
                        "api/sessions",
                        json={"path": path, "type": "notebook", "kernel": {"name": "python3"}},
                    )
                    assert session.status_code == 201, session.text
                    kernel = session.json()["kernel"]["id"]
                    key = kernel_key(keys[ADMIN], kernel)
                    costs[ADMIN, model, path] += _openai_call(admin_url, key, model)
            with LCMClient(admin_url, TOKEN) as lcm:
                assert wait_until(lambda: len(lcm.logs()) == 6), lcm.logs()
                rows = lcm.logs()
            assert {(r["user"], r["notebook"]) for r in rows} == {
                ("alice", None),
                ("bob", None),
                *((ADMIN, path) for path in NOTEBOOKS),
            }
            yield Team(admin_url, member_url, dict(costs), keys)
        finally:
            stop(procs)


def test_the_client_reads_the_team_and_sets_budgets(team):
    with team.admin() as lcm:
        answer = lcm.team()
        assert answer["me"] == ADMIN and answer["admin"] is True
        assert answer["month"] == current_month() == lcm.team(answer["month"])["month"]
        users = {u["name"]: u for u in answer["users"]}
        assert [u["name"] for u in answer["users"]] == sorted(
            users, key=lambda n: -team.spent(n)
        )  # by spend
        for name, user in users.items():
            assert user["spent_usd"] == pytest.approx(team.spent(name), abs=1e-12)
        assert users["alice"]["requests"] == 3 and users["alice"]["groups"] == [GROUP]
        assert [m["name"] for m in users["alice"]["top_models"]] == ["gpt-4o", "gpt-4o-mini"]
        assert {n["name"] for n in users[ADMIN]["top_notebooks"]} == set(NOTEBOOKS)
        (research,) = answer["groups"]
        assert research["members"] == list(MEMBERS)
        assert research["spent_usd"] == pytest.approx(
            team.spent("alice") + team.spent("bob"), abs=1e-12
        )

        # Budgets: set, read back one and all, and the team answer carries them.
        record = lcm.set_user_budget("alice", 5.0, thresholds=[50, 100], alerts=True)
        assert record["budget_usd"] == 5.0 and record["budget_alert_thresholds"] == [50, 100]
        assert record["spent_usd"] == pytest.approx(team.spent("alice"), abs=1e-12)
        assert lcm.user_budget("alice")["budget_usd"] == 5.0
        assert {b["name"]: b["budget_usd"] for b in lcm.user_budgets()}["alice"] == 5.0
        group = lcm.set_group_budget(GROUP, 12.5)
        assert (group["name"], group["budget_usd"]) == (GROUP, 12.5)
        assert [(b["name"], b["budget_usd"]) for b in lcm.group_budgets()] == [(GROUP, 12.5)]
        answer = lcm.team()
        alice = next(u for u in answer["users"] if u["name"] == "alice")
        assert alice["budget_usd"] == 5.0
        assert alice["remaining_usd"] == pytest.approx(5.0 - team.spent("alice"), abs=1e-9)
        assert answer["groups"][0]["budget_usd"] == 12.5
        # A name with a space and an "@" is one path segment.
        odd = lcm.set_user_budget("eve @lab", 1.0)
        assert odd["name"] == "eve @lab" and lcm.user_budget("eve @lab")["budget_usd"] == 1.0
        # No budget again; a refused amount is a 400 naming the field.
        assert lcm.set_user_budget("alice", None)["budget_usd"] is None
        assert lcm.set_group_budget(GROUP, None)["budget_usd"] is None
        lcm.set_user_budget("eve @lab", None)
        with pytest.raises(LCMClientError) as refused:
            lcm.set_user_budget("alice", -1.0)
        assert refused.value.status == 400 and refused.value.param == "monthly_budget_usd"

        # Analytics by user and notebook, filtered by them, and as CSV.
        by_user = lcm.breakdown("user")["items"]
        assert {i["name"]: i["requests"] for i in by_user} == {ADMIN: 2, "alice": 3, "bob": 1}
        by_notebook = {i["name"]: i for i in lcm.breakdown("notebook")["items"]}
        assert set(by_notebook) == {"(none)", *NOTEBOOKS}
        for path in NOTEBOOKS:
            points = lcm.timeseries(notebook=path)["points"]
            assert math.fsum(p["cost_usd"] for p in points) == pytest.approx(
                team.spent(notebook=path), abs=1e-12
            )
        points = lcm.timeseries("7d", user="alice")["points"]
        assert len(points) == 7
        assert math.fsum(p["cost_usd"] for p in points) == pytest.approx(
            team.spent("alice"), abs=1e-12
        )
        models = lcm.breakdown("model", user="alice")["items"]
        assert {i["name"] for i in models} == {"gpt-4o", "gpt-4o-mini"}
        text = lcm.breakdown("notebook", format="csv")
        assert text.splitlines()[0].startswith("name,cost_usd,")
        assert {line.split(",")[0] for line in text.splitlines()[1:]} == {"(none)", *NOTEBOOKS}
        assert lcm.timeseries(user="alice", format="csv").startswith("date,cost_usd,")


def test_the_team_view_shows_the_figures_the_api_answers(team):
    lcm = team.admin()
    view = TeamView(lcm)
    answer = lcm.team()
    assert view.state == "data" and view.messages.kind == "", view.messages.text
    assert view.month == answer["month"] and view.month_picker.options[0] == current_month()
    assert f"Team spend, {answer['month']}" in view.title.value
    assert f"you are {ADMIN} (admin)" in view.title.value

    # Users: every figure the API answered, in its order, shown as money and counts.
    rows = view.user_table.rows
    assert [r["name"] for r in rows] == [u["name"] for u in answer["users"]]
    for row, user in zip(rows, answer["users"], strict=True):
        for field in ("spent_usd", "budget_usd", "remaining_usd", "requests"):
            assert row[field] == user[field], field
        assert row["groups"] == ", ".join(user["groups"])
    cells = {c[0]: c for c in view.user_table.text()}
    alice = next(u for u in answer["users"] if u["name"] == "alice")
    assert cells["alice"][1:6] == [GROUP, money(alice["spent_usd"]), "no budget", "—", "3"]
    gpt4o = alice["top_models"][0]
    assert cells["alice"][6].startswith(f"gpt-4o {money(gpt4o['cost_usd'])}, gpt-4o-mini $")
    assert set(NOTEBOOKS[0:1]) <= {n.split(" $")[0] for n in cells[ADMIN][7].split(", ")}
    # The chart: a bar per user at their spend.
    assert list(view.bars.x) == [u["name"] for u in answer["users"]]
    assert list(view.bars.y) == [u["spent_usd"] for u in answer["users"]]
    view.bars._handle_custom_msg({"event": "hover", "data": {"index": 0}}, [])
    first = answer["users"][0]
    assert f"<b>{first['name']}</b><br>Spent {money(first['spent_usd'])}" in view.bars.tooltip.value

    # Groups: members and their spend together.
    assert view.group_table.text() == [
        [GROUP, "alice, bob", money(answer["groups"][0]["spent_usd"]), "no budget", "—", "4"]
    ]
    assert view.budget_form.layout.display == ""  # an admin sets budgets here

    # Another month: its figures are asked for (nothing was spent then).
    requests = Requests(lcm)
    earlier = view.month_picker.options[1]
    view.month_picker.value = earlier
    assert ("team", {"month": earlier}) in requests.take()
    assert view.answer["month"] == earlier and f"Team spend, {earlier}" in view.title.value
    assert all(not u["spent_usd"] for u in view.answer["users"])
    assert view.state == ("data" if view.answer["users"] else "empty")
    view.refresh_button.click()
    assert requests.take()[0] == ("team", {"month": earlier})


def test_the_budget_row_sets_a_users_and_a_groups_budget(team):
    lcm = team.admin()
    view = TeamView(lcm)
    requests = Requests(lcm)
    # The users seen, and those with a budget record (an earlier test may have made some).
    assert set(view.name_picker.options) >= {ADMIN, *MEMBERS}
    f = view.budget_fields
    view.name_picker.value = "bob"
    assert f["monthly_budget_usd"].value == "" and f["budget_alerts_enabled"].value is True
    assert view.budget_values()["budget_alert_thresholds"] == list(DEFAULT_THRESHOLDS)
    f["monthly_budget_usd"].value = "0.5"
    f["budget_alert_thresholds"].boxes[80].value = False
    assert view.save(), view.messages.text
    assert view.messages.text == "The budget of user 'bob' is now $0.50 a month."
    assert requests.take()[0] == ("budgets/users/bob", {})
    stored = lcm.user_budget("bob")
    assert stored["budget_usd"] == 0.5 and stored["budget_alert_thresholds"] == [90, 100]
    assert stored["spent_usd"] == pytest.approx(team.spent("bob"), abs=1e-12)
    # The view was loaded again: bob's row has the budget, and the row shows what was set.
    bob = next(r for r in view.user_table.rows if r["name"] == "bob")
    assert bob["budget_usd"] == 0.5
    assert bob["remaining_usd"] == pytest.approx(0.5 - team.spent("bob"), abs=1e-9)
    assert view.name_picker.value == "bob" and f["monthly_budget_usd"].value == "0.5"
    assert view.budget_values()["budget_alert_thresholds"] == [90, 100]
    assert "left this month" in view.budget_note.value

    # A group's; then back to no budget (blank).
    view.kind_picker.value = "groups"
    assert view.name_picker.options == (GROUP,) and view.name_picker.value == "bob"
    view.name_picker.value = GROUP
    f["monthly_budget_usd"].value = "$1,000"
    assert view.save(), view.messages.text
    assert lcm.group_budget(GROUP)["budget_usd"] == 1000
    assert view.group_table.text()[0][3] == "$1,000.00"
    f["monthly_budget_usd"].value = ""
    assert view.save() and lcm.group_budget(GROUP)["budget_usd"] is None
    assert view.messages.text == f"The budget of group '{GROUP}' is now no budget."

    # Mistakes are named and nothing is sent.
    requests.take()
    f["monthly_budget_usd"].value = "lots"
    assert not view.save()
    assert view.messages.text == (
        "Monthly budget: enter a number, or leave it blank. Nothing was saved."
    )
    view.name_picker.value = " "
    assert not view.save() and view.messages.text == "Pick or type the group whose budget to set."
    assert requests.take() == []
    lcm.set_user_budget("bob", None)


def test_a_member_sees_their_own_row_and_cannot_set_budgets(team):
    lcm = team.member()
    view = TeamView(lcm)
    assert view.state == "data", view.messages.text
    assert [r["name"] for r in view.user_table.rows] == ["bob"]
    assert view.user_table.rows[0]["spent_usd"] == pytest.approx(team.spent("bob"), abs=1e-12)
    assert "you are bob" in view.title.value and "(admin)" not in view.title.value
    assert [r["name"] for r in view.group_table.rows] == [GROUP]
    assert view.budget_form.layout.display == "none"
    assert "budgets are set by an admin" in view.budget_heading.value
    # Asked anyway (the row is hidden, code can still call it): the server's 403, one line.
    view.name_picker.value = "bob"
    view.budget_fields["monthly_budget_usd"].value = "100"
    assert not view.save()
    assert view.messages.kind == "error"
    assert view.messages.text.startswith("Could not set the budget of user 'bob': HTTP 403: ")
    assert "team admin" in view.messages.text
    with pytest.raises(LCMClientError) as refused:
        lcm.set_group_budget(GROUP, 1.0)
    assert refused.value.status == 403
    with pytest.raises(LCMClientError) as refused:
        lcm.create_key(name="mine", monthly_budget_usd=1.0)
    assert refused.value.status == 403
    # Their analytics are their own calls.
    assert [i["name"] for i in lcm.breakdown("user")["items"]] == ["bob"]
    assert lcm.team()["users"][0]["budget_usd"] is None


def test_the_dashboard_breaks_down_by_user_and_notebook_and_filters_on_them(team):
    lcm = team.admin()
    board = Dashboard(lcm, by="user")
    requests = Requests(lcm)
    assert board.state == "data", board.messages.text
    assert [o[1] for o in board.breakdown_selector.options] == list(BREAKDOWN_BY)
    assert [b.name for b in board.bar_items] == [i["name"] for i in lcm.breakdown("user")["items"]]
    assert board.breakdown_figure.title == "Users by cost"
    assert "Click a bar to show only that user" in board.filter_label.value
    requests.take()
    _click(board, _bar(board, "alice"))
    assert board.filter == ("user", "alice")
    assert requests.take() == [("analytics/timeseries", {"period": "30d", "user": "alice"})]
    trend = board.trend_lines["cost"].y
    assert math.fsum(trend) == pytest.approx(team.spent("alice"), abs=1e-12)
    assert "filtered to <b>user alice</b>" in board.filter_label.value

    # By notebook: a new grouping shows all again; a long path keeps its file name.
    board.breakdown_selector.value = "notebook"
    assert requests.take()[0] == (
        "analytics/breakdown",
        {"by": "notebook", "period": "30d", "limit": "10"},
    )
    assert board.filter is None and board.breakdown_figure.title == "Notebooks by cost"
    assert {b.name for b in board.bar_items} == {"(none)", *NOTEBOOKS}
    long = board.bar_items[_bar(board, NOTEBOOKS[1])]
    assert long.label == "…" + NOTEBOOKS[1][1 - dash.LABEL_WIDTH :]
    assert list(board.bars.x) == [b.label for b in board.bar_items]
    _click(board, _bar(board, "(none)"))
    assert board.filter is None
    assert board.messages.text == "'(none)' is calls without one: it cannot filter the cost trend."
    requests.take()
    _click(board, _bar(board, NOTEBOOKS[1]))
    assert board.filter == ("notebook", NOTEBOOKS[1])
    assert requests.take() == [
        ("analytics/timeseries", {"period": "30d", "notebook": NOTEBOOKS[1]})
    ]
    assert math.fsum(board.trend_lines["cost"].y) == pytest.approx(
        team.spent(notebook=NOTEBOOKS[1]), abs=1e-12
    )
    assert board.trend_figure.title == f"Cost and savings per day: notebook {NOTEBOOKS[1]}"
    _click(board, _bar(board, NOTEBOOKS[1]))  # again: everything
    assert board.filter is None


def test_reports_by_user_and_notebook(team, capsys):
    assert cli.main(["report", "--by", "notebook", "--url", team.admin_url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert out.startswith("30d (") and ", by notebook: 6 requests, $" in out
    for path in NOTEBOOKS:
        assert path in out
    assert (
        cli.main(
            ["report", "--by", "user", "--format", "csv", "--url", team.admin_url, "--token", TOKEN]
        )
        == 0
    )
    rows = capsys.readouterr().out.splitlines()
    assert {r.split(",")[0] for r in rows[1:]} == {ADMIN, *MEMBERS}

    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lcm_jupyter")
    line = f"report --by user --format json --url {team.admin_url} --token {TOKEN}"
    answer = shell.run_line_magic("lcm", line)
    assert answer["by"] == "user"
    assert {i["name"]: i["requests"] for i in answer["items"]} == {ADMIN: 2, "alice": 3, "bob": 1}
