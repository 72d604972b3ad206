"""JupyterLab with the extension, driven by headless Chromium: the browser test's machinery,
and the script that makes the README's screenshots with the very same code.

    python -m tests.browser_screenshots        # rewrites docs/*.png

`running_lab` starts a real `jupyter lab` with the extension, in Jupyter dirs of its own,
its database seeded with 30 days of history (`lcm_jupyter.testing.history`) and its
upstreams at a simulated provider; then it makes a few live calls through the proxy with
the official SDKs. The notebook it serves is the dashboard notebook shipped in the
package (lcm_jupyter/notebooks/dashboard.ipynb) without the cells tagged `offline-demo`
(they start a proxy inside the kernel for nbval; here the kernel finds the server extension
through LCM_SERVER_URL and the kernel credential, which the extension puts in the server's
environment before any kernel starts).

`Notebook` opens it in Chromium (Debian's /usr/bin/chromium through Playwright; nothing
is downloaded) in a 1024 px wide window, the width the widgets must fit, runs every cell
as a user would (JupyterLab's "Run All Cells" command) and screenshots the output of each
cell tagged `screenshot:<name>` as `<name>.png`; the recent calls with one routed call's
detail open (`open_routed_detail`), as a user would click it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

import lcm_jupyter
from lcm_jupyter.client import LCMClient
from lcm_jupyter.testing import SimulatedProvider
from lcm_jupyter.testing.history import History, seed_history

from .conftest import PROVIDER_KEY
from .servers import TOKEN, free_port, server_env, wait_ready

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "lcm_jupyter" / "notebooks" / "dashboard.ipynb"  # shipped in the package
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections (updates, field
# trials, sync) stall page loads in a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OFFLINE_TAG = "offline-demo"
SHOT_TAG = "screenshot:"
VIEWPORT = {"width": 1024, "height": 900}  # the window the widgets must fit (issue 14)
SHOT_MARGIN = 8
TIMEOUT_MS = 45_000
CHART_SETTLE_MS = 600  # bqplot's transitions (the dashboard's take 300 ms) end within this

# JupyterLab settings for a quiet, deterministic page: no news prompt over the notebook,
# and every cell in the DOM (windowing renders only the cells in view).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
LAB_FLAGS = [
    "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands, not keystrokes
    "--LabApp.extension_manager=readonly",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
]
# Live calls made once the server is up, on top of the seeded history: (key, provider, model).
LIVE_CALLS = (
    ("support-bot", "openai", "gpt-4o-mini"),
    ("research", "anthropic", "claude-haiku-4-5"),
    ("batch-eval", "google", "gemini-2.5-flash"),
)


def browser_notebook(source: Path = NOTEBOOK) -> tuple[nbformat.NotebookNode, dict[str, int]]:
    """The notebook as the browser runs it (offline-demo cells dropped, outputs cleared),
    and the index of each screenshot's cell in it."""
    nb = nbformat.read(source, as_version=4)
    cells, shots = [], {}
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if OFFLINE_TAG in tags:
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        shots.update((t[len(SHOT_TAG) :], len(cells)) for t in tags if t.startswith(SHOT_TAG))
        cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb, shots


@dataclass
class Lab:
    """A running JupyterLab with the extension."""

    url: str
    root: Path
    history: History
    log_path: Path
    live_calls: list[dict]

    @property
    def token(self) -> str:
        return TOKEN

    def client(self) -> LCMClient:
        return LCMClient(self.url, TOKEN)

    def server_log(self) -> str:
        """The end of the server's output, for failure messages."""
        return self.log_path.read_text(errors="replace")[-4000:]


def _write_lab_settings(config_dir: Path) -> None:
    for plugin, values in LAB_SETTINGS.items():
        path = config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@contextlib.contextmanager
def running_lab(tmp: Path, *, notebook: Path = NOTEBOOK, seed: int = 0) -> Iterator[Lab]:
    """`jupyter lab` with the extension, history seeded, the browser notebook in its root."""
    root = tmp / "root"
    root.mkdir(parents=True)
    nb, _ = browser_notebook(notebook)
    nbformat.write(nb, root / notebook.name)
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(SimulatedProvider.run_in_thread(api_keys=[PROVIDER_KEY]))
        env = server_env(
            tmp,
            LCM_OPENAI_BASE_URL=sim.url,
            LCM_ANTHROPIC_BASE_URL=sim.url,
            LCM_GOOGLE_BASE_URL=sim.url,
        )
        for name in ("LCM_SERVER_URL", "LCM_SERVER_TOKEN", "JUPYTERHUB_API_TOKEN"):
            env.pop(name, None)  # the kernel must get these from the extension, not from us
        history = seed_history(
            env["LCM_DB_PATH"],
            secret_key_file=env["LCM_SECRET_KEY_FILE"],
            days=30,
            seed=seed,
            provider_api_key=PROVIDER_KEY,
        )
        _write_lab_settings(Path(env["JUPYTER_CONFIG_DIR"]))
        port = free_port()
        log_path = tmp / "lab.log"
        log_file = stack.enter_context(log_path.open("wb"))
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", f"--ServerApp.port={port}",
                "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
                "--ServerApp.jpserver_extensions={'lcm_jupyter': True}",
                f"--ServerApp.root_dir={root}", "--allow-root", "--no-browser",
                "--ServerApp.log_level=WARN", *LAB_FLAGS,
            ],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(_stop, proc)
        url = f"http://127.0.0.1:{port}/"
        asyncio.run(wait_ready(url, proc))
        lab = Lab(url, root, history, log_path, [])
        lab.live_calls = _live_calls(lab)
        yield lab


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server; its kernels are shut down with it."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _live_calls(lab: Lab) -> list[dict]:
    """One call per provider through the proxy with the SDKs; their log rows once written."""
    ids = set()
    for name, provider, model in LIVE_CALLS:
        key = lab.history.key(name).key
        question = f"Live check from the browser test ({provider})."
        if provider == "openai":
            client = lcm_jupyter.openai_client(key, url=lab.url, max_retries=0)
            headers = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": question}]
            ).headers
        elif provider == "anthropic":
            client = lcm_jupyter.anthropic_client(key, url=lab.url, max_retries=0)
            headers = client.messages.with_raw_response.create(
                model=model, max_tokens=200, messages=[{"role": "user", "content": question}]
            ).headers
        else:
            # Kept in a name: a genai.Client closes its connections when collected.
            client = lcm_jupyter.genai_client(key, url=lab.url)
            answer = client.models.generate_content(model=model, contents=question)
            headers = answer.sdk_http_response.headers
        ids.add(headers["x-lcm-request-id"])
    with lab.client() as lcm:
        deadline = time.monotonic() + 15
        while True:  # rows are written in batches, just after the answers
            rows = [r for r in lcm.logs(limit=10) if r["id"] in ids]
            if len(rows) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(rows) == len(LIVE_CALLS) and all(r["status"] == 200 for r in rows), rows
    return rows


@contextlib.contextmanager
def chromium(tmp: Path) -> Iterator:
    """Headless Debian Chromium under Playwright, with a fresh profile in `tmp`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
        )
        try:
            yield context
        finally:
            context.close()


class Notebook:
    """A notebook open in JupyterLab in the browser."""

    def __init__(self, context, lab: Lab, name: str = NOTEBOOK.name) -> None:
        self.lab = lab
        self.page = context.pages[0] if context.pages else context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.goto(f"{lab.url}lab/tree/{name}?token={lab.token}")
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started")
        # The whole width for the notebook (the file browser would open with the layout).
        self.page.evaluate(
            """async () => {
                await window.jupyterapp.restored;
                window.jupyterapp.shell.collapseLeft();
            }"""
        )
        # Run All before the kernel is connected would run nothing (or ask for a kernel).
        self.page.wait_for_function(
            """() => {
                const panel = window.jupyterapp.shell.currentWidget;
                const kernel = panel && panel.sessionContext && panel.sessionContext.session
                    && panel.sessionContext.session.kernel;
                return kernel && kernel.connectionStatus === 'connected'
                    && kernel.status === 'idle';
            }"""
        )

    def diagnostics(self) -> str:
        """What the browser and the server said, for failure messages."""
        console = "\n".join(self.console[-40:])
        return f"browser console:\n{console}\nserver log:\n{self.lab.server_log()}"

    def run_all(self) -> None:
        """Run every cell (Run > Run All Cells) and wait until each has run."""
        # Not awaited in the page: the command's promise settles only when the cells are done.
        self.page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
        )
        try:
            self.page.wait_for_function(
                """() => {
                    const prompts = [...document.querySelectorAll(
                        '.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
                    return prompts.length > 0
                        && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
                }"""
            )
        except Exception as exc:
            raise AssertionError(f"the cells did not all run: {exc}\n{self.diagnostics()}") from exc
        # Tracebacks and warnings, widgets that failed to render, and the widgets' own
        # error lines (an API call that failed).
        problems = self.page.evaluate(
            """() => [
                ...document.querySelectorAll(
                    '[data-mime-type="application/vnd.jupyter.stderr"], .lcm-error'),
                ...[...document.querySelectorAll('.jp-OutputArea-output')]
                    .filter(o => o.innerText.includes('Error displaying widget')),
            ].map(e => e.innerText.trim()).filter(t => t)"""
        )
        assert not problems, "\n".join(problems) + "\n" + self.diagnostics()
        self.page.wait_for_timeout(CHART_SETTLE_MS)

    def _quiet(self) -> None:
        """No active cell (its outline would show) and no mouse over a chart (its toolbar)."""
        self.page.evaluate(
            """() => {
                const notebook = window.jupyterapp.shell.currentWidget.content;
                notebook.activeCellIndex = 0;
                notebook.deselectAll();
            }"""
        )
        self.page.mouse.move(0, VIEWPORT["height"] - 1)

    def cell(self, index: int):
        """The locator of the notebook's cell `index`."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def widget(self, index: int):
        """The locator of the widget that cell `index` displays."""
        widget = self.cell(index).locator(".jp-OutputArea-output > .jupyter-widgets").last
        widget.wait_for(state="visible")
        return widget

    def screenshot(self, index: int, path: Path) -> Path:
        """A PNG of the widget that cell `index` displays, with a white margin."""
        widget = self.widget(index)
        # The notebook scrolls inside the page: make the page tall enough for the whole
        # widget to be in view at once (Playwright's own capture of a taller element
        # resizes the page, which makes JupyterLab lay everything out anew mid-shot).
        height = math.ceil(widget.bounding_box()["height"])
        tall = {"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], height + 300)}
        self.page.set_viewport_size(tall)
        try:
            self._quiet()
            # The cell, not the widget: its input above leaves room for the top margin.
            self.cell(index).scroll_into_view_if_needed()
            self.page.wait_for_timeout(CHART_SETTLE_MS)
            box = widget.bounding_box()
            # The margin stays inside the notebook's own area (off its toolbar and edges) and
            # below the cell's code.
            area = self.page.evaluate(
                """() => {
                    const outer = document.querySelector(
                        '.jp-NotebookPanel .jp-WindowedPanel-outer');
                    const r = outer.getBoundingClientRect();  // client sizes leave out scrollbars
                    return {x: r.x, y: r.y, width: outer.clientWidth, height: outer.clientHeight};
                }"""
            )
            left = max(box["x"] - SHOT_MARGIN, area["x"])
            code = self.cell(index).locator(".jp-Cell-inputWrapper").bounding_box()
            top = max(box["y"] - SHOT_MARGIN, area["y"], code["y"] + code["height"] + 1)
            right = min(box["x"] + box["width"] + SHOT_MARGIN, area["x"] + area["width"])
            bottom = min(box["y"] + box["height"] + SHOT_MARGIN, area["y"] + area["height"])
            clip = {"x": left, "y": top, "width": right - left, "height": bottom - top}
            self.page.screenshot(path=str(path), clip=clip, animations="disabled")
        finally:
            self.page.set_viewport_size(VIEWPORT)
        return path


def open_routed_detail(notebook: Notebook, index: int):
    """Click the detail button (▸) of the log table of cell `index` on the first routed call
    shown (a row with feedback buttons), else on the newest; the detail panel's locator once
    it is shown."""
    table = notebook.widget(index)
    row = table.evaluate(
        """(w) => [...w.querySelectorAll('.lcm-details')].findIndex((button) => {
            // The row's cells follow its detail button in the grid, the feedback cell last.
            let cell = button;
            for (const _ of w.querySelectorAll('.lcm-sort')) cell = cell.nextElementSibling;
            cell = cell.nextElementSibling;
            return cell && cell.querySelector('.fa-thumbs-up') !== null;
        })"""
    )
    table.locator(".lcm-details").nth(max(row, 0)).click()
    panel = table.locator(".lcm-call-detail")
    panel.wait_for(state="visible")
    return panel


def capture(notebook: Notebook, shots: dict[str, int], out: Path) -> dict[str, Path]:
    """Screenshot each tagged cell's widget into `out/<name>.png` (the log table with a routed
    call's detail open, if none is)."""
    out.mkdir(parents=True, exist_ok=True)
    if "log-table" in shots:
        calls = notebook.widget(shots["log-table"])
        if calls.locator(".lcm-call-detail").count() == 0:
            open_routed_detail(notebook, shots["log-table"])
    return {name: notebook.screenshot(i, out / f"{name}.png") for name, i in shots.items()}


def main() -> None:
    """Rewrite docs/*.png from the dashboard notebook running in JupyterLab."""
    import tempfile

    _, shots = browser_notebook()
    with tempfile.TemporaryDirectory(prefix="lcm-shots-") as tmp:
        tmp_path = Path(tmp)
        with running_lab(tmp_path) as lab, chromium(tmp_path) as browser:
            notebook = Notebook(browser, lab)
            notebook.run_all()
            for name, path in capture(notebook, shots, DOCS).items():
                print(f"{name}: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
