"""Installation and configuration: enabled by `pip install`, env fallbacks, the offline demo."""

from __future__ import annotations

import importlib.util
import os
import re
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
    # As a user runs it: JupyterLab (when installed, as the [lab] extra does), from any folder.
    lab = importlib.util.find_spec("jupyterlab") is not None
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    data = tmp_path / "d"
    out = subprocess.run(
        [_jupyter(), "lcm", "demo", "--check", "--data-dir", str(data)]
        + ([] if lab else ["--server-only"]),
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo check: OK" in out.stdout
    assert "Seeded 30 days of made-up history" in out.stdout  # the dashboard has data
    for provider in ("openai", "anthropic", "google"):
        assert f"logged {provider}" in out.stdout
    # The packaged notebooks are copied into the demo's folder, Jupyter's root there, and
    # Lab opens the dashboard notebook.
    notebooks = data / "notebooks"
    assert (notebooks / "dashboard.ipynb").is_file() and (notebooks / "quickstart.ipynb").is_file()
    assert f"Notebooks: {notebooks}" in out.stdout
    if lab:
        opened = r"JupyterLab: http://127\.0\.0\.1:\d+/lab/tree/dashboard\.ipynb\?token="
        assert re.search(opened, out.stdout), out.stdout


def test_the_demo_seeds_history_once(tmp_path, capsys):
    from lcm_jupyter import cli

    settings = Settings(db_path=tmp_path / "demo.sqlite3", secret_key_file=tmp_path / "k")
    cli._seed_demo_history(settings)
    assert "Seeded 30 days" in capsys.readouterr().out
    with sqlite3.connect(settings.db_path) as conn:
        (calls,) = conn.execute("SELECT COUNT(*) FROM proxy_logs").fetchone()
    assert calls > 0
    cli._seed_demo_history(settings)  # a second demo run keeps what is there
    assert capsys.readouterr().out == ""
    with sqlite3.connect(settings.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM proxy_logs").fetchone() == (calls,)


def test_the_demo_copies_the_packaged_notebooks_and_keeps_yours(tmp_path):
    from lcm_jupyter.cli import _demo

    # The notebooks are package data (in the wheel), not a checkout's folder.
    source = _demo.example_notebooks()
    assert source == Path(_demo.__file__).resolve().parents[1] / "notebooks"
    shipped = sorted(p.name for p in source.glob("*.ipynb"))
    assert "dashboard.ipynb" in shipped and "quickstart.ipynb" in shipped

    root = tmp_path / "notebooks"
    assert _demo._dashboard_notebook(root) is None  # nothing there yet
    assert _demo.copy_notebooks(source, root) == shipped
    assert sorted(p.name for p in root.glob("*.ipynb")) == shipped
    assert (root / "dashboard.ipynb").read_bytes() == (source / "dashboard.ipynb").read_bytes()
    assert _demo._dashboard_notebook(root) == "dashboard.ipynb"

    # A second run copies nothing; a notebook you edited stays yours even when the package's
    # changes, and one you left alone follows the package's new version.
    assert _demo.copy_notebooks(source, root) == []
    newer = tmp_path / "newer"
    shutil.copytree(source, newer)
    for name in ("dashboard.ipynb", "quickstart.ipynb"):
        (newer / name).write_text((source / name).read_text("utf-8") + "\n", "utf-8")
    (root / "quickstart.ipynb").write_text("{}", "utf-8")  # yours now
    assert _demo.copy_notebooks(newer, root) == ["dashboard.ipynb"]
    assert (root / "quickstart.ipynb").read_text("utf-8") == "{}"
    assert (root / "dashboard.ipynb").read_bytes() == (newer / "dashboard.ipynb").read_bytes()


async def test_kernels_are_told_where_the_extension_is(lcm, jp_serverapp, monkeypatch):
    import os

    from lcm_jupyter import client

    monkeypatch.delenv(client.URL_ENV, raising=False)
    monkeypatch.delenv(client.TOKEN_ENV, raising=False)
    monkeypatch.delenv(client.KERNEL_TOKEN_ENV, raising=False)
    (app,) = jp_serverapp.extension_manager.extension_apps["lcm_jupyter"]
    await app._start_jupyter_server_extension(jp_serverapp)
    assert os.environ[client.URL_ENV] == jp_serverapp.connection_url
    # A credential of the kernels' own (tests/test_kernel_auth.py), not the server's token.
    assert os.environ[client.KERNEL_TOKEN_ENV]
    assert client.TOKEN_ENV not in os.environ
    assert client.proxy_url("openai") == jp_serverapp.connection_url + "lcm/proxy/openai/v1"
