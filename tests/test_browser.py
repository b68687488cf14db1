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
        "ex1.jpg,mel,Melanoma (a skin cancer),HAM10000 ISIC_0000001 (test split),CC BY-NC 4.0\n"
        "ex2.jpg,nv,Mole (melanocytic nevus),HAM10000 ISIC_0000002 (test split),CC BY-NC 4.0\n"
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


VISIBLE_TEXT_JS = """() => {
    // What a visitor can read: the page's rendered text, and the text drawn inside the visible chart images.
    const charts = [...document.querySelectorAll('.donut img')].filter(i => i.offsetParent !== null)
        .map(i => atob(i.src.split(',')[1]))
        .map(svg => [...new DOMParser().parseFromString(svg, 'image/svg+xml').querySelectorAll('text')]
            .map(t => t.textContent).join(' '));
    return [document.body.innerText, ...charts].join(' ');
}"""


def result_view(page, tmp_path: Path, name: str) -> dict:
    """After an analysis: the visible text, and whether the thumbnail and both donuts lie within the first screen
    (the viewport after the page scrolled to the result). Keeps a screenshot as a test artefact."""
    wait_for_charts(page)
    page.wait_for_selector("#headline .photo img")
    page.wait_for_function("() => { const r = document.querySelector('#result').getBoundingClientRect(); "
                           "return r.top >= -1 && r.top < window.innerHeight / 2; }")  # fmt: skip
    page.screenshot(path=str(tmp_path / f"{name}.png"))
    height = page.viewport_size["height"]
    boxes = {sel: page.locator(sel).bounding_box()
             for sel in ("#headline .photo .frame", "#headline h2", "#malignancy-chart img", "#lesion-type-chart img")}
    return {"text": page.evaluate(VISIBLE_TEXT_JS), "boxes": boxes,
            "on_first_screen": all(b["y"] >= 0 and b["y"] + b["height"] <= height for b in boxes.values())}


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_one_glance_photo_verdict_and_both_donuts_each_number_once(browser, app_url, tmp_path, device):
    page = open_page(browser, app_url, **(DESKTOP if device == "desktop" else PHONE))
    photo = files.jpeg(tmp_path / "lesion.jpg", 1200, 1600, seed=5) if device == "phone" else \
        files.jpeg(tmp_path / "lesion.jpg", 800, 600, seed=11)
    upload(page, photo)
    view = result_view(page, tmp_path, device)
    assert view["on_first_screen"], view["boxes"]
    assert page.locator("#headline h2").inner_text() == FLAGGED  # never a big "Benign" for a flagged lesion
    shown = view["text"]
    malignant = page.locator("#malignancy-chart img").get_attribute("alt")
    percentage = malignant.split("Malignant ")[1].split(",")[0]  # the alt text says e.g. "Malignant 52 %"
    assert shown.count(percentage) == 1, (percentage, shown)
    threshold = page.locator("#headline .threshold").inner_text()
    assert threshold.startswith("The model raises an alert from ")
    assert shown.count(threshold.split("from ")[1].split(" malignant")[0]) == 1, "the threshold is said once"
    for code in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc", "tf_efficientnet", "balanced accuracy"):
        assert f" {code} " not in f" {shown} ", f"{code!r} must not show outside 'About the models'"
    assert not page.locator("#per-class").is_visible() and not page.locator("#status").is_visible()
    if device == "phone":
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "no horizontal scrolling"
    assert page.outside_requests == [], "the page must not contact any other host"
    page.context.close()


def test_where_the_model_looked_lies_over_the_photo(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **DESKTOP)
    upload(page, files.jpeg(tmp_path / "wide.jpg", 900, 450, seed=4))  # wide: the model sees the centre square
    wait_for_charts(page)
    assert page.locator("#headline .map-malignancy").is_hidden()
    assert page.locator("#headline .map-caption").is_hidden()
    page.locator("#headline label[for=map-malignancy]").click()
    overlay = page.locator("#headline .map-malignancy")
    assert overlay.is_visible() and "cropped" in overlay.get_attribute("class")
    frame, box = page.locator("#headline .frame").bounding_box(), overlay.bounding_box()
    assert box["width"] == pytest.approx(frame["width"] / 2, abs=2), "the square the model saw: half the width"
    assert box["x"] == pytest.approx(frame["x"] + frame["width"] / 4, abs=2)
    assert "not the lesion's border" in page.locator("#headline .map-caption").inner_text()
    page.locator("#headline label[for=map-lesion_type]").click()
    assert page.locator("#headline .map-lesion_type").is_visible() and overlay.is_hidden()
    page.screenshot(path=str(tmp_path / "map.png"))
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
        assert caveat.inner_text() == words.caveat and words.caveat.startswith("Ordinary photos are much harder")
        assert "caught 8 of 10 cancers" in page.locator("#headline .threshold").inner_text()
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
    not_an_image = tmp_path / "notes.jpg"  # a text file with a photo's name: the browser cannot preview it
    not_an_image.write_text("shopping list: milk, eggs\n")
    upload(page, not_an_image)
    page.wait_for_function("() => document.querySelector('#message')?.innerText.includes('Cannot analyse this file')")
    page.wait_for_function("() => document.querySelectorAll('#image-input img').length === 0")  # no broken preview
    page.context.close()


def test_tapping_an_example_on_a_phone_brings_the_result_into_view(browser, app_url, tmp_path):
    page = open_page(browser, app_url, **PHONE)
    captions = page.locator("#examples").inner_text()
    assert "True label: Melanoma (a skin cancer)" in captions and "Mole (melanocytic nevus)" in captions
    page.locator("#examples button[aria-label^='Thumbnail']").first.click()
    wait_for_charts(page)
    page.wait_for_function("() => { const r = document.querySelector('#result').getBoundingClientRect(); "
                           "return r.top >= 0 && r.top < window.innerHeight / 2; }")  # fmt: skip
    page.screenshot(path=str(tmp_path / "phone_example.png"))
    page.locator("#all-numbers button").first.click()  # the JSON there carries this analysis' own timings
    page.wait_for_function("() => document.querySelector('#result-json')?.innerText.includes('timings_ms')")
    before = page.locator("#result-json").inner_text()
    with page.expect_response(lambda r: "/queue/join" in r.url and r.status == 200):
        page.locator("#analyse").click()  # again, on the example now in the image input
    page.wait_for_function("t => document.querySelector('#result-json').innerText !== t", arg=before)
    assert page.locator("#message").is_hidden()
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
