"""The page in headless Debian Chromium (Playwright): upload, both charts, the warning, phone layout, errors."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from skin_demo.settings import Settings
from skin_demo.ui import build_app
from tests import image_files as files
from tests.tiny_packages import make_models_dir

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright):
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser_app")
    examples = root / "examples"
    examples.mkdir()
    files.jpeg(examples / "ex1.jpg", 300, 225, seed=3)
    (examples / "manifest.csv").write_text("file,dx,label,source,licence\nex1.jpg,mel,Melanoma (mel),generated,CC0\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio_tmp"))
        demo = build_app(Settings(models_dir=make_models_dir(root / "models"), examples_dir=examples, threads=1))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
        try:
            yield url, root / "gradio_tmp"
        finally:
            demo.close()


def open_page(browser, url, **context_kwargs):
    """A fresh page on the app; records every request that leaves the app's own origin."""
    context = browser.new_context(**context_kwargs)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    origin = urlsplit(url).netloc
    page.outside_requests = []
    page.on(
        "request",
        lambda r: page.outside_requests.append(r.url)
        if urlsplit(r.url).scheme in ("http", "https", "ws", "wss") and urlsplit(r.url).netloc != origin
        else None,
    )
    page.goto(url, wait_until="load")
    page.wait_for_selector("#image-input input[type=file]", state="attached")
    return page


def upload_and_wait_for_charts(page, path: Path) -> None:
    page.locator("#image-input input[type=file]").set_input_files(str(path))
    for chart in ("#malignancy-chart img", "#lesion-type-chart img"):
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }",
            arg=chart,
        )


def test_upload_shows_both_charts_the_numbers_and_the_warning(browser, app_url, tmp_path):
    url, gradio_tmp = app_url
    page = open_page(browser, url, viewport={"width": 1280, "height": 900})
    photo = files.jpeg(tmp_path / "lesion.jpg", 800, 600, seed=11)
    upload_and_wait_for_charts(page, photo)

    assert page.locator("#disclaimer").is_visible()
    assert "Research demo, not a diagnosis" in page.locator("#disclaimer").inner_text()
    assert "Analysed in" in page.locator("#status").inner_text()
    assert "Malignant" in page.locator("#malignancy-label").inner_text()
    summary = page.locator("#summary textarea").input_value()
    assert "Malignant:" in summary and "Research demo, not a diagnosis." in summary
    alt = page.locator("#lesion-type-chart img").get_attribute("alt")
    assert alt.startswith("Lesion-type chart:") and "%" in alt  # screen readers get the numbers
    # The preview still shows although the upload was deleted from the server after the analysis.
    preview_width = page.evaluate(
        "() => Math.max(0, ...[...document.querySelectorAll('#image-input img')].map(i => i.naturalWidth))"
    )
    assert preview_width > 0
    assert not [p for p in gradio_tmp.rglob("lesion.jpg")], "the upload should be deleted after analysis"
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    assert (tmp_path / "desktop.png").stat().st_size > 10_000
    assert page.outside_requests == [], "the page must not contact any other host"
    page.context.close()


def test_phone_viewport_stacks_the_charts(browser, app_url, tmp_path):
    url, _ = app_url
    page = open_page(
        browser, url, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    upload_and_wait_for_charts(page, files.jpeg(tmp_path / "phone.jpg", 1200, 1600, seed=5))
    assert page.locator("#disclaimer").is_visible()
    first = page.locator("#malignancy-chart img").bounding_box()
    second = page.locator("#lesion-type-chart img").bounding_box()
    assert second["y"] >= first["y"] + first["height"] - 1, "charts should stack on a narrow screen"
    assert first["width"] > 250, "each chart should use the phone's width"
    page_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= 390, "no horizontal scrolling on a phone"
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    assert page.outside_requests == []
    page.context.close()


def test_broken_file_shows_a_message_and_clear_resets(browser, app_url, tmp_path):
    url, _ = app_url
    page = open_page(browser, url, viewport={"width": 1280, "height": 900})
    page.locator("#image-input input[type=file]").set_input_files(str(files.truncated_jpeg(tmp_path / "broken.jpg")))
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Cannot analyse this file')")
    text = page.locator("#status").inner_text()
    assert "could not read image" in text and "Traceback" not in text
    assert page.locator("#malignancy-chart img").count() == 0

    upload_and_wait_for_charts(page, files.jpeg(tmp_path / "ok.jpg", 400, 300))
    # Analyse again: the upload is gone from the server, the page shows the same result rather than an error.
    page.locator("#analyse").click()
    page.wait_for_timeout(1000)
    assert "Analysed in" in page.locator("#status").inner_text()
    page.locator("#clear").click()
    page.wait_for_function("() => !document.querySelector('#malignancy-chart img')")
    assert page.locator("#status").inner_text().strip() == ""
    page.context.close()


def test_example_gallery_analyses_the_chosen_example(browser, app_url, tmp_path):
    url, _ = app_url
    page = open_page(browser, url, viewport={"width": 1280, "height": 900})
    assert "True label: Melanoma (mel)" in page.locator("#examples").inner_text()
    page.locator("#examples button[aria-label^='Thumbnail']").first.click()
    for chart in ("#malignancy-chart img", "#lesion-type-chart img"):
        page.wait_for_selector(chart)
    assert "Analysed in" in page.locator("#status").inner_text()
    page.context.close()


def test_clipboard_paste_is_analysed(browser, app_url):
    url, _ = app_url
    page = open_page(browser, url, viewport={"width": 1280, "height": 900},
                     permissions=["clipboard-read", "clipboard-write"])  # fmt: skip
    page.evaluate(
        """async () => {
          const c = document.createElement('canvas'); c.width = 200; c.height = 150;
          const g = c.getContext('2d'); g.fillStyle = '#d9a58f'; g.fillRect(0, 0, 200, 150);
          g.fillStyle = '#5a3020'; g.beginPath(); g.arc(100, 75, 40, 0, 7); g.fill();
          const blob = await new Promise(r => c.toBlob(r, 'image/png'));
          await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
        }"""
    )
    page.locator("#image-input button[aria-label='Paste from clipboard']").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Analysed in')")
    page.context.close()


def test_webcam_capture_is_analysed(playwright, app_url):
    """Chromium's fake camera stands in for a phone's: a snapshot must start the analysis like an upload."""
    url, _ = app_url
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
    try:
        page = open_page(chromium, url, viewport={"width": 390, "height": 844}, permissions=["camera"])
        page.locator("#image-input button[aria-label='Capture from camera']").click()
        page.get_by_text("Click to Access Webcam").click()
        page.wait_for_function("() => { const v = document.querySelector('#image-input video'); "
                               "return v && v.readyState >= 2 && v.videoWidth > 0; }")
        page.locator("#image-input button[aria-label='capture photo']").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('Analysed in')")
    finally:
        chromium.close()
