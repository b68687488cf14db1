"""The on-device page (/on-device/) in headless Debian Chromium: the same numbers as /predict, the same tensor as
imaging.preprocess, EXIF, bad files, phone layout, nothing leaving the page, offline use, and the static build.

One app (tiny packages, tests/web_packages.py) and one loaded page serve most tests; the real-image test launches the
app on the bundled packages, and one test an app whose malignancy and lesion_type are one package with a head per
task. The server side is always the launched app's /predict through gradio_client.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import yaml
from gradio_client import Client, handle_file
from onnx import helper
from PIL import Image

from skin_demo import imaging, postprocess, texts, ui
from skin_demo.config import (
    HEADS_FORMAT_VERSION,
    ONNX_METADATA_KEY,
    ConfigError,
    PackageConfig,
    PreprocessConfig,
    package_heads,
)
from skin_demo.hub import bundled_folders, load_models
from skin_demo.settings import Settings
from skin_demo.web.build import main as build_main
from tests import image_files as files
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.tiny_packages import PER_DOMAIN_METRICS, make_package, per_domain_overrides
from tests.web_packages import (
    DARK,
    GREEN,
    SKIN,
    make_combined_packages,
    make_lesion_check_package,
    make_three_packages,
)

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000  # generous: CI's two cores are shared with everything else
TOLERANCE = 1e-3
TINY_MAP_TOLERANCE = 5e-3


# -- fixtures --------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App:
    """The real app (ui.build_app + ui.launch, which mounts the page) on 127.0.0.1, with a gradio_client."""

    def __init__(self, root: Path, models_dir: Path) -> None:
        examples = root / "examples"
        examples.mkdir(parents=True, exist_ok=True)
        self.settings = Settings(models_dir=models_dir, examples_dir=examples, threads=1)
        self.models = load_models(self.settings)
        self.demo = ui.build_app(self.settings, models=self.models)
        ui.launch(self.demo, self.models, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                  quiet=True)  # fmt: skip
        self.url = self.demo.local_url
        self.page_url = self.url + "on-device/"
        self.client = Client(self.url, verbose=False)

    def predict(self, path: Path) -> dict:
        return self.client.submit(handle_file(str(path)), api_name="/predict").result(timeout=TIMEOUT_MS / 1000)

    def close(self) -> None:
        self.demo.close()


@contextmanager
def launched(root: Path, models_dir: Path) -> Iterator[App]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio_tmp"))
        app = App(root, models_dir)
        try:
            yield app
        finally:
            app.close()


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory):
    """The three-way lesion check (SKIN dermoscopy, GREEN clinical, DARK not a lesion) and per-domain calls."""
    root = tmp_path_factory.mktemp("on_device_app")
    with launched(root, make_three_packages(root / "models")) as app:
        yield app


def open_page(browser, url: str, **context_kwargs):
    """A fresh context and page on `url`, loaded and ready; records every request it makes."""
    context = browser.new_context(**context_kwargs)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.requests = []
    context.on("request", lambda request: page.requests.append(request))  # includes the service worker's
    page.goto(url, wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    return page


@pytest.fixture(scope="module")
def page(browser, tiny_app):
    page = open_page(browser, tiny_app.page_url)
    yield page
    page.context.close()


def data_url(path: Path) -> str:
    kind = {".png": "image/png", ".jpg": "image/jpeg"}.get(path.suffix, "application/octet-stream")
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def analyse(page, path: Path) -> dict:
    return page.evaluate("url => window.skinDemo.analyse(url)", data_url(path))


def analyse_error(page, path: Path) -> str:
    """The ImageError message with which window.skinDemo.analyse rejects `path`."""
    outcome = page.evaluate(
        "url => window.skinDemo.analyse(url).then(() => 'accepted', e => `${e.name}: ${e.message}`)", data_url(path)
    )
    assert outcome.startswith("ImageError: "), outcome
    return outcome.removeprefix("ImageError: ")


def server_error(path: Path) -> str:
    with pytest.raises(imaging.ImageError) as caught:
        imaging.load_image(path)
    return str(caught.value)


def assert_same_result(on_device: dict, server: dict, attention_tolerance: float = TOLERANCE) -> None:
    """The page's answer has /predict's keys and, within TOLERANCE, its numbers and the same calls."""
    assert set(server) <= set(on_device), f"missing keys: {set(server) - set(on_device)}"
    for task in ("malignancy", "lesion_type"):
        assert list(on_device[task]) == list(server[task])
        for label, p in server[task].items():
            assert abs(on_device[task][label] - p) <= TOLERANCE, (task, label, on_device[task][label], p)
    assert abs(on_device["malignancy_probability"] - server["malignancy_probability"]) <= TOLERANCE
    flag, expected = on_device["malignancy_flag"], server["malignancy_flag"]
    assert flag["threshold"] == pytest.approx(expected["threshold"], abs=1e-12)
    if abs(server["malignancy_probability"] - expected["threshold"]) > TOLERANCE:
        assert flag["flagged"] == expected["flagged"]
    assert flag["score_from"] == expected["score_from"]
    check, expected = on_device["lesion_check"], server["lesion_check"]
    assert abs(check["score"] - expected["score"]) <= TOLERANCE
    assert check["threshold"] == pytest.approx(expected["threshold"], abs=1e-12)
    domain, expected_domain = on_device["image_domain"], server["image_domain"]
    assert list(domain["probabilities"]) == list(expected_domain["probabilities"])
    for label, p in expected_domain["probabilities"].items():
        assert abs(domain["probabilities"][label] - p) <= TOLERANCE, (label, domain["probabilities"][label], p)
    if abs(expected["score"] - expected["threshold"]) > TOLERANCE and _margin(expected_domain) > TOLERANCE:
        assert (check["passed"], check["message"]) == (expected["passed"], expected["message"])
        assert domain["label"] == expected_domain["label"]
        assert on_device["malignancy_flag"]["domain"] == server["malignancy_flag"]["domain"]
    for mine, theirs in zip(on_device["lesion_type_top"], server["lesion_type_top"], strict=True):
        assert abs(mine["probability"] - theirs["probability"]) <= TOLERANCE
    assert on_device["disclaimer"] == server["disclaimer"]
    assert_same_attention(on_device["attention"], server["attention"], attention_tolerance)


def assert_same_attention(on_device: dict | None, server: dict | None, tolerance: float) -> None:
    """The same maps, within TOLERANCE, for every answer both gave (a call on a tie may differ, and its map then)."""
    assert (on_device is None) == (server is None)
    if server is None:
        return
    assert set(on_device) == set(server)
    for shown, expected in server.items():
        mine = on_device[shown]
        assert mine["task"] == expected["task"]
        if mine["labels"] != expected["labels"]:
            continue
        assert np.asarray(mine["grid"]).shape == np.asarray(expected["grid"]).shape
        assert np.abs(np.asarray(mine["grid"]) - np.asarray(expected["grid"])).max() <= tolerance, shown
        assert np.abs(np.asarray(mine["box"]) - np.asarray(expected["box"])).max() <= TOLERANCE, shown


def expected_words(app: App, result: dict) -> texts.FlagWords:
    """What the pages should say about /predict's call in `result`."""
    flag = result["malignancy_flag"]
    return texts.flag_words(flag["flagged"], flag["domain"], app.models["malignancy"].config)


def _margin(domain: dict) -> float:
    """How far the image is from a tie between dermoscopy and clinical (where page and server may differ)."""
    p = domain["probabilities"]
    return abs(p.get("dermoscopy", 0.0) - p.get("clinical", 0.0)) if "clinical" in p else 1.0


def solid(path: Path, colour: tuple[int, int, int], size=(90, 60)) -> Path:
    return files.save(Image.new("RGB", size, colour), path, format="PNG")


# -- the tiny app ------------------------------------------------------------------------------------------------
def assert_page_matches_predict(page, app: App, tmp_path: Path) -> None:
    """The page's answers are /predict's on photos (down- and upscaled) and on a plain colour for each domain."""
    images = [
        files.jpeg(tmp_path / "photo.jpg", 640, 480, seed=1),
        files.save(files.lesion_photo(200, 150, seed=2), tmp_path / "small.png", format="PNG"),
        files.save(files.lesion_photo(33, 300, seed=3), tmp_path / "strip.png", format="PNG"),  # upscaled
        solid(tmp_path / "skin.png", SKIN),
        solid(tmp_path / "green.png", GREEN),
        solid(tmp_path / "dark.png", DARK),
    ]
    domains = []
    for path in images:
        server = app.predict(path)
        on_device = analyse(page, path)
        # The tiny packages' map is a mean of raw pixels over 8x8 blocks; rescaled to [0, 1] over a nearly flat
        # random picture it magnifies the browser's and Pillow's JPEG decoding differences (one level here and
        # there) to about 1e-3. The bundled packages' maps are held to TOLERANCE (test_real_dermoscopy_images_...).
        assert_same_result(on_device, server, attention_tolerance=TINY_MAP_TOLERANCE)
        assert on_device["image_domain"]["label"] == server["image_domain"]["label"]
        domains.append(server["image_domain"]["label"])
    assert domains[-3:] == ["dermoscopy", "clinical", "not_lesion"], "the colours must exercise every domain"


def test_page_gives_the_numbers_and_calls_of_predict(page, tiny_app, tmp_path):
    assert_page_matches_predict(page, tiny_app, tmp_path)


# Records every InferenceSession.run of the page's runtime (the module the engine imported: one instance per URL).
COUNT_GRAPH_RUNS_JS = """async () => {
  const m = await (await fetch("manifest.json")).json();
  const ort = await import(new URL(m.runtime.module, location.href).href);
  const run = ort.InferenceSession.prototype.run;
  window.graphRuns = [];
  ort.InferenceSession.prototype.run = function (...args) {
    window.graphRuns.push(this);
    return run.apply(this, args);
  };
}"""


def test_a_package_with_a_head_per_task_is_downloaded_and_run_once(browser, tmp_path_factory, tmp_path):
    """Malignancy and lesion_type as one package with a head per task (skin_demo.train.combine): the page fetches its
    file once, makes one session of it, runs that once per analysis for both tasks and gives /predict's numbers."""
    root = tmp_path_factory.mktemp("combined_app")
    with launched(root, make_combined_packages(root)) as app:
        assert app.models["malignancy"].graph is app.models["lesion_type"].graph, "the server runs it once too"
        page = open_page(browser, app.page_url)
        manifest = page.evaluate("() => fetch('manifest.json').then(r => r.json())")
        assert [m["tasks"] for m in manifest["models"]] == [["malignancy", "lesion_type"], ["lesion_check"]]
        fetched = {r.url for r in page.requests if "/models/" in r.url}
        assert fetched == {app.page_url + m["url"] for m in manifest["models"]}
        assert_page_matches_predict(page, app, tmp_path)
        page.evaluate(COUNT_GRAPH_RUNS_JS)
        analyse(page, files.jpeg(tmp_path / "photo.jpg", 400, 300, seed=4))
        runs, sessions = page.evaluate("() => [window.graphRuns.length, new Set(window.graphRuns).size]")
        assert (runs, sessions) == (2, 2), "the two heads' graph once, the lesion check's once"
        page.context.close()


def test_the_older_two_label_check_gives_the_same_answers_on_the_page(browser, tmp_path_factory, tmp_path):
    """Packages made before the image domains (a lesion / not_lesion check, one malignancy threshold)."""
    root = tmp_path_factory.mktemp("older_check_app")
    with launched(root, make_three_packages(root / "models", domains=False)) as app:
        page = open_page(browser, app.page_url)
        labels = []
        for path in (solid(tmp_path / "skin.png", SKIN), solid(tmp_path / "dark.png", DARK),
                     files.jpeg(tmp_path / "photo.jpg", 640, 480, seed=1)):  # fmt: skip
            server = app.predict(path)
            assert_same_result(analyse(page, path), server)
            assert list(server["image_domain"]["probabilities"]) == ["dermoscopy", "not_lesion"]
            assert server["malignancy_flag"]["domain"] == "dermoscopy"  # the only domain that check knew
            labels.append(server["image_domain"]["label"])
        assert labels[:2] == ["dermoscopy", "not_lesion"]
        page.context.close()


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def config_only_onnx(config: object) -> str:
    """base64 of an ONNX file with an empty graph and `config` embedded as a package's config."""
    model = helper.make_model(helper.make_graph([], "config only", [], []))
    helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(config)})
    return base64.b64encode(model.SerializeToString()).decode("ascii")


def heads_config(*heads: dict) -> dict:
    return {"format_version": HEADS_FORMAT_VERSION, "heads": list(heads)}


def test_the_pages_config_check_takes_and_refuses_what_package_heads_does(page, tmp_path):
    """onnx_config.js's embeddedConfigs against config.package_heads, on both formats and what breaks them; and the
    page refuses a file whose heads lack a task it is served for."""
    malignancy = _config(make_package(tmp_path / "malignancy", "malignancy"))
    types = _config(make_package(tmp_path / "lesion_type", "lesion_type"))
    reordered = {**types, "preprocess": dict(reversed(types["preprocess"].items()))}  # the same, keys reordered
    cropped = {**types, "preprocess": {**types["preprocess"], "crop_pct": 0.9}}
    cases = [
        (malignancy, ["malignancy"]),
        (heads_config(malignancy, types), ["malignancy", "lesion_type"]),
        (heads_config(malignancy, reordered), ["lesion_type"]),
        (heads_config(malignancy), ["malignancy"]),
        (heads_config(malignancy, types), ["lesion_check"]),  # not one of its heads
        (malignancy, ["lesion_type"]),
        *((raw, ["malignancy"]) for raw in [
            {**malignancy, "format_version": 3}, {**malignancy, "format_version": "1"}, {**malignancy, "task": ""},
            {**malignancy, "labels": []}, [malignancy], heads_config(), {"format_version": 2, "heads": malignancy},
            heads_config(malignancy, malignancy), heads_config(malignancy, cropped),
            heads_config(malignancy, {**types, "format_version": 2}),
            {**heads_config(malignancy), "task": "malignancy"},
            heads_config(malignancy, {k: v for k, v in types.items() if k != "task"}),
        ]),
    ]  # fmt: skip
    outcomes = page.evaluate(
        """async (cases) => {
          const { embeddedConfigs } = await import(new URL("onnx_config.js", location.href).href);
          const m = await (await fetch("manifest.json")).json();
          const versions = { single: m.format_version, heads: m.heads_format_version };
          return cases.map(([base64, tasks]) => {
            const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
            try {
              const { configs, several } = embeddedConfigs(bytes.buffer, m.metadata_key, { tasks, versions });
              return { tasks: Object.keys(configs), several };
            } catch (error) {
              return { error: error.message };
            }
          });
        }""",
        [(config_only_onnx(raw), tasks) for raw, tasks in cases],
    )
    for (raw, tasks), outcome in zip(cases, outcomes, strict=True):
        try:
            heads = list(package_heads(raw))
        except ConfigError:
            heads = []
        if set(tasks) <= set(heads):
            assert outcome == {"tasks": heads, "several": raw["format_version"] == HEADS_FORMAT_VERSION}, raw
        else:
            assert outcome["error"], (raw, tasks)


def test_the_pages_rule_is_postprocess_on_any_numbers(page, tmp_path):
    """engine.js's twin of skin_demo.postprocess, called directly on the cases images rarely hit: exactly at a
    threshold, dermoscopy and clinical tied, a rejected image that looks more clinical, every form of package."""
    rng = np.random.default_rng(0)
    f32 = lambda values: [float(np.float32(v)) for v in values]  # noqa: E731 (what a model's softmax gives)
    checks = [_config(make_lesion_check_package(tmp_path / "check", 0.5)),
              _config(make_lesion_check_package(tmp_path / "older", 0.5, domains=False))]  # fmt: skip
    check_cases = [{"dermoscopy": d, "clinical": c, "not_lesion": 1 - d - c}
                   for d, c in [(0.25, 0.25), (0.3, 0.15), (0.05, 0.4), (0.3, 0.3), (0.6, 0.1), (0.0, 0.0)]]
    check_cases += [dict(zip(("dermoscopy", "clinical", "not_lesion"), f32(p))) for p in rng.dirichlet([1, 1, 1], 20)]
    older_cases = [{"lesion": p, "not_lesion": 1 - p} for p in (0.5, 0.49999, 0.7, 0.0, 1.0, *f32(rng.random(10)))]
    calls = [(checks[0], probabilities) for probabilities in check_cases] + [(checks[1], p) for p in older_cases]
    on_device = page.evaluate(
        """async (calls) => {
          const engine = await import(new URL("engine.js", location.href).href);
          const m = await (await fetch("manifest.json")).json();
          return calls.map(([config, probabilities]) => {
            const { domain, check } = engine.checkImage(m, probabilities, config);
            return { domain, check, decision: engine.decisionDomain(m, domain) };
          });
        }""",
        calls,
    )
    for (raw, probabilities), mine in zip(calls, on_device, strict=True):
        config = PackageConfig.from_dict(raw)
        domain = postprocess.image_domain(probabilities, config)
        expected = {"domain": domain.to_json(), "check": postprocess.lesion_check(probabilities, config).to_json(),
                    "decision": postprocess.decision_domain(domain)}  # fmt: skip
        assert mine == expected, probabilities

    lesion_type = _config(make_package(tmp_path / "lesion_type", "lesion_type"))
    malignancy = [
        _config(make_package(tmp_path / "per_domain", "malignancy", config_overrides=per_domain_overrides(0.3))),
        _config(make_package(tmp_path / "binary", "malignancy", config_overrides=per_domain_overrides(
            None, 0.2, clinical_score="binary_head", per_domain={"clinical": PER_DOMAIN_METRICS["clinical"]}))),
        _config(make_package(tmp_path / "one", "malignancy", config_overrides={"decision_threshold": 0.3})),
        _config(make_package(tmp_path / "none", "malignancy")),
    ]  # fmt: skip
    scores = [[0.7, 0.3], [0.55, 0.45], [0.5, 0.5], *(f32(p) for p in rng.dirichlet([1, 1], 8))]
    types = [f32(p) for p in rng.dirichlet(np.ones(7), len(scores))]
    cases = [(config, domain, dict(zip(("benign", "malignant"), s)), dict(zip(lesion_type["labels"], t)))
             for config in malignancy for domain in ("dermoscopy", "clinical")
             for s, t in zip(scores, types, strict=True)]  # fmt: skip
    on_device = page.evaluate(
        """async ([cases, lesionType]) => {
          const engine = await import(new URL("engine.js", location.href).href);
          const m = await (await fetch("manifest.json")).json();
          return cases.map(([config, domain, malignancy, types]) => engine.malignancyCall(m, domain, {
            malignancy: { config, probabilities: malignancy },
            lesion_type: { config: lesionType, probabilities: types },
          }));
        }""",
        [cases, lesion_type],
    )
    type_config = PackageConfig.from_dict(lesion_type)
    flagged = set()
    for (raw, domain, probs, types_probs), mine in zip(cases, on_device, strict=True):
        config = PackageConfig.from_dict(raw)
        score = postprocess.malignancy_score(domain, probs, config, types_probs, type_config)
        flag = postprocess.malignancy_flag(score, config, domain)
        assert mine == {"score": score, "flag": flag.to_json()}, (raw.get("decision_thresholds"), domain, probs)
        flagged.add(flag.flagged)
    assert flagged == {True, False}


@pytest.mark.parametrize(
    "interpolation, size, crop_pct, color_constancy",
    [("bicubic", 128, 1.0, "none"), ("bicubic", 224, 0.875, "none"), ("bilinear", 32, 1.0, "none"),
     ("nearest", 48, 1.0, "none"), ("bicubic", 192, 1.0, "shades_of_gray")],
)
def test_page_tensor_equals_imaging_preprocess(page, tmp_path, interpolation, size, crop_pct, color_constancy):
    cfg = PreprocessConfig(size=(size, size), crop_pct=crop_pct, interpolation=interpolation,
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), color_constancy=color_constancy)
    js_config = {**dataclasses.asdict(cfg), "size": [size, size]}
    # PNG: lossless, so any difference is the resampling's; odd sizes, up- and downscaling, both orientations.
    for seed, (w, h) in enumerate([(200, 150), (37, 91), (641, 479), (256, 256)]):
        path = files.save(files.lesion_photo(w, h, seed=seed), tmp_path / f"{w}x{h}.png", format="PNG")
        expected = imaging.preprocess(imaging.load_image(path), cfg).ravel()
        got = np.asarray(page.evaluate("([u, c]) => window.skinDemo.debug.tensor(u, c)", [data_url(path), js_config]),
                         dtype=np.float32)  # fmt: skip
        assert got.shape == expected.shape
        assert np.array_equal(got, expected), f"{w}x{h}: max difference {np.abs(got - expected).max()}"


def test_exif_rotated_photo_is_analysed_upright(page, tiny_app, tmp_path):
    upright = files.split_colour_image(60, 120)  # red top third, blue below: the tiny models see the difference
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways; orientation 6 turns it back
    rotated = files.exif_rotated_jpeg(tmp_path / "rotated.jpg", orientation=6, image=stored)
    sideways = files.save(stored, tmp_path / "sideways.jpg", format="JPEG", quality=95)
    on_device = analyse(page, rotated)
    assert_same_result(on_device, tiny_app.predict(rotated))
    ignored = analyse(page, sideways)  # the same pixels without the tag: what ignoring EXIF would give
    assert max(abs(on_device["lesion_type"][k] - ignored["lesion_type"][k]) for k in ignored["lesion_type"]) > 0.05


def test_bad_files_get_the_servers_message_on_the_page(page, tmp_path):
    icon = files.save(files.lesion_photo(64, 64), tmp_path / "icon.ico", format="ICO")  # browsers decode ICO
    for path in (files.not_an_image(tmp_path / "notes.txt"), files.tiny_png(tmp_path / "tiny.png", side=16), icon):
        message = server_error(path)
        assert analyse_error(page, path) == message
        page.locator("#file").set_input_files(str(path))
        page.wait_for_function("m => document.querySelector('#error').innerText.includes(m)", arg=message)
        assert page.locator("#error").inner_text() == f"Cannot analyse this file: {message}"
        assert page.locator("#output").is_hidden()
    # The server reads TIFF, browsers do not decode it: the page says so instead of calling it a non-image.
    tiff = files.save(files.lesion_photo(64, 64), tmp_path / "photo.tif", format="TIFF")
    assert "cannot decode TIFF images" in analyse_error(page, tiff)


@pytest.mark.parametrize("gesture", ["paste", "drop"])
def test_pasted_and_dropped_images_are_analysed(page, tmp_path, gesture):
    photo = files.jpeg(tmp_path / "photo.jpg", 300, 200, seed=9)
    page.evaluate("() => { document.querySelector('#timing').textContent = ''; }")
    page.evaluate(
        """async ([url, gesture]) => {
          const blob = await (await fetch(url)).blob();
          const data = new DataTransfer();
          data.items.add(new File([blob], "photo.jpg", { type: "image/jpeg" }));
          const event = gesture === "paste"
            ? new ClipboardEvent("paste", { clipboardData: data, bubbles: true })
            : new DragEvent("drop", { dataTransfer: data, bubbles: true });
          document.body.dispatchEvent(event);
        }""",
        [data_url(photo), gesture],
    )
    page.wait_for_function("() => document.querySelector('#timing').textContent.startsWith('Analysed on this device')")
    assert page.locator("#charts svg").count() == 2


def test_phone_result_in_view_lesion_check_message_and_nothing_leaves_the_page(browser, tiny_app, tmp_path):
    page = open_page(browser, tiny_app.page_url, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                     is_mobile=True, has_touch=True)  # fmt: skip
    photo = files.save(files.lesion_photo(1200, 1600, seed=5), tmp_path / "phone.jpg", format="JPEG", quality=90)
    assert page.locator("#camera").get_attribute("capture") == "environment"
    assert page.locator("#disclaimer").is_visible()
    pick = page.locator("label[for=camera]").bounding_box()
    assert pick["y"] + pick["height"] <= 844, "the photo button must be on the first screen"
    assert page.locator("#disclaimer").inner_text().startswith("⚠️ " + texts.DISCLAIMER_SHORT)
    page.locator("#camera").set_input_files(str(photo))
    page.wait_for_selector("#charts svg >> nth=1")
    expected = tiny_app.predict(photo)
    assert expected["lesion_check"]["passed"] and expected["image_domain"]["label"] == "dermoscopy"
    words = expected_words(tiny_app, expected)
    assert words.headline in (texts.FLAGGED, texts.NOT_FLAGGED)  # dermoscopy: the page's usual words
    assert page.locator("#headline").inner_text().startswith(words.headline)
    assert page.locator("#domain").text_content() == "Dermoscopy image" and page.locator("#caveat").is_hidden()
    assert page.locator("#show-anyway").is_hidden() and page.locator("#message").is_hidden()
    page.wait_for_function("() => document.querySelector('#photo .frame img')?.complete")
    boxes = [page.locator(sel).bounding_box() for sel in ("#photo .frame", "#headline", "#charts svg >> nth=0",
                                                          "#charts svg >> nth=1")]  # fmt: skip
    assert all(0 <= b["y"] and b["y"] + b["height"] <= 844 for b in boxes), f"one glance, on the first screen: {boxes}"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "no horizontal scrolling"
    first, second = boxes[2:]
    assert abs(first["y"] - second["y"]) < 1 and first["width"] > 150, "the donuts side by side, no gap below"
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.locator("label[for=map-malignancy]").click()
    overlay = page.locator("#photo .map-malignancy")
    assert overlay.is_visible() and "cropped" in overlay.get_attribute("class")  # 1200x1600: the centre square
    assert page.locator("#photo .map-caption").inner_text() == texts.MAP_CAPTION
    page.screenshot(path=str(tmp_path / "phone-map.png"))

    green = solid(tmp_path / "green.png", GREEN)  # an ordinary photo for the tiny check
    page.locator("#file").set_input_files(str(green))
    page.wait_for_function("() => document.querySelector('#domain').textContent === 'Ordinary photo'")
    words = expected_words(tiny_app, tiny_app.predict(green))
    assert page.locator("#headline").inner_text().startswith(words.headline)
    assert page.locator("#caveat").inner_text() == words.caveat and words.caveat.startswith(texts.CLINICAL_HARDER)
    assert page.locator("#threshold").inner_text() == f"{words.threshold_line} Not a diagnosis."
    assert "caught 8 of 10 cancers" in words.threshold_line
    caveat, chart = page.locator("#caveat").bounding_box(), page.locator("#charts svg").first.bounding_box()
    assert caveat["y"] + caveat["height"] <= chart["y"], "the caveat stands above the donuts"
    page.screenshot(path=str(tmp_path / "phone-ordinary-photo.png"), full_page=True)

    dark = solid(tmp_path / "dark.png", DARK)
    page.locator("#file").set_input_files(str(dark))
    page.wait_for_function("() => !document.querySelector('#message').hidden")
    assert page.locator("#message").inner_text() == postprocess.LESION_CHECK_FAILED_MESSAGE
    assert page.locator("#charts svg").count() == 0
    assert page.locator("#domain").text_content() == "Not a skin-lesion close-up"
    page.locator("#show-anyway").click()
    assert page.locator("#charts svg").count() == 2
    assert page.locator("#headline").inner_text().startswith(expected_words(tiny_app, tiny_app.predict(dark)).headline)
    page.screenshot(path=str(tmp_path / "phone-rejected.png"), full_page=True)

    origin = urlsplit(tiny_app.url).netloc
    image_bytes = [photo.read_bytes()[:4096], dark.read_bytes()[:4096]]
    for request in page.requests:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            continue
        assert parts.netloc == origin, f"request to another host: {request.url}"
        assert request.method == "GET", f"{request.method} {request.url}"
        body = request.post_data_buffer or b""
        assert not any(chunk in body for chunk in image_bytes)
    assert not any("/gradio_api/" in r.url for r in page.requests), "the page must not call the server's API"
    page.context.close()


def test_page_works_offline_after_the_first_visit(browser, tiny_app, tmp_path):
    photo = files.jpeg(tmp_path / "photo.jpg", 400, 300, seed=7)
    page = open_page(browser, tiny_app.url + "on-device")  # without the slash: redirected to /on-device/
    assert page.url == tiny_app.page_url
    manifest = page.evaluate("() => fetch('manifest.json').then(r => r.json())")
    first_use_mb = (manifest["runtime"]["wasm"]["transfer_bytes"] + sum(m["transfer_bytes"] for m in
                                                                        manifest["models"])) / 1e6  # fmt: skip
    assert f"Downloaded {first_use_mb:.1f} MB for this first use" in page.locator("#load-status").inner_text()
    online = analyse(page, photo)
    page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    stale = "models/lesion_type/0000000000000000/model.onnx"  # what a replaced package leaves in the cache
    cached = "u => caches.open('skin-demo-on-device-v1').then(c => c.match(u)).then(r => r !== undefined)"
    page.evaluate("u => caches.open('skin-demo-on-device-v1').then(c => c.put(u, new Response('old')))", stale)
    assert page.evaluate(cached, stale)
    page.reload(wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    assert not page.evaluate(cached, stale), "models the manifest no longer names must leave the cache"
    page.context.set_offline(True)
    page.reload(wait_until="load")
    page.evaluate("() => window.skinDemo.ready")
    assert "already on this device; the page works offline" in page.locator("#load-status").inner_text()
    offline = analyse(page, photo)
    assert offline["malignancy"] == online["malignancy"] and offline["lesion_check"] == online["lesion_check"]
    page.context.close()


def test_static_build_works_from_a_plain_http_server(browser, tiny_app, tmp_path):
    out = tmp_path / "site"
    assert build_main(["build", str(out), "--models-dir", str(tiny_app.settings.models_dir)]) == 0
    card = (out / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert front["sdk"] == "static" and front["app_file"] == "index.html" and (out / "index.html").is_file()
    assert len(front["short_description"]) <= 60  # the Hub's limit
    assert all(f.stat().st_size < 20e6 for f in out.rglob("*") if f.is_file())
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=out,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port)
        page = open_page(browser, f"http://127.0.0.1:{port}/")
        photo = files.jpeg(tmp_path / "photo.jpg", 500, 375, seed=8)
        assert_same_result(analyse(page, photo), tiny_app.predict(photo))
        assert page.locator("#server-link").is_hidden()  # no server behind a static site
        # http.server sends no COOP/COEP; the service worker adds them, so from the second visit on the page is
        # cross-origin isolated (wasm threads) on any static host.
        assert not page.evaluate("() => self.crossOriginIsolated")
        page.wait_for_function("() => navigator.serviceWorker.controller !== null")
        page.reload(wait_until="load")
        page.evaluate("() => window.skinDemo.ready")
        assert page.evaluate("() => self.crossOriginIsolated")
        page.context.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_browser_benchmark_runs_end_to_end(tiny_app, tmp_path):
    """As a user runs it: its own process (Playwright's sync API cannot nest inside this module's)."""
    report = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_browser", "--models-dir", str(tiny_app.settings.models_dir),
         "--data", str(tmp_path / "none"), "--images", "2", "--repeats", "1", "--json", str(report)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio_tmp")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Per image in the browser" in result.stdout
    figures = json.loads(report.read_text())
    assert figures["first_load"]["wire_mb"] > figures["first_load"]["wire_mb_by_kind"]["runtime"] > 1
    for mode in figures["modes"].values():
        assert mode["steps"]["models_and_check"]["n"] == 2 and mode["steps"]["total"]["p50"] > 0


# -- real images on the bundled packages -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_app(tmp_path_factory):
    """The app on the bundled packages (each folder of models/ with the tasks its config answers: one, or one per
    head); a tiny lesion check stands in where none of them answers lesion_check."""
    bundled = bundled_folders(REPO_ROOT / "models")
    if not {"malignancy", "lesion_type"} <= set(bundled):
        pytest.skip("the bundled model packages are not in models/")
    root = tmp_path_factory.mktemp("on_device_real")
    models = root / "models"
    models.mkdir()
    for folder in set(bundled.values()):
        (models / folder.name).symlink_to(folder)
    if "lesion_check" not in bundled:
        make_lesion_check_package(models / "lesion_check")
    with launched(root, models) as app:
        yield app


def real_test_images(ham10000_dir: Path) -> list[Path]:
    """10 HAM10000 test-split images and 10 ISIC 2017 test images, spread over each list."""
    isic = SHARED_DATA / "isic2017"
    if not (isic / "labels.csv").is_file():
        pytest.skip(f"ISIC 2017 data not found at {isic}")
    with (REPO_ROOT / "models" / "ham10000_split.csv").open() as f:
        ham = [r["image_id"] for r in csv.DictReader(f) if r["split"] == "test"]
    with (isic / "labels.csv").open() as f:
        isic_ids = [r["image_id"] for r in csv.DictReader(f) if r["isic2017_split"] == "test"]
    pick = lambda ids: ids[:: max(1, len(ids) // 10)][:10]  # noqa: E731
    paths = [ham10000_dir / "images" / f"{i}.jpg" for i in pick(ham)]
    paths += [next((isic / "images").glob(f"{i}.*")) for i in pick(isic_ids)]
    return paths


def clinical_test_images(count: int = 10) -> list[Path]:
    """`count` ordinary (clinical) photos of the clinical test split, spread over both sources; [] where absent."""
    clinical = SHARED_DATA / "clinical"
    if not (clinical / "labels.csv").is_file():
        return []
    with (clinical / "labels.csv").open() as f:
        ids = [r["image_id"] for r in csv.DictReader(f) if r["split"] == "test"]
    return [next((clinical / "images").glob(f"{i}.*")) for i in ids[:: max(1, len(ids) // count)][:count]]


def largest_difference(on_device: dict, server: dict) -> float:
    return max(abs(on_device[t][k] - server[t][k]) for t in ("malignancy", "lesion_type") for k in server[t])


@pytest.mark.data
def test_real_dermoscopy_images_match_predict(browser, real_app, ham10000_dir, tmp_path):
    page = open_page(browser, real_app.page_url)
    largest = 0.0
    images = real_test_images(ham10000_dir) + clinical_test_images()  # dermoscopy, then ordinary photos
    domains = set()
    largest_map = 0.0
    for path in images:
        on_device, server = analyse(page, path), real_app.predict(path)
        assert_same_result(on_device, server)
        largest = max(largest, largest_difference(on_device, server))
        assert server["attention"] is not None, "the bundled classifiers give the attention map"
        largest_map = max(largest_map, *(np.abs(np.subtract(on_device["attention"][s]["grid"], a["grid"])).max()
                                         for s, a in server["attention"].items()))
        domains.add(server["image_domain"]["label"])
    print(f"largest probability difference page vs /predict over {len(images)} images: {largest:.2e}; "
          f"largest attention-map difference {largest_map:.2e}; image domains {sorted(domains)}")
    # A phone-sized JPEG: the server decodes it at reduced scale (libjpeg), the page box-averages a full decode;
    # close, not within TOLERANCE (about 1e-2 at most, measured on ten such images).
    for path in real_test_images(ham10000_dir)[:2]:
        big = files.save(Image.open(path).resize((1600, 1200), Image.Resampling.BICUBIC), tmp_path / path.name,
                         format="JPEG", quality=90)  # fmt: skip
        difference = largest_difference(analyse(page, big), real_app.predict(big))
        print(f"{big.name} at 1600x1200: largest probability difference {difference:.2e}")
        assert difference <= 0.03
    # The decoded JPEG and the tensor are the server's too (browser and Pillow both decode with libjpeg-turbo).
    cfg = real_app.models["malignancy"].config.preprocess
    js_config = {"size": list(cfg.size), "resize": cfg.resize, "crop_pct": cfg.crop_pct,
                 "interpolation": cfg.interpolation, "mean": list(cfg.mean), "std": list(cfg.std)}  # fmt: skip
    for path in real_test_images(ham10000_dir)[::7]:
        expected = imaging.preprocess(imaging.load_image(path), cfg).ravel()
        got = np.asarray(page.evaluate("([u, c]) => window.skinDemo.debug.tensor(u, c)", [data_url(path), js_config]),
                         dtype=np.float32)  # fmt: skip
        assert np.abs(got - expected).max() <= 2 / 255 / min(cfg.std), path.name
    page.context.close()
