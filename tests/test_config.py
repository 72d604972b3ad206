"""The configuration, declared once (`core/settings.py` OPTIONS): the traits made from it, the
README's table of it, and what the server process imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets import TraitError
from traitlets.config import Config

from lcm_jupyter.core.settings import DATA_DIR, OPTION, OPTIONS, Settings
from lcm_jupyter.server.app import LCMExtension
from lcm_jupyter.server.config import ExtensionOptions, build_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_table() -> dict[str, tuple[str, str]]:
    """The README's configuration table: trait -> (env cell, default cell)."""
    text = README.read_text("utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0] != "`trait`":
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    return rows


def _documents_default(option, cell: str) -> bool:
    """Whether a README default cell starts with the option's default as the table writes it."""
    default = option.default
    if option.type is Path:
        return cell.startswith(f"`{DATA_DIR}/{default}`")
    if default in ("", ()):
        return cell.startswith("empty")
    if option.type is bool:
        return cell.startswith(f"`{str(default).lower()}`")
    if option.type is str:
        return cell.startswith(f"`{default}`")
    number = re.match(r"[\d,]+(\.\d+)?", cell)
    return number is not None and float(number[0].replace(",", "")) == default


def test_the_readme_documents_every_option_with_its_variable_and_default():
    table = _readme_table()
    assert list(table) == [o.name for o in OPTIONS]  # every option, in the table's order
    for option in OPTIONS:
        env, default = table[option.name]
        assert env.startswith(f"`{option.env}`"), option.name
        assert _documents_default(option, default), (option.name, default)


def test_the_traits_are_the_options():
    traits = LCMExtension.class_traits(config=True)
    for option in OPTIONS:
        trait = traits[option.name]
        assert option.env in trait.help, option.name
        assert ExtensionOptions.class_traits(config=True)[option.name].help == trait.help
    settings = LCMExtension().lcm_settings()
    assert settings == build_settings(ExtensionOptions())
    assert settings.redis_timeout == OPTION["redis_timeout"].default
    assert settings.reconcile_interval_seconds == 24 * 3600


def test_gc_freeze_is_off_by_default(monkeypatch):
    monkeypatch.delenv("LCM_GC_FREEZE", raising=False)
    assert LCMExtension().gc_freeze is False
    monkeypatch.setenv("LCM_GC_FREEZE", "yes")
    assert LCMExtension().gc_freeze is True


def test_bad_values_name_the_option_and_its_source(monkeypatch, tmp_path):
    monkeypatch.setenv("LCM_UPSTREAM_READ_TIMEOUT", "soon")
    with pytest.raises(TraitError, match="LCM_UPSTREAM_READ_TIMEOUT='soon'"):
        LCMExtension().lcm_settings()
    monkeypatch.delenv("LCM_UPSTREAM_READ_TIMEOUT")
    config = Config(LCMExtension={"redis_timeout": -1.0})
    with pytest.raises(TraitError, match=r"LCMExtension\.redis_timeout must be positive"):
        build_settings(ExtensionOptions(config=config))
    with pytest.raises(ValueError, match="budget_mode must be one of"):
        Settings(db_path=tmp_path / "d", secret_key_file=tmp_path / "k", budget_mode="loose")


def test_the_server_side_does_not_import_the_kernel_side():
    # The extension tells kernels where it is through environment variable names only.
    code = (
        "import sys, lcm_jupyter.server.app; "
        "bad = [m for m in ('lcm_jupyter.client', 'httpx', 'lcm_jupyter.cli', 'IPython') "
        "if m in sys.modules]; sys.exit(str(bad) if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


async def test_a_server_whose_extension_failed_to_load_still_stops(monkeypatch):
    # A bad option: the server logs it and runs without the extension; at SIGTERM it stops
    # every extension, this one too, which never made its services.
    monkeypatch.setenv("LCM_BUDGET_MODE", "loose")
    app = LCMExtension()
    with pytest.raises(TraitError, match="LCM_BUDGET_MODE='loose'"):
        app.initialize_settings()
    await app.stop_extension()
