"""The running app through the real gradio_client: the /predict API, bad inputs, uploads not kept, page content."""

from __future__ import annotations

import hashlib
import json
import socket
import statistics
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file

from skin_demo.imaging import MAX_FILE_BYTES
from skin_demo.modelpack import ModelPack
from skin_demo.predictor import Predictor
from skin_demo.settings import Settings, load_models
from skin_demo.ui import DISCLAIMER, build_app
from tests import image_files as files
from tests.conftest import REPO_ROOT
from tests.tiny_packages import make_models_dir

TIMEOUT_S = 60  # per request: a hung worker fails the test instead of hanging it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(demo: gr.Blocks) -> str:
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    return url


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on tiny packages, with Gradio's temp folder under the test's own tmp dir."""
    root = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(root / "gradio_tmp"))
        settings = Settings(models_dir=make_models_dir(root / "models"), examples_dir=root / "no_examples", threads=1)
        demo = build_app(settings)
        url = launch(demo)
        try:
            yield demo, url, Client(url, verbose=False), root / "gradio_tmp", settings
        finally:
            demo.close()


def predict(client: Client, path: Path) -> dict:
    return client.submit(handle_file(str(path)), api_name="/predict").result(timeout=TIMEOUT_S)


def test_predict_returns_plain_json(served, tmp_path):
    _, _, client, _, settings = served
    result = predict(client, files.jpeg(tmp_path / "photo.jpg"))
    assert list(result["malignancy"]) == ["benign", "malignant"]
    assert list(result["lesion_type"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert sum(result["malignancy"].values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["malignancy_probability"] == pytest.approx(result["malignancy"]["malignant"])
    assert [t["label"] for t in result["lesion_type_top"]][0] == max(result["lesion_type"], key=result["lesion_type"].get)
    assert result["models"]["malignancy"]["source"].startswith("bundled")
    assert result["disclaimer"] == DISCLAIMER
    json.dumps(result)  # plain JSON all the way down


def test_api_sees_the_original_file_with_its_exif_rotation(served, tmp_path):
    """Gradio must hand our load_image the uploaded bytes: no re-encode, no EXIF stripping, no rotation of its own."""
    demo, _, client, _, _ = served
    models = demo.skin_demo_models
    predictor = Predictor(models.malignancy, models.lesion_type)
    rotated = files.exif_rotated_jpeg(tmp_path / "sideways.jpg", orientation=6)
    result = predict(client, rotated)
    upright = predictor.predict(rotated).lesion_type
    # The same pixels without the EXIF tag (what a server that drops EXIF would analyse):
    unrotated = predictor.predict(files.Image.fromarray(np.asarray(files.Image.open(rotated)))).lesion_type
    assert result["lesion_type"] == pytest.approx(upright, abs=1e-6)
    assert max(abs(unrotated[k] - upright[k]) for k in upright) > 1e-3, "the test image must be rotation-sensitive"


@pytest.mark.parametrize(
    "make",
    [files.greyscale_png, files.rgba_png, files.palette_png, files.cmyk_jpeg, files.png_16bit,
     lambda p: files.animated(p, "GIF")],
    ids=["greyscale", "rgba", "palette", "cmyk", "16bit", "animated-gif"],
)  # fmt: skip
def test_awkward_but_valid_images_are_analysed(served, tmp_path, make):
    _, _, client, _, _ = served
    result = predict(client, make(tmp_path / "odd.png"))
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (files.empty_file, "empty"),
        (files.not_an_image, "not an image"),
        (files.truncated_jpeg, "could not read image"),
        (files.tiny_png, "at least 32 pixels"),
        (files.bomb_png, "too large"),
    ],
    ids=["empty", "text", "truncated", "tiny", "bomb"],
)
def test_bad_input_is_a_clean_client_error(served, tmp_path, make, message):
    _, _, client, _, _ = served
    with pytest.raises(Exception) as info:
        predict(client, make(tmp_path / "bad.jpg"))
    text = str(info.value)
    assert message in text, text
    assert "Traceback" not in text and 'File "' not in text
    # ...and the worker is free for the next request.
    assert "lesion_type" in predict(client, files.jpeg(tmp_path / "ok.jpg", 200, 150))


def test_upload_over_the_size_limit_is_refused(served, tmp_path):
    _, _, client, _, _ = served
    big = tmp_path / "huge.jpg"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1024)
    with pytest.raises(Exception) as info:
        predict(client, big)
    assert "Traceback" not in str(info.value)


def test_uploaded_files_are_deleted_after_the_request(served, tmp_path):
    _, _, client, temp_dir, _ = served
    photo = files.jpeg(tmp_path / "private.jpg", 320, 240, seed=7)
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    predict(client, photo)
    with pytest.raises(Exception):
        predict(client, files.truncated_jpeg(tmp_path / "broken.jpg"))  # failed requests clean up too
    left = [p for p in temp_dir.rglob("*") if p.is_file() and p.suffix in (".jpg", ".jpeg")]
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() != digest for p in left), left
    assert left == [], left


def test_page_shows_the_warning_models_and_the_predict_endpoint(served):
    _, url, client, _, settings = served
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=10) as response:
        config = json.loads(response.read())
    text = json.dumps(config)
    assert "Research demo, not a diagnosis" in text
    assert "What these classes mean" in text and "Melanocytic nevus (nv)" in text
    assert "bundled " in text and "balanced accuracy 0.500" in text
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert list(endpoints) == ["/predict"]  # the page's own events are not part of the API


def test_analytics_are_off(served):
    demo, _, _, _, _ = served
    assert demo.analytics_enabled is False


def test_examples_gallery_reads_the_manifest_and_hides_when_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))  # where Gradio copies gallery images
    models = load_models(Settings(models_dir=make_models_dir(tmp_path / "models"), threads=1))
    examples = tmp_path / "examples"
    examples.mkdir()
    empty = build_app(Settings(examples_dir=examples), models=models)
    assert not [b for b in empty.blocks.values() if isinstance(b, gr.Gallery)]

    files.jpeg(examples / "ex1.jpg", 64, 48)
    (examples / "manifest.csv").write_text("file,dx,label,source,licence\nex1.jpg,mel,Melanoma (mel),generated,CC0\n")
    demo = build_app(Settings(examples_dir=examples), models=models)
    (gallery,) = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert [item["caption"] for item in gallery.value] == ["True label: Melanoma (mel) · generated · CC0"]


def test_server_side_latency_on_tiny_packages(served, tmp_path):
    """Server-side time per request (decode + preprocess + both models), from the API's own timings."""
    _, _, client, _, _ = served
    photo = files.jpeg(tmp_path / "phone.jpg", 1600, 1200)
    totals, wall = [], []
    for _ in range(10):
        start = time.perf_counter()
        totals.append(predict(client, photo)["timings_ms"]["total"])
        wall.append(1000 * (time.perf_counter() - start))
    print(f"\nserver-side p50 {statistics.median(totals):.1f} ms; client round trip p50 {statistics.median(wall):.1f} ms")
    assert statistics.median(totals) < 500  # generous: this machine is shared with training


def bundled_models_present() -> bool:
    return all((REPO_ROOT / "models" / task / "model.onnx").is_file() for task in ("malignancy", "lesion_type"))


@pytest.mark.data
def test_real_ham10000_image_through_the_api(served, ham10000_dir):
    _, _, client, _, _ = served
    image = sorted((ham10000_dir / "images").glob("*.jpg"))[0]
    result = predict(client, image)
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.data
@pytest.mark.skipif(not bundled_models_present(), reason="the bundled packages in models/ are not there yet")
def test_bundled_models_on_a_real_image(ham10000_dir, tmp_path, monkeypatch):
    """The real bundled packages (what app.py serves by default) load, validate and answer for a real image."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    for name in ("MODELS_DIR", "MALIGNANCY_REPO", "MALIGNANCY_REVISION", "LESION_TYPE_REPO", "LESION_TYPE_REVISION"):
        monkeypatch.delenv(f"SKIN_DEMO_{name}", raising=False)
    models = load_models(Settings.from_env())
    for pack in models:
        assert isinstance(pack, ModelPack) and pack.source.startswith("bundled models/")
    prediction = Predictor(models.malignancy, models.lesion_type).predict(sorted((ham10000_dir / "images").glob("*.jpg"))[0])
    assert sum(prediction.lesion_type.values()) == pytest.approx(1.0, abs=1e-4)
    assert list(prediction.lesion_type) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    demo = build_app(Settings(examples_dir=tmp_path / "none"), models=models)
    (listing,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models"]
    assert "bundled models/malignancy" in listing.value and "bundled models/lesion_type" in listing.value
