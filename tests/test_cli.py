"""`jupyter lcm`: the server's configuration, running servers found, one-line errors, and
figures that read as money and counts."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from lcm_jupyter import cli
from lcm_jupyter._version import __version__
from lcm_jupyter.core.money import format_count, format_money
from lcm_jupyter.core.settings import OPTIONS
from lcm_jupyter.testing import SimulatedProvider

from .conftest import PROVIDER_KEY
from .servers import free_port, start_server, stop, wait_ready


def _jupyter() -> str:
    exe = Path(sys.executable).with_name("jupyter")
    return str(exe) if exe.exists() else "jupyter"


def own_jupyter_dirs(tmp_path, monkeypatch) -> dict[str, Path]:
    """Jupyter's folders of this test alone (by variable), and no LCM_* variable: only
    config files speak."""
    for name in list(os.environ):
        if name.startswith("LCM_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    dirs = {
        "JUPYTER_CONFIG_DIR": tmp_path / "cfg",
        "JUPYTER_DATA_DIR": tmp_path / "data",
        "JUPYTER_RUNTIME_DIR": tmp_path / "rt",
    }
    for name, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return dirs


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Jupyter's folders of this test alone, and no LCM_* variable: only config files speak."""
    own_jupyter_dirs(tmp_path, monkeypatch)
    return tmp_path


def run(argv: list[str]) -> int:
    """`jupyter lcm ARGV` in this process: its exit code (usage errors exit, as argparse's)."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def one_line(capsys) -> str:
    """The command's stderr, which must be one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def test_the_cli_acts_on_the_database_of_the_servers_config_and_finds_the_server(
    home, capsys, monkeypatch, jp_asyncio_loop
):
    db = home / "team" / "lcm.sqlite3"
    with SimulatedProvider(api_keys=[PROVIDER_KEY]).run_in_thread() as sim:
        (home / "cfg" / "jupyter_server_config.py").write_text(
            f"c.LCMExtension.db_path = {str(db)!r}\n"
            f"c.LCMExtension.secret_key_file = {str(home / 'team' / 'secret.key')!r}\n"
            f"c.LCMExtension.openai_base_url = {sim.url!r}\n",
            "utf-8",
        )
        # As a user types it: the installed command, in a terminal with no LCM_* variable.
        argv = ["keys", "create", "team-a", "--budget", "1", "--provider-key"]
        created = subprocess.run(
            [_jupyter(), "lcm", *argv, f"openai={PROVIDER_KEY}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ),
        )
        assert created.returncode == 0, created.stderr
        record = json.loads(created.stdout)
        assert f"database: {db}" in created.stderr
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT name FROM proxy_keys").fetchall() == [("team-a",)]
        assert not (home / "data" / "lcm" / "lcm.sqlite3").exists()  # not the default one

        # A server with that config accepts the key, and the commands find it running.
        port = free_port()
        proc = start_server(port, dict(os.environ), home)
        url = f"http://127.0.0.1:{port}/"
        try:
            jp_asyncio_loop.run_until_complete(wait_ready(url, proc))
            sdk = openai.OpenAI(
                base_url=f"{url}lcm/proxy/openai/v1", api_key=record["key"], max_retries=0
            )
            chat = [{"role": "user", "content": "hello"}]
            assert sdk.chat.completions.create(model="gpt-4o-mini", messages=chat).choices
            _found_running(url, record, capsys, monkeypatch, home)
        finally:
            stop([proc])

    assert run(["keys", "list"]) == 0
    out = capsys.readouterr().out
    assert "team-a" in out and "$1.00/month" in out and "active" in out


def _found_running(url: str, record: dict, capsys, monkeypatch, home: Path) -> None:
    capsys.readouterr()
    # Found as `jupyter server list` finds it (the runtime dir), token and all.
    assert run(["report"]) == 0
    captured = capsys.readouterr()
    assert f"using the Jupyter server at {url} (pid " in captured.err
    assert captured.out.startswith("30d (") and " 1 requests, $" in captured.out
    assert "e-0" not in captured.out  # money, never 6.9e-06
    assert run(["reconcile"]) == 0
    out = capsys.readouterr().out
    assert f"key {record['id']} (team-a): counter $" in out and "drift $0.00" in out

    # A wrong token: one line that says which token to pass.
    assert run(["report", "--url", url, "--token", "wrong"]) == 1
    err = one_line(capsys)
    assert f"the server at {url} refused the token" in err
    assert "--token" in err and "jupyter server list" in err

    # A listed server that refuses its own token (a password server) or has no lcm-jupyter.
    fake = home / "rt-other"
    fake.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(fake))
    info = {"url": url, "token": "stale", "pid": os.getpid(), "root_dir": str(home)}
    (fake / "jpserver-1.json").write_text(json.dumps(info), "utf-8")
    assert run(["report"]) == 1
    assert "refused the token it lists; pass --url URL --token TOKEN" in one_line(capsys)
    (fake / "jpserver-1.json").write_text(json.dumps({**info, "token": ""}), "utf-8")
    assert run(["report"]) == 1
    err = one_line(capsys)
    assert "has no token (a password server): run this in one of its terminals" in err
    gone = f"http://127.0.0.1:{free_port()}/"
    (fake / "jpserver-1.json").write_text(json.dumps({**info, "url": gone}), "utf-8")
    assert run(["reconcile"]) == 1
    err = one_line(capsys)
    assert f"({gone}) has lcm-jupyter" in err and "jupyter server extension enable" in err
    (fake / "jpserver-1.json").unlink()
    assert run(["report"]) == 1
    assert "no running Jupyter server found" in one_line(capsys)


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        ([], 2, "jupyter lcm needs a command: demo, keys, pricing, reconcile, report"),
        (["bogus"], 2, "unknown command 'bogus'"),
        (["keys", "bogus"], 2, "unknown command 'bogus' (commands: list, create, revoke"),
        (["keys", "create", "x", "--provider-key", "sk-abc"], 2, "takes PROVIDER=KEY"),
        (["keys", "create"], 2, "jupyter lcm keys create takes NAME"),
        (["keys", "create", "x", "--budget", "lots"], 2, "--budget: expected a float"),
        (["keys", "revoke", "abc"], 2, "takes a key id, a number"),
        (["keys", "revoke", "99"], 1, "(jupyter lcm keys list shows the ids)"),
        (["keys", "--nope"], 2, "unknown option --nope"),
        (["report", "--by", "colour"], 2, "--by: invalid choice: 'colour'"),
        (["report", "--token"], 2, "--token needs a value"),
        (["report"], 1, "no running Jupyter server found"),
        (["demo", "--port", "abc"], 2, "--port: expected an int"),
    ],
)
def test_every_mistake_is_one_line_with_the_fix(home, capsys, argv, code, says):
    assert run(argv) == code
    assert says in one_line(capsys)


def test_unreachable_servers_and_bad_configuration_are_one_line(home, capsys, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/"
    assert run(["reconcile", "--url", url]) == 1
    err = one_line(capsys)
    assert err.startswith(f"error: cannot reach {url}") and "jupyter server list" in err

    monkeypatch.setenv("LCM_BUDGET_MODE", "loose")
    assert run(["keys"]) == 1
    assert "LCM_BUDGET_MODE='loose'" in one_line(capsys)
    monkeypatch.delenv("LCM_BUDGET_MODE")
    config = home / "cfg" / "jupyter_server_config.py"
    config.write_text("c.LCMExtension.upstream_read_timeout = -1\n", "utf-8")
    assert run(["keys"]) == 1
    assert "LCMExtension.upstream_read_timeout must be positive" in one_line(capsys)
    config.write_text("c.LCMExtension.db_path = (\n", "utf-8")
    assert run(["keys"]) == 1
    assert "cannot load the Jupyter config" in one_line(capsys)


def test_options_on_the_command_line_beat_the_config_files(home, capsys):
    (home / "cfg" / "jupyter_server_config.py").write_text(
        f"c.LCMExtension.db_path = {str(home / 'configured.sqlite3')!r}\n", "utf-8"
    )
    assert run(["keys", "create", "a", "--db-path", str(home / "given.sqlite3")]) == 0
    assert f"database: {home / 'given.sqlite3'}" in capsys.readouterr().err
    assert run(["keys"]) == 0
    captured = capsys.readouterr()
    assert f"database: {home / 'configured.sqlite3'}" in captured.err
    assert captured.out.startswith("no keys yet")


def test_version_and_help_all_list_the_servers_options(home, capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"{__version__}\n"
    assert run(["--help-all"]) == 0
    out = capsys.readouterr().out
    words = " ".join(out.split())  # help is wrapped
    for option in OPTIONS:
        assert f"--LCMExtension.{option.name}=" in out, option.name
        assert f"Env: {option.env}." in words, option.name
    for command in ("demo", "keys", "pricing", "reconcile", "report"):
        assert f"\n{command}\n" in out
    assert run(["keys", "create", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--provider-key=" in out and "--budget=" in out and "--db-path=" in out
    # The installed command, as a user runs it.
    version = subprocess.run(
        [_jupyter(), "lcm", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (version.returncode, version.stdout) == (0, f"{__version__}\n")


def test_reports_read_as_money_and_counts():
    assert [format_money(v) for v in (1.455e-05, 6.9e-06, 0.0012, 0, 1234.5678, None)] == [
        "$0.0000146",
        "$0.00000690",
        "$0.00120",
        "$0.00",
        "$1,234.57",
        "—",
    ]
    assert format_money(0.1 + 0.2, exact=True) == "$0.30"  # a float's noise is not a digit
    assert format_money(3.7912345e-3, exact=True) == "$0.0037912345"
    assert format_count(1234567) == "1,234,567"
    table = cli.text_table(
        cli.REPORT_COLUMNS,
        [{"name": "gpt-4o-mini", "cost_usd": 1.455e-05, "requests": 12345, "error_rate": 0.25}],
    )
    assert "$0.0000146" in table and "12,345" in table and "25.0%" in table
    assert "e-05" not in table


def test_reconcile_says_keys_without_a_budget_have_nothing_to_drift():
    answer = {
        "month": "2026-12",
        "store": "memory",
        "keys": [
            {"key_id": 1, "name": "capped", "budget_usd": 5.0, "counter_usd": 1.5,
             "logged_usd": 1.25, "drift_usd": 0.25},
            {"key_id": 2, "name": "open", "budget_usd": None, "counter_usd": None,
             "logged_usd": 0.5, "drift_usd": None},
        ],
    }  # fmt: skip
    header, capped, uncapped = cli.reconcile_lines(answer)
    assert header == "reconciled 2026-12 (counters: memory)"
    assert capped == "  key 1 (capped): counter $1.50, logged $1.25, drift $0.25"
    assert uncapped == ("  key 2 (open): logged $0.50; no budget, so no counter to reconcile")


def test_keys_create_has_an_option_per_flagged_key_field(home, capsys):
    """The options come from the key's declaration (core.keyspec.KEY_FIELDS): each flagged
    field is settable, and checked by the API's own check."""
    from lcm_jupyter.core.keyspec import KEY_FIELDS

    flagged = {f.flag for f in KEY_FIELDS if f.flag}
    assert flagged == {"provider", "budget", "rpm", "routing", "cache-ttl"}
    argv = ["keys", "create", "team", "--provider", "openai", "--budget", "2.5", "--rpm", "60"]
    argv += ["--routing", "auto", "--cache-ttl", "300", "--provider-key", "openai=sk-test"]
    assert run(argv) == 0
    record = json.loads(capsys.readouterr().out)
    assert {k: record[k] for k in ("provider", "monthly_budget_usd", "rate_limit_rpm")} == {
        "provider": "openai",
        "monthly_budget_usd": 2.5,
        "rate_limit_rpm": 60,
    }
    assert (record["routing_mode"], record["cache_ttl_seconds"]) == ("auto", 300)
    assert run(["keys", "create", "x", "--routing", "sometimes"]) == 2
    assert "routing" in capsys.readouterr().err
    assert run(["keys", "create", "x", "--rpm", "0"]) == 1  # the API's check: above 0
    assert "rate_limit_rpm" in one_line(capsys)
