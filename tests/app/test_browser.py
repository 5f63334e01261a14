"""The dashboard in a real browser: ``streamlit run`` on a free port, driven by Debian's chromium.

Uploads a US + MG pair on Case Review (a real BUS-BRA PNG and CBIS-DDSM DICOM when the public
data folder is present, generated phantoms otherwise), sees the lesion finder's suggested box on
the ultrasound and accepts it, waits for the probability and the CAM images, draws an ROI box by
dragging, clicks the mammogram's lesion centre (centre + radius), uploads a malformed file, then
opens every page and checks that none shows an exception. A full-page screenshot of each step is saved under pytest's
``tmp_path`` (the folder is printed; run with ``-s`` to see it).

The dashboard must work air-gapped: every request the browser makes during the walk (pages,
scripts, fonts, icons, favicons, images, websockets) is recorded, any request to a host other
than the app's own is refused (as it would be offline), and the test fails listing them.

Needs chromium (``apt-get install -y chromium``; ``make test`` installs it) and the ``playwright``
package; Playwright's own browser download is not used.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from tests.app.conftest import REPO_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
EXCEPTION = '[data-testid="stException"]'
ERROR = '[data-testid="stAlertContentError"]'
STARTUP_S = 120
#: Hosts the browser may talk to: the app's own. Anything else would fail in a hospital network.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _chromium() -> str | None:
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(app_checkpoint, app_finder, tmp_path_factory):
    """``streamlit run streamlit_app.py`` on a free local port, with the test checkpoint and
    the test lesion finder."""
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; `make test` does it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {**os.environ, "DLUM_CHECKPOINT": str(app_checkpoint), "DLUM_FINDER": str(app_finder),
           "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        # browser.gatherUsageStats is left to .streamlit/config.toml, so the walk checks it too
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
             "--server.port", str(port), "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc)
        print(f"\nstreamlit server log: {log_path}")


def _is_local(url: str) -> bool:
    """True for a URL that stays on this machine (``data:``/``blob:`` never leave the page)."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "chrome", "chrome-extension", "devtools"):
        return True
    return (parts.hostname or "").lower() in LOCAL_HOSTS


class RequestLog:
    """Every URL the browser asked for, in order; :attr:`external` those that leave the machine."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.external: list[str] = []

    def add(self, url: str) -> None:
        self.urls.append(url)
        if not _is_local(url) and url not in self.external:
            self.external.append(url)


@pytest.fixture(scope="module")
def request_log() -> RequestLog:
    return RequestLog()


@pytest.fixture(scope="module")
def browser_page(app_url, request_log):
    from playwright.sync_api import sync_playwright

    def route(r):
        # As on an air-gapped machine: only the app's own host answers. Refusing here also
        # catches requests that the page events might report late or not at all.
        if _is_local(r.request.url):
            r.continue_()
        else:
            request_log.add(r.request.url)
            r.abort("internetdisconnected")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        context.route("**/*", route)
        context.on("request", lambda r: request_log.add(r.url))
        page = context.new_page()
        page.on("websocket", lambda ws: request_log.add(ws.url))
        page.set_default_timeout(120_000)
        yield page
        context.close()
        browser.close()


def _settle(page, timeout_s: float = 120) -> None:
    """Wait until the app's script run is over (and a moment for the page to paint)."""
    page.wait_for_timeout(400)
    page.wait_for_function(
        "() => { const a = document.querySelector('.stApp');"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning'; }",
        timeout=timeout_s * 1000,
    )
    page.wait_for_timeout(400)


def _screenshot(page, folder: Path, name: str) -> Path:
    """Full-page screenshot: the viewport is stretched to the main area's height (Streamlit
    scrolls inside its own container, so a plain full-page screenshot would stop at the fold)."""
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]') ||"
        " document.querySelector('section.main'); return m ? m.scrollHeight : 1000; }")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": int(min(max(height, 800), 8000))})
    page.wait_for_timeout(600)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def _assert_clean(page, what: str) -> None:
    assert page.locator(EXCEPTION).count() == 0, f"{what}: the page shows an exception"
    errors = page.locator(ERROR).all_inner_texts()
    assert not errors, f"{what}: unexpected error message(s): {errors}"
    # the favicon is fetched by the browser itself, which a headless one may skip: check the link
    icons = page.locator('link[rel~="icon"]').evaluate_all("els => els.map(e => e.href)")
    remote = [u for u in icons if not _is_local(u)]
    assert not remote, f"{what}: the favicon comes from another host: {remote}"


def _pair_files(folder: Path) -> tuple[Path, Path]:
    """A US image and an MG image to upload: public files when present, else phantoms."""
    from tests.conftest import find_shared_data

    data = find_shared_data()
    if data is not None:
        us = data / "us" / "busbra" / "Images" / "bus_0001-l.png"
        mg = data / "mg" / "cbis_ddsm" / "dicom" / "benign_1-130.dcm"
        if us.is_file() and mg.is_file():
            return us, mg
    from dlum.data.synthetic import make_phantom_case

    case = make_phantom_case(7, malignant=True)
    paths = []
    for m in ("us", "mg"):
        path = folder / f"phantom_{m}.png"
        Image.fromarray(np.asarray(case[m], dtype=np.uint8)).save(path)
        paths.append(path)
    return paths[0], paths[1]


def _page_paths() -> list[str]:
    """URL paths of every page file (``pages/2_Cohort_ROC.py`` -> ``Cohort_ROC``)."""
    return [p.stem.split("_", 1)[1] for p in sorted((REPO_ROOT / "pages").glob("[0-9]*_*.py"))]


def test_every_page_in_chromium(app_url, browser_page, request_log, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots: {shots}")
    try:
        _walk_every_page(app_url, browser_page, tmp_path, shots)
    except Exception:
        browser_page.screenshot(path=str(shots / "failure.png"), full_page=True)
        print(f"failure screenshot: {shots / 'failure.png'}")
        print("alerts on the page:", browser_page.locator('[data-testid="stAlert"]').all_inner_texts())
        print("requests off the machine:", request_log.external)
        raise
    # late requests (favicons, lazily loaded fonts) have had the last settle to go out
    browser_page.wait_for_timeout(1000)
    print(f"{len(request_log.urls)} browser requests, {len(request_log.external)} off the machine")
    assert request_log.urls, "no request was recorded: the recorder is broken"
    assert not request_log.external, (
        "the dashboard must work air-gapped, but the browser asked other hosts for:\n  "
        + "\n  ".join(request_log.external))


def _walk_every_page(app_url, page, tmp_path: Path, shots: Path) -> None:
    # Home
    page.goto(app_url)
    page.get_by_text("How to use each page").wait_for()
    _settle(page)
    assert page.get_by_text("For research use only").count() >= 1
    assert page.get_by_text("test-ckpt").count() >= 1
    _assert_clean(page, "Home")
    favicon = page.locator('link[rel~="icon"]').first.evaluate("e => e.href")
    response = page.request.get(favicon)
    assert response.ok and response.headers["content-type"].startswith("image/"), favicon
    _screenshot(page, shots, "0_home")

    # Case Review: upload a pair, wait for the probability
    page.goto(f"{app_url}/Case_Review")
    page.get_by_text("Upload an ultrasound").wait_for()
    _settle(page)
    us, mg = _pair_files(tmp_path)
    uploaders = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    assert uploaders.count() == 2
    t0 = time.perf_counter()
    uploaders.nth(0).set_input_files(str(us))
    page.get_by_text(f"{us.name} ·").wait_for()  # the US image is in: its caption shows
    _settle(page)
    # the lesion finder's box is on the ultrasound figure at once, labelled, not yet used
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.get_by_text(re.compile(r"^suggested · \d\.\d\d")).first.wait_for()
    assert page.get_by_text("the suggested box is not used until accepted").count() == 1
    uploaders.nth(1).set_input_files(str(mg))
    fused = page.locator('[data-testid="stMetric"]', has_text="DL-UM P(malignant)")
    fused.locator('[data-testid="stMetricValue"]').filter(has_text=re.compile(r"\d\.\d{3}")).wait_for()
    _settle(page)
    print(f"pair uploaded to probability shown: {time.perf_counter() - t0:.1f} s")
    assert page.get_by_text(us.name).count() >= 1 and page.get_by_text(mg.name).count() >= 1
    # whole images: the warning and no call until the lesion box is drawn or the user confirms
    page.get_by_text("Outside what the model was trained on").first.wait_for()
    assert page.get_by_text("No call: draw the lesion box").count() >= 1
    _assert_clean(page, "Case Review with a pair")

    # accept the suggested US box: it becomes the lesion box the network reads
    page.get_by_role("button", name="Accept suggested box").click()
    page.get_by_text(re.compile(r"ROI: box \[\d+, \d+, \d+, \d+\] .*accepted")).first.wait_for()
    _settle(page)
    fused.locator('[data-testid="stMetricValue"]').filter(has_text=re.compile(r"\d\.\d{3}")).wait_for()
    value = float(fused.locator('[data-testid="stMetricValue"]').inner_text())
    assert 0.0 <= value <= 1.0
    _assert_clean(page, "Case Review with the suggested box accepted")

    # CAMs on demand: 2 crops + 10 overlays, all decoded by the browser
    page.get_by_test_id("stCheckbox").get_by_text("Compute CAMs").click()
    page.get_by_text("relative within each image").wait_for(timeout=180_000)
    _settle(page)
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == 12
    widths = images.evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    _assert_clean(page, "Case Review with CAMs")
    _screenshot(page, shots, "1_case_review")

    # The report downloads: JSON with the shown probability, PNG with the overlays grid
    def download(label: str) -> Path:
        button = page.get_by_test_id("stDownloadButton").filter(has_text=label).locator("button")
        with page.expect_download() as info:
            button.click()
        return Path(info.value.path())

    report = json.loads(download("Report (JSON)").read_text())
    assert round(report["outputs"]["p_dlum"], 3) == pytest.approx(value, abs=1e-9)
    assert report["inputs"]["us"]["name"] == us.name and report["inputs"]["mg"]["name"] == mg.name
    assert report["inputs"]["us"]["roi_source"]["source"] == "accepted"
    assert report["inputs"]["us"]["roi_box"] == report["inputs"]["us"]["roi_source"][
        "lesion_finder"]["box"]
    assert report["cams"]["method"] == "Grad-CAM"
    overlays = Image.open(download("Overlays (PNG)"))
    assert overlays.format == "PNG" and overlays.size[0] > 6 * 200

    # Draw the US lesion box by dragging on the image (plotly box selection)
    chart.scroll_into_view_if_needed()
    area = chart.locator(".nsewdrag").first
    box = area.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.65, box["y"] + box["height"] * 0.6, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"ROI: box \[\d+, \d+, \d+, \d+\] .*drawn by hand")).first.wait_for(
        timeout=60_000)
    _settle(page)
    fused.locator('[data-testid="stMetricValue"]').filter(has_text=re.compile(r"\d\.\d{3}")).wait_for()
    _assert_clean(page, "Case Review after drawing a box")

    # Click the mammogram's lesion centre (plotly point selection): the box is centre ± radius
    page.get_by_test_id("stCheckbox").get_by_text("Click the lesion centre").click()
    page.get_by_text("Click the lesion's centre;").wait_for()
    _settle(page)
    mg_chart = page.locator('[data-testid="stPlotlyChart"]').nth(1)
    mg_chart.scroll_into_view_if_needed()
    box = mg_chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    page.get_by_text(re.compile(r"ROI: box \[\d+, \d+, \d+, \d+\] .*from lesion centre \+ radius")
                     ).first.wait_for(timeout=60_000)
    _settle(page)
    _assert_clean(page, "Case Review after clicking the lesion centre")
    _screenshot(page, shots, "2_case_review_roi")

    # A malformed upload: a text file named .png gives one clear message, no traceback
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is a text file, not a PNG\n" * 8)
    uploaders.nth(1).set_input_files(str(bad))
    message = page.locator(ERROR).filter(has_text="not a recognised image")
    message.wait_for()
    _settle(page)
    assert "not_an_image.png" in message.inner_text()
    assert page.locator(EXCEPTION).count() == 0
    _screenshot(page, shots, "3_case_review_bad_upload")

    # Every other page
    for number, path in enumerate(p for p in _page_paths() if p != "Case_Review"):
        page.goto(f"{app_url}/{path}")
        page.locator('[data-testid="stMainBlockContainer"] h1').first.wait_for()
        _settle(page, timeout_s=240)
        _assert_clean(page, path)
        _screenshot(page, shots, f"{4 + number}_{path.lower()}")
    print(f"screenshots saved: {sorted(p.name for p in shots.iterdir())}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a streamlit server: terminate, then kill if it has not exited within 20 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
