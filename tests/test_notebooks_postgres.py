"""The example notebooks on PostgreSQL: each runs under nbval, as the suite runs them on SQLite,
with `LCM_DB_URL` pointing its kernel-hosted server at a fresh PostgreSQL database.

The notebooks give `lcm_jupyter.serve()` a SQLite path; `db_url`, when set, wins over it,
so the same notebooks, outputs and all, must hold on the other engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "lcm_jupyter" / "notebooks"


@pytest.mark.parametrize("notebook", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_holds_on_postgresql(notebook, pg_url, tmp_path):
    env = {**os.environ, "LCM_DB_URL": pg_url}
    env.pop("LCM_TEST_ENGINE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(NOTEBOOKS / notebook)],
        cwd=NOTEBOOKS.parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # The kernel wrote to PostgreSQL, not to the notebook's SQLite file.
    import psycopg

    with psycopg.connect(pg_url) as conn:
        (keys,) = conn.execute("SELECT count(*) FROM proxy_keys").fetchone()
    assert keys > 0
