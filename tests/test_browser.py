"""The page in headless Debian Chromium (Playwright), desktop and phone: the flagged headline, the result in view
on a phone, the lesion-check message instead of donuts, rejected files, examples, clipboard and camera.

Screenshots go to each test's tmp dir (desktop.png, phone.png, ...)."""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from skin_demo.postprocess import LESION_CHECK_FAILED_MESSAGE
from skin_demo.predictor import Predictor
from skin_demo.hub import load_models
from skin_demo.settings import Settings
from skin_demo.texts import FLAGGED, flag_words
from tests import image_files as files
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, SHARED_DATA
from tests.served_app import serve
from tests.test_app import bundled_models_present
from tests.tiny_packages import FAILING_LESION_THRESHOLD, PASSING_LESION_THRESHOLD, make_models_dir
from tests.web_packages import GREEN

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000
PHONE = dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
DESKTOP = dict(viewport={"width": 1366, "height": 900})
NOT_LESION_DIR = SHARED_DATA / "not_lesion"
SPLITS = REPO_ROOT / "models"



def examples_dir(root: Path) -> Path:
    folder = root / "examples"
    folder.mkdir()
    files.jpeg(folder / "ex1.jpg", 300, 225, seed=3)
    files.jpeg(folder / "ex2.jpg", 300, 225, seed=8)
    (folder / "manifest.csv").write_text(
        "file,dx,label,source,licence\n"
        "ex1.jpg,mel,Melanoma (mel),HAM10000 ISIC_0000001 (test split),CC BY-NC 4.0\n"
        "ex2.jpg,nv,Melanocytic nevus (nv),HAM10000 ISIC_0000002 (test split),CC BY-NC 4.0\n"
    )
    return folder


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """Every image is flagged and passes the lesion check."""
    root = tmp_path_factory.mktemp("browser_app")
    settings = Settings(models_dir=make_models_dir(root / "models", malignancy_threshold=PASSING_LESION_THRESHOLD),
                        examples_dir=examples_dir(root), threads=1)  # fmt: skip
    with serve(root, settings=settings) as app:
        yield app.url


@pytest.fixture
def not_lesion_url(tmp_path):
    """Every image fails the lesion check. (Function scope: Gradio reads GRADIO_TEMP_DIR from the environment, so
    only one app with its own temp folder may serve at a time, and this one closes after its test.)"""
    with serve(tmp_path / "not_lesion", lesion_threshold=FAILING_LESION_THRESHOLD) as app:
        yield app.url


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


def wait_for_charts(page) -> None:
    for chart in ("#malignancy-chart img", "#lesion-type-chart img"):
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return i && i.complete && i.naturalWidth > 0; }",
            arg=chart,
        )


def upload(page, path: Path) -> None:
    page.locator("#image-input input[type=file]").set_input_files(str(path))


def in_viewport(page, selector: str) -> bool:
    """Whether the top of `selector` is on screen (after any scrolling the page did)."""
    return page.evaluate(
        "sel => { const r = document.querySelector(sel).getBoundingClientRect(); "
        "return r.top >= 0 && r.top < window.innerHeight - 60; }",
        selector,
    )


def test_desktop_shows_the_flag_once_with_two_donuts_and_one_text_version(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **DESKTOP)
    upload(page, files.jpeg(tmp_path / "lesion.jpg", 800, 600, seed=11))
    wait_for_charts(page)
    assert page.locator("#headline h2").inner_text() == FLAGGED  # never a big "Benign" for a flagged lesion
    assert "Research demo, not a diagnosis" in page.locator("#disclaimer").inner_text()
    summary = page.locator("#summary").inner_text()
    assert summary.startswith(FLAGGED) and "malignant" in summary and "%" in summary
    alt = page.locator("#lesion-type-chart img").get_attribute("alt")
    assert alt.startswith("Lesion-type chart:") and "%" in alt  # screen readers get the numbers
    assert not page.locator("#per-class").is_visible() and not page.locator("#result-json").is_visible()
    page.locator("#all-numbers button").first.click()  # the per-class list and the JSON are one tap away
    page.wait_for_selector("#per-class table")
    assert "Melanoma (mel)" in page.locator("#per-class").inner_text()
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)
    assert page.outside_requests == [], "the page must not contact any other host"
    page.context.close()


def test_phone_first_screen_has_the_warning_and_analyse_and_the_result_scrolls_into_view(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **PHONE)
    page.screenshot(path=str(tmp_path / "phone_start.png"))
    assert page.locator("#disclaimer").is_visible()
    analyse = page.locator("#analyse").bounding_box()
    assert analyse["y"] + analyse["height"] <= 844, "Analyse must be on the first screen"
    assert page.locator("#disclaimer").bounding_box()["y"] < analyse["y"]
    assert page.locator("#disclaimer p").is_hidden()  # the full warning is one tap away
    page.locator("#disclaimer summary").click()
    assert "not clinically validated" in page.locator("#disclaimer p").inner_text()

    upload(page, files.jpeg(tmp_path / "phone.jpg", 1200, 1600, seed=5))
    wait_for_charts(page)
    page.wait_for_function("() => { const r = document.querySelector('#result').getBoundingClientRect(); "
                           "return r.top >= 0 && r.top < window.innerHeight / 2; }")  # fmt: skip
    assert in_viewport(page, "#headline")
    first = page.locator("#malignancy-chart img").bounding_box()
    second = page.locator("#lesion-type-chart img").bounding_box()
    assert second["y"] >= first["y"] + first["height"] - 1, "charts stack on a narrow screen"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "no horizontal scrolling"
    page.screenshot(path=str(tmp_path / "phone_result.png"))
    assert page.outside_requests == []
    page.context.close()


def test_not_a_lesion_shows_the_message_instead_of_donuts(browser, not_lesion_url, tmp_path):
    page = open_page(browser, not_lesion_url, **PHONE)
    upload(page, files.jpeg(tmp_path / "cup.jpg", 640, 480, seed=2))
    page.wait_for_selector("#show-anyway", state="visible")
    assert LESION_CHECK_FAILED_MESSAGE in page.locator("#message").inner_text()
    assert page.locator("#malignancy-chart img").count() == 0 or not page.locator("#malignancy-chart img").is_visible()
    assert page.locator("#headline").inner_text().strip() == ""
    assert in_viewport(page, "#message")
    page.screenshot(path=str(tmp_path / "phone_not_lesion.png"))
    page.locator("#show-anyway").click()
    wait_for_charts(page)
    assert page.locator("#malignancy-chart img").is_visible()
    page.context.close()


def test_an_ordinary_photo_shows_its_domain_and_the_caveat_above_the_donuts(browser, tmp_path):
    with serve(tmp_path / "domains", malignancy_threshold=PASSING_LESION_THRESHOLD, domains=True) as app:
        page = open_page(browser, app.url, **PHONE)
        photo = files.save(files.Image.new("RGB", (300, 200), GREEN), tmp_path / "phone.png")
        upload(page, photo)
        wait_for_charts(page)
        models = app.models
        flag = Predictor.from_models(models).predict(photo).malignancy_flag
        assert flag.domain == "clinical"  # what the tiny three-way check makes of this colour
        words = flag_words(flag.flagged, flag.domain, models["malignancy"].config)
        assert page.locator("#headline .domain").text_content() == "Ordinary photo"
        assert page.locator("#headline h2").inner_text() == words.headline
        caveat = page.locator("#caveat p")
        assert caveat.inner_text() == words.caveat and "caught 9 of 10 cancers" in words.caveat
        box, chart = caveat.bounding_box(), page.locator("#malignancy-chart img").bounding_box()
        assert box["y"] + box["height"] <= chart["y"], "the caveat stands above the donuts"
        page.screenshot(path=str(tmp_path / "phone_ordinary_photo.png"), full_page=True)
        page.context.close()


def test_a_rejected_file_leaves_a_message_on_the_page(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **PHONE)
    upload(page, files.tiny_png(tmp_path / "small.png"))
    page.wait_for_function("() => document.querySelector('#message')?.innerText.includes('Cannot analyse this file')")
    text = page.locator("#message").inner_text()
    assert "at least 32 pixels" in text and "Traceback" not in text
    assert page.locator("#malignancy-chart img").count() == 0 or not page.locator("#malignancy-chart img").is_visible()
    page.wait_for_timeout(6000)  # toasts vanish; the message stays
    assert "Cannot analyse this file" in page.locator("#message").inner_text()
    page.locator("#clear").click()
    page.wait_for_function("() => !document.querySelector('#message')?.innerText.trim()")
    page.context.close()


def test_tapping_an_example_on_a_phone_brings_the_result_into_view(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **PHONE)
    captions = page.locator("#examples").inner_text()
    assert "True label: Melanoma (mel)" in captions and "Melanocytic nevus (nv)" in captions
    page.locator("#examples button[aria-label^='Thumbnail']").first.click()
    wait_for_charts(page)
    page.wait_for_function("() => { const r = document.querySelector('#result').getBoundingClientRect(); "
                           "return r.top >= 0 && r.top < window.innerHeight / 2; }")  # fmt: skip
    page.screenshot(path=str(tmp_path / "phone_example.png"))
    with page.expect_response(lambda r: "/queue/join" in r.url and r.status == 200):
        page.locator("#analyse").click()  # again, on the example now in the image input
    page.wait_for_function("() => { const t = document.querySelector('#status').innerText; "
                           "return t.startsWith('Analysed in') && !t.includes('processing'); }")  # fmt: skip
    assert page.locator("#headline h2").inner_text() == FLAGGED
    page.context.close()


def test_the_api_snippet_shows_the_page_url(browser, app_url):
    page = open_page(browser, app_url, **DESKTOP)
    page.get_by_text("Privacy and API").click()
    page.wait_for_function(f"() => document.querySelector('[data-page-url]')?.textContent === {app_url!r}")
    page.context.close()


def test_clipboard_paste_is_analysed_and_its_preview_shown(browser, app_url):
    page = open_page(browser, app_url, **DESKTOP, permissions=["clipboard-read", "clipboard-write"])
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
    wait_for_charts(page)
    # The preview is fetched from the server after the upload: the photo must still be there for it.
    page.wait_for_function("() => [...document.querySelectorAll('#image-input img')].some(i => i.naturalWidth > 0)")
    page.context.close()


def test_webcam_capture_is_analysed(playwright, app_url):
    """Chromium's fake camera stands in for a phone's: a snapshot must start the analysis like an upload."""
    fake_camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + fake_camera)
    try:
        page = open_page(chromium, app_url, viewport={"width": 390, "height": 844}, permissions=["camera"])
        page.locator("#image-input button[aria-label='Capture from camera']").click()
        page.get_by_text("Click to Access Webcam").click()
        page.wait_for_function("() => { const v = document.querySelector('#image-input video'); "
                               "return v && v.readyState >= 2 && v.videoWidth > 0; }")
        page.locator("#image-input button[aria-label='capture photo']").click()
        wait_for_charts(page)
    finally:
        chromium.close()


def held_out(split_csv: Path, column: str, value: str, key: str) -> list[str]:
    """`key` of the test-split rows of `split_csv` whose `column` is `value` (sorted: deterministic picks)."""
    with split_csv.open(newline="") as f:
        return sorted(r[key] for r in csv.DictReader(f) if r["split"] == "test" and r[column] == value)


@pytest.mark.data
@pytest.mark.skipif(not bundled_models_present(), reason="the three bundled packages in models/ are not there yet")
def test_bundled_models_flag_a_melanoma_and_turn_away_an_everyday_photo(browser, ham10000_dir, tmp_path):
    """What app.py serves by default, on a held-out HAM10000 melanoma the malignancy package flags and on a
    held-out everyday photo (../shared/data/not_lesion), at phone size."""
    if not (NOT_LESION_DIR / "labels.csv").is_file():
        pytest.skip(f"not-lesion photos not found at {NOT_LESION_DIR}")
    models = load_models(Settings(models_dir=REPO_ROOT / "models"))
    predictor = Predictor.from_models(models)
    melanomas = (ham10000_dir / "images" / f"{i}.jpg" for i in held_out(SPLITS / "ham10000_split.csv", "dx", "mel", "image_id"))
    flagged = next(p for p in melanomas if predictor.predict(p).malignancy_flag.flagged)
    photo = NOT_LESION_DIR / held_out(SPLITS / "not_lesion_split.csv", "category", "everyday photo", "file")[0]
    assert not predictor.predict(photo).lesion_check.passed, "pick a photo the bundled lesion check rejects"
    settings = Settings(models_dir=REPO_ROOT / "models", examples_dir=tmp_path / "none")
    with serve(tmp_path, settings=settings) as app:
        page = open_page(browser, app.url, **PHONE)
        upload(page, flagged)
        wait_for_charts(page)
        assert page.locator("#headline h2").inner_text() == FLAGGED
        page.screenshot(path=str(tmp_path / "phone_melanoma.png"))
        upload(page, photo)
        page.wait_for_selector("#show-anyway", state="visible")
        assert LESION_CHECK_FAILED_MESSAGE in page.locator("#message").inner_text()
        assert not page.locator("#malignancy-chart img").is_visible()
        page.screenshot(path=str(tmp_path / "phone_everyday_photo.png"))
        page.context.close()
