"""The inspector in a real JupyterLab, driven by a real (headless) Chromium.

Starts JupyterLab on 127.0.0.1 (free port, token, its own config/runtime/data dirs under the test's tmp dir)
serving a copy of notebooks/04_inspect_queries.ipynb, opens it with Playwright, runs all cells, selects a
query and moves the score-threshold slider, and asserts the displayed content changed. Every request that
is not to 127.0.0.1 is aborted. A screenshot is saved to the tmp dir (path printed); with
WORKBENCH_UPDATE_SCREENSHOT=1 it is also copied to docs/inspector.png (the README's picture).

Skips (with the reason; fails instead when WORKBENCH_REQUIRE_BROWSER is set, as CI does) unless Chromium (Debian `chromium`, or WORKBENCH_CHROMIUM=path), the `playwright`
Python package and JupyterLab with ipywidgets are installed. Never runs `playwright install`.
Bounded: every wait has a deadline; the server, its kernels and the browser are stopped in all cases.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_inspect_queries.ipynb"
SCREENSHOT = ROOT / "docs" / "inspector.png"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
SERVER_START_S = 120
NOTEBOOK_RUN_S = 420  # trains a tiny model first on a slow shared CPU
INTERACTION_S = 120


def _chromium() -> str | None:
    for candidate in (os.environ.get("WORKBENCH_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _requirements() -> tuple[str | None, str]:
    """(chromium path, "") when everything is there, else (None, why not)."""
    chromium = _chromium()
    if chromium is None:
        return None, "no Chromium (apt-get install chromium, or set WORKBENCH_CHROMIUM)"
    missing = []
    for module in ("playwright.sync_api", "jupyterlab", "ipywidgets", "jupyterlab_widgets", "psutil", "nbformat"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module.split(".")[0])
    if missing:
        return None, f"missing Python packages: {', '.join(missing)} (pip install -e .[dev,notebooks])"
    return chromium, ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, token: str, path: str, method: str = "GET"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return json.loads(body) if body else None


def _stop(proc: subprocess.Popen, port: int, token: str) -> None:
    """Shut the kernels down through the API, then the server's process group; kill any descendant left
    (kernels run in their own sessions) by pid."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    try:
        for kernel in _api(port, token, "/api/kernels") or []:
            _api(port, token, f"/api/kernels/{kernel['id']}", method="DELETE")
    except (OSError, urllib.error.URLError, ValueError):
        pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _prepare_root(root: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    """A copy of notebook 04 with injected parameters: work dir in tmp, threshold 0 so queries are kept at
    first (the slider then empties the kept set)."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    i = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    from notebook_parameters import small_parameters

    params = {**small_parameters(NOTEBOOK.stem, work.parent), "WORK_DIR": str(work), "SCORE_THRESHOLD": 0.0}
    extra = os.environ.get("WORKBENCH_BROWSER_PARAMS")  # e.g. '{"RUN_DIR": "runs/demo"}' for a nicer picture
    if extra:
        params.update(json.loads(extra))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    cell["id"] = "injected-parameters"
    nb.cells.insert(i + 1, cell)
    root.mkdir(parents=True)
    nbformat.write(nb, root / NOTEBOOK.name)
    return root / NOTEBOOK.name


@pytest.fixture
def jupyterlab(tmp_path):
    chromium, why = _requirements()
    if chromium is None:
        if os.environ.get("WORKBENCH_REQUIRE_BROWSER"):  # .ci/run sets it after installing Chromium
            pytest.fail(f"WORKBENCH_REQUIRE_BROWSER is set but the browser test cannot run: {why}")
        print(f"test_browser skipped: {why}")
        pytest.skip(why)
    root = tmp_path / "root"
    _prepare_root(root, tmp_path / "work")
    config, runtime, data = tmp_path / "jupyter-config", tmp_path / "jupyter-runtime", tmp_path / "jupyter-data"
    for d in (config, runtime, data, config / "labconfig"):
        d.mkdir(parents=True, exist_ok=True)
    # no news feed, no update check, no extension manager: nothing may leave the machine
    (config / "labconfig" / "page_config.json").write_text(json.dumps({"disabledExtensions": {
        "@jupyterlab/apputils-extension:announcements": True,
        "@jupyterlab/extensionmanager-extension": True}}))
    lab_cfg = {"LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate"}}
    for name in ("jupyter_server_config.json", "jupyter_lab_config.json"):
        (config / name).write_text(json.dumps(lab_cfg))
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTER_DATA_DIR": str(data), "IPYTHONDIR": str(tmp_path / "ipython")}
    env.pop("JUPYTER_PATH", None)
    log = open(tmp_path / "jupyterlab.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}", f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
           "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:  # CI containers run as root
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {proc.returncode}:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                _api(port, token, "/api/status")
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"JupyterLab did not answer within {SERVER_START_S} s:\n"
                                         f"{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield {"port": port, "token": token, "chromium": chromium, "tmp": tmp_path}
    finally:
        _stop(proc, port, token)
        log.close()


def _loopback_only(route) -> None:
    host = urllib.parse.urlparse(route.request.url).hostname
    if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def test_inspector_in_jupyterlab(jupyterlab):
    from playwright.sync_api import sync_playwright

    port, token, tmp = jupyterlab["port"], jupyterlab["token"], jupyterlab["tmp"]
    started = time.perf_counter()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp / "chromium-profile"), executable_path=jupyterlab["chromium"], headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1700})
        try:
            context.route("**/*", _loopback_only)
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(INTERACTION_S * 1000)
            page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
            page.wait_for_function(
                "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                " return k && k.status === 'idle'; }", timeout=SERVER_START_S * 1000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            figure = page.locator("img.wb-query-figure")
            figure.wait_for(state="visible", timeout=NOTEBOOK_RUN_S * 1000)
            page.wait_for_function("() => !!document.querySelector('img.wb-query-figure').src")
            summary = page.locator(".wb-summary .wb-kept-count")
            kept_before = summary.inner_text()
            assert kept_before.startswith("kept ") and not kept_before.startswith("kept 0 "), kept_before
            src_before = figure.get_attribute("src")
            selected_before = page.locator(".wb-table tr.wb-row-selected td").first.inner_text()

            # select another query: its figure and the table highlight change
            select = page.locator(".wb-query select")
            count = select.locator("option").count()
            assert count >= 2
            select.select_option(index=1)  # the runner-up (the best-ranked query is selected at start)
            page.wait_for_function("(src) => document.querySelector('img.wb-query-figure').src !== src", arg=src_before)
            page.wait_for_function(
                "(q) => { const r = document.querySelector('.wb-table tr.wb-row-selected td');"
                " return r && r.textContent !== q; }", arg=selected_before)
            assert page.locator(".wb-table tr.wb-row-selected td").first.inner_text() != selected_before

            shot = tmp / "inspector.png"  # the README picture: a query selected, the kept set drawn
            page.locator(".wb-inspector").screenshot(path=str(shot))

            # move the score-threshold slider to its maximum (keyboard End on the handle): nothing is kept
            kept_src = page.locator("img.wb-kept-figure").get_attribute("src")
            handle = page.locator(".wb-threshold .noUi-handle")
            handle.focus()
            handle.press("End")
            page.wait_for_function(
                "() => document.querySelector('.wb-summary .wb-kept-count').textContent.startsWith('kept 0 ')")
            assert page.locator(".wb-threshold .widget-readout").inner_text().strip() == "1.00"
            page.wait_for_function("(src) => document.querySelector('img.wb-kept-figure').src !== src", arg=kept_src)
            assert summary.inner_text() != kept_before

            page.screenshot(path=str(tmp / "jupyterlab.png"))
            print(f"screenshots: {shot} {tmp / 'jupyterlab.png'}; browser test {time.perf_counter() - started:.0f} s")
            assert shot.stat().st_size > 10_000
            if os.environ.get("WORKBENCH_UPDATE_SCREENSHOT"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copy(shot, SCREENSHOT)
                print(f"copied to {SCREENSHOT}")
        finally:
            context.close()
