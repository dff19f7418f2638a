"""Notebook 02's viewer and notebook 05's plotly 4D figure in a real JupyterLab, driven by headless
Chromium.

Needs Debian's `chromium` (`apt-get install -y chromium`) and the Python package `playwright` (never
`playwright install`: the system browser is used). Skipped only when /usr/bin/chromium is absent.

JupyterLab runs on loopback with a token, its own settings/workspace/runtime folders (an
overrides.json turns off the news pop-up and autosave) and a copy of the notebook in a temporary
root, so nothing in the repository or the user's Jupyter config is touched. The test runs all cells
through `window.jupyterapp` (exposed with `--LabApp.expose_app_in_browser`), moves the time and
threshold sliders with the keyboard, and reads the score label, which must show exactly what
`MaskOverlayViewer` computes for that frame outside the browser. For notebook 05 it waits for the plotly
3D plot (rendered by the `jupyterlab-plotly` extension from the pip package, offline) and checks that
WebGL drew it: a screenshot of the plot's WebGL canvas alone (plotly's SVG layers -- title, colour
bar, legend, slider -- hidden) must show the points in the P(dynamic) colours and the orange camera
frustums. `toDataURL()` cannot be used: plotly creates its WebGL context without
`preserveDrawingBuffer`, so the canvas reads back blank between frames. Headless Chromium has no GPU;
WebGL comes from SwiftShader (`WEBGL_ARGS`, only for that test).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = REPO_ROOT / "notebooks" / "02_mask_overlays.ipynb"
NOTEBOOK_4D = REPO_ROOT / "notebooks" / "05_reconstruction_4d.ipynb"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# WebGL without a GPU: ANGLE on SwiftShader (Chromium's CPU rasteriser), for plotly's 3D plots.
WEBGL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
}
# Every cell in the DOM (JupyterLab 4 otherwise leaves cells out of view unrendered): notebook 05's plot
# sits above the last cell, where run-all leaves the view.
NO_WINDOWING = {"@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"}}

# What the notebook's viewer must show, computed outside the browser with the notebook's defaults.
EXPECTED_SCRIPT = """
import json, sys, tempfile
from page4d.experiments import trained_heads
from page4d.inference import extract, loading
from page4d.report import viz
from page4d.data import scene_to_batch
from page4d.determinism import set_determinism
set_determinism(0, 1)
run_dir = tempfile.mkdtemp()
scene = loading.load_clip("", (112, 154), 4, 2, 0, run_dir)
model, _ = trained_heads.trained_model("tiny", "", run_dir, (112, 154), 4, 2, 0, outputs=tempfile.mkdtemp())
pred = extract.run_model(model, scene_to_batch(scene).images, return_internals=False)
prob = extract.mask_probabilities(pred["mask_logits"], scene.image_size)
v = viz.MaskOverlayViewer(
    scene.images, prob, scene.masks, scene.mask_valid, scene.times, scene.views, 0.5, 0.5
)
texts = [v.score_text()]
v.time.value = 1
texts.append(v.score_text())
v.threshold.value = 0.3
texts.append(v.score_text())
print(json.dumps(texts))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on loopback serving a copy of notebook 02; yields (base url, token)."""
    yield from _serve_lab(tmp_path, NOTEBOOK)


@pytest.fixture
def lab_4d(tmp_path):
    """The same, serving notebook 05."""
    yield from _serve_lab(tmp_path, NOTEBOOK_4D, NO_WINDOWING)


def _serve_lab(tmp_path: Path, notebook: Path, overrides: dict | None = None):
    root = tmp_path / "root" / "notebooks"
    root.mkdir(parents=True)
    shutil.copy(notebook, root / notebook.name)
    app_settings = tmp_path / "app-settings"
    app_settings.mkdir()
    (app_settings / "overrides.json").write_text(json.dumps({**OVERRIDES, **(overrides or {})}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        PAGE4D_OUTPUTS=str(tmp_path / "outputs"),
        JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
        OMP_NUM_THREADS="1",
    )
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path / 'root'}",
            f"--LabApp.app_settings_dir={app_settings}",
            f"--LabApp.user_settings_dir={tmp_path / 'user-settings'}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers often run as root
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/api/status?token={token}", proc, timeout=60)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _open_and_run_all(page, base: str, token: str, name: str, clear_first: bool = False) -> None:
    """Open `notebooks/<name>` in JupyterLab, wait for its kernel, run all cells (without waiting);
    `clear_first`: clear the stored outputs first, so that what is checked is this run's."""
    page.set_default_timeout(60_000)
    page.goto(f"{base}/lab/tree/notebooks/{name}?reset&token={token}")
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return w && w.sessionContext && w.sessionContext.isReady"
        " && w.sessionContext.session && w.sessionContext.session.kernel; }"
    )
    if clear_first:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        page.wait_for_function("() => !document.querySelector('.jp-OutputArea-output')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


@needs_chromium
def test_time_slider_updates_score_label_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    expected_proc = subprocess.Popen(
        [sys.executable, "-c", EXPECTED_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            _open_and_run_all(page, base, token, NOTEBOOK.name)
            label = page.locator(".page4d-score")
            label.wait_for(state="visible", timeout=75_000)

            out, err = expected_proc.communicate(timeout=60)
            assert expected_proc.returncode == 0, err
            first, after_time, after_threshold = json.loads(out)
            page.wait_for_function(
                "t => document.querySelector('.page4d-score').innerText.trim() === t", arg=first
            )

            page.locator(".page4d-time .noUi-handle").focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "t => document.querySelector('.page4d-score').innerText.trim() === t", arg=after_time
            )
            assert after_time != first

            page.locator(".page4d-threshold .noUi-handle").focus()
            for _ in range(20):  # 0.50 -> 0.30 in steps of 0.01
                page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "t => document.querySelector('.page4d-score').innerText.trim() === t", arg=after_threshold
            )
            assert label.inner_text().strip() == after_threshold
            assert after_threshold != after_time  # a lower threshold changes the trained mask's IoU
        finally:
            browser.close()
            if expected_proc.poll() is None:
                expected_proc.kill()


def _webgl_pixels(png: bytes) -> dict[str, float]:
    """What a screenshot of plotly's WebGL canvas shows: its spread of grey levels, the pixels in the
    P(dynamic) scale (blue -> purple -> red: no green) and in the cameras' orange."""
    import io

    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return {
        "std": float(rgb.std()),
        "points": int(((g < 40) & (np.maximum(r, b) > 100)).sum()),
        "cameras": int(((r > 200) & (g > 100) & (g < 180) & (b < 60)).sum()),
    }


@needs_chromium
def test_plotly_4d_viewer_draws_with_webgl_in_jupyterlab(lab_4d, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token = lab_4d
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, *WEBGL_ARGS],
            viewport={"width": 1400, "height": 1000},
        )
        page = browser.new_page()
        try:
            renderer = page.evaluate(
                "() => { const gl = document.createElement('canvas').getContext('webgl');"
                " return gl ? gl.getParameter(gl.RENDERER) : 'no WebGL'; }"
            )
            _open_and_run_all(page, base, token, NOTEBOOK_4D.name, clear_first=True)  # not the stored plot
            # the output jupyterlab-plotly renders (the output element is the .js-plotly-plot itself)
            plot = page.locator(".jp-RenderedPlotly").first
            plot.wait_for(state="attached", timeout=120_000)
            canvas = plot.locator(".gl-container canvas").first
            try:
                canvas.wait_for(state="attached", timeout=30_000)
            except PlaywrightTimeout:
                pytest.fail(f"plotly drew no WebGL canvas ({renderer}); the plot says {plot.inner_text()!r}")
            canvas.scroll_into_view_if_needed()
            hide_svg = "() => document.querySelectorAll('.js-plotly-plot svg.main-svg')"
            page.evaluate(hide_svg + ".forEach(s => s.style.visibility = 'hidden')")
            seen = {}
            for _ in range(30):  # plotly draws on later animation frames
                seen = _webgl_pixels(canvas.screenshot())
                if seen["points"] > 1000 and seen["cameras"] > 20:
                    break
                page.wait_for_timeout(500)
            (tmp_path / "webgl_canvas.png").write_bytes(canvas.screenshot())  # for a failing run
            assert seen["std"] > 5, f"the WebGL canvas is one flat colour ({renderer}): {seen}"
            assert seen["points"] > 1000, f"no points in the P(dynamic) colours ({renderer}): {seen}"
            assert seen["cameras"] > 20, f"no orange camera frustums ({renderer}): {seen}"
        finally:
            page.screenshot(path=str(tmp_path / "jupyterlab.png"), full_page=True)  # for a failing run
            browser.close()
