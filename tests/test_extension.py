"""Installation and configuration: enabled by `pip install`, env fallbacks, the offline demo."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lcm_jupyter.core.settings import Settings
from lcm_jupyter.server.app import LCMExtension


def _jupyter() -> str:
    exe = Path(sys.executable).with_name("jupyter")
    return str(exe) if exe.exists() else (shutil.which("jupyter") or "jupyter")


def test_pip_install_enables_the_extension():
    out = subprocess.run(
        [_jupyter(), "server", "extension", "list"], capture_output=True, text=True, timeout=60
    )
    text = out.stdout + out.stderr
    line = next(line for line in text.splitlines() if "lcm_jupyter" in line and "enabled" in line)
    assert "enabled" in line
    assert "lcm_jupyter 0." in text and "OK" in text.split("lcm_jupyter 0.", 1)[1].splitlines()[0]


def test_traits_fall_back_to_lcm_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("LCM_DB_PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("LCM_OPENAI_BASE_URL", "http://upstream.invalid/v1")
    monkeypatch.setenv("LCM_UPSTREAM_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("LCM_MAX_REQUEST_BODY_BYTES", "1234")
    monkeypatch.setenv("LCM_REDIS_URL", "redis://localhost:6379/3")
    settings = LCMExtension().lcm_settings()
    assert settings.db_path == tmp_path / "x.db"
    assert settings.base_urls["openai"] == "http://upstream.invalid/v1"
    assert settings.base_urls["anthropic"] == "https://api.anthropic.com"
    assert settings.read_timeout == 7.5
    assert settings.max_body_bytes == 1234
    assert settings.redis_url == "redis://localhost:6379/3"
    # config beats the environment
    app = LCMExtension(db_path=str(tmp_path / "y.db"))
    assert app.lcm_settings().db_path == tmp_path / "y.db"


@pytest.mark.skipif(os.name != "posix", reason="spawns processes the POSIX way")
def test_demo_runs_offline_end_to_end(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    out = subprocess.run(
        [_jupyter(), "lcm", "demo", "--check", "--server-only", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo check: OK" in out.stdout
    assert "Seeded 30 days of made-up history" in out.stdout  # the dashboard has data
    for provider in ("openai", "anthropic", "google"):
        assert f"logged {provider}" in out.stdout


def test_the_demo_seeds_history_once_and_opens_the_dashboard_notebook(tmp_path, capsys):
    from lcm_jupyter import cli

    settings = Settings(db_path=tmp_path / "demo.sqlite3", secret_key_file=tmp_path / "k")
    cli._seed_demo_history(settings)
    assert "Seeded 30 days" in capsys.readouterr().out
    with sqlite3.connect(settings.db_path) as conn:
        (calls,) = conn.execute("SELECT COUNT(*) FROM proxy_logs").fetchone()
    cli._seed_demo_history(settings)  # a second demo run keeps what is there
    assert capsys.readouterr().out == ""
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM proxy_logs").fetchone() == (calls,)
    repo = Path(__file__).resolve().parents[1]
    assert cli._dashboard_notebook(repo) == "notebooks/dashboard.ipynb"
    assert cli._dashboard_notebook(tmp_path) is None


async def test_kernels_are_told_where_the_extension_is(lcm, jp_serverapp, monkeypatch):
    import os

    from lcm_jupyter import client

    monkeypatch.delenv(client.URL_ENV, raising=False)
    monkeypatch.delenv(client.TOKEN_ENV, raising=False)
    (app,) = jp_serverapp.extension_manager.extension_apps["lcm_jupyter"]
    await app._start_jupyter_server_extension(jp_serverapp)
    assert os.environ[client.URL_ENV] == jp_serverapp.connection_url
    assert os.environ[client.TOKEN_ENV] == jp_serverapp.identity_provider.token
    assert client.proxy_url("openai") == jp_serverapp.connection_url + "lcm/proxy/openai/v1"
