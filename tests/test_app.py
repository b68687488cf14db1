"""The running app through the real gradio_client: the /predict API, bad inputs, uploads not kept, page content."""

from __future__ import annotations

import hashlib
import html
import json
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, ValidationError

from skin_demo import page, texts
from skin_demo.imaging import MAX_FILE_BYTES
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import LESION_CHECK_FAILED_MESSAGE, decision_threshold
from skin_demo.predictor import Predictor
from skin_demo.hub import load_models
from skin_demo.settings import Settings
from skin_demo.ui import DISCLAIMER, build_app
from tests import image_files as files
from tests.conftest import REPO_ROOT
from tests.served_app import serve
from tests.tiny_packages import CLINICAL_THRESHOLD, FAILING_LESION_THRESHOLD, make_models_dir
from tests.web_packages import GREEN

TIMEOUT_S = 120  # per request: a hung worker fails the test instead of hanging it (this CPU is shared)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on tiny packages: the three-way lesion check passes every image; malignancy is flagged from 0.3 on
    dermoscopy and from CLINICAL_THRESHOLD of the lesion-type sum on ordinary photos."""
    with serve(tmp_path_factory.mktemp("app"), malignancy_threshold=0.3, domains=True) as app:
        yield app, Client(app.url, verbose=False, ssl_verify=False)


def predict(client: Client, path: Path) -> dict:
    return client.submit(handle_file(str(path)), api_name="/predict").result(timeout=TIMEOUT_S)


def test_predict_returns_plain_json_with_the_flag_and_the_lesion_check(served, tmp_path):
    app, client = served
    result = predict(client, files.jpeg(tmp_path / "photo.jpg"))
    assert list(result["malignancy"]) == ["benign", "malignant"]
    assert list(result["lesion_type"]) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert sum(result["malignancy"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["malignancy_probability"] == pytest.approx(result["malignancy"]["malignant"])
    assert result["image_domain"]["label"] == "dermoscopy"  # what the tiny check makes of this photo
    assert list(result["image_domain"]["probabilities"]) == ["dermoscopy", "clinical", "not_lesion"]
    flag = result["malignancy_flag"]
    assert flag == {"flagged": result["malignancy_probability"] >= 0.3, "threshold": 0.3,  # the package's, not 0.5
                    "domain": "dermoscopy", "score_from": "binary_head"}  # fmt: skip
    check = result["lesion_check"]
    assert set(check) == {"passed", "score", "threshold", "message"}
    assert check["passed"] is True and check["score"] >= check["threshold"]
    assert result["lesion_type_top"][0]["label"] == max(result["lesion_type"], key=result["lesion_type"].get)
    assert set(result["models"]) == {"malignancy", "lesion_type", "lesion_check"}
    assert result["models"]["lesion_check"]["source"].startswith("bundled")
    assert result["notices"] == {} and result["disclaimer"] == DISCLAIMER
    json.dumps(result)  # plain JSON all the way down


def test_an_ordinary_photo_is_called_at_its_own_threshold(served, tmp_path):
    _, client = served
    result = predict(client, files.save(files.Image.new("RGB", (90, 60), GREEN), tmp_path / "phone.png"))
    assert result["image_domain"]["label"] == "clinical"
    assert result["lesion_check"]["passed"] is True
    assert result["malignancy_probability"] == result["lesion_type_malignant_probability"]  # the package's choice
    flag = result["malignancy_flag"]
    assert (flag["domain"], flag["score_from"]) == ("clinical", "lesion_type_sum")
    assert flag["threshold"] == CLINICAL_THRESHOLD
    assert flag["flagged"] == (result["malignancy_probability"] >= CLINICAL_THRESHOLD)


def test_a_failed_lesion_check_keeps_the_probabilities(tmp_path):
    """With the older two-label lesion check, as bundled before the image domains."""
    with serve(tmp_path, lesion_threshold=FAILING_LESION_THRESHOLD) as app:
        result = predict(Client(app.url, verbose=False, ssl_verify=False), files.jpeg(tmp_path / "cat.jpg"))
    check = result["lesion_check"]
    assert check["passed"] is False and check["score"] < check["threshold"] == FAILING_LESION_THRESHOLD
    assert check["message"] == LESION_CHECK_FAILED_MESSAGE
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)  # still there, for research use
    assert result["image_domain"] == {"label": "not_lesion", "probabilities": {
        "dermoscopy": check["score"], "not_lesion": pytest.approx(1 - check["score"], abs=1e-6)}}  # fmt: skip
    assert result["malignancy_flag"]["domain"] == "dermoscopy"  # the only domain that check knew


def test_api_sees_the_original_file_with_its_exif_rotation(served, tmp_path):
    """Gradio must hand our load_image the uploaded bytes: no re-encode, no EXIF stripping, no rotation of its own."""
    app, client = served
    predictor = Predictor(app.models["malignancy"], app.models["lesion_type"])
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
    _, client = served
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
    _, client = served
    with pytest.raises(AppError, match=message) as info:
        predict(client, make(tmp_path / "bad.jpg"))
    text = str(info.value)
    assert "Traceback" not in text and 'File "' not in text and str(tmp_path) not in text
    # ...and the worker is free for the next request.
    assert "lesion_type" in predict(client, files.jpeg(tmp_path / "ok.jpg", 200, 150))


def test_upload_over_the_size_limit_is_refused_by_the_client_before_sending(served, tmp_path):
    _, client = served
    big = tmp_path / "huge.jpg"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1024)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        predict(client, big)


def test_uploaded_files_are_deleted_after_the_request(served, tmp_path):
    app, client = served
    photo = files.jpeg(tmp_path / "private.jpg", 320, 240, seed=7)
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    predict(client, photo)
    with pytest.raises(AppError):
        predict(client, files.truncated_jpeg(tmp_path / "broken.jpg"))  # failed requests clean up too
    left = app.files_left()
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() != digest for p in left), left
    assert [p for p in left if p.suffix in (".jpg", ".jpeg")] == [], left
    assert not any(str(photo.name) in path for path in app.demo.upload_file_set)  # and forgotten by Gradio


def page_config(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=30) as response:
        return json.loads(response.read())


def test_page_shows_the_warning_the_models_and_only_the_predict_endpoint(served):
    app, client = served
    text = json.dumps(page_config(app.url))
    assert "Research demo, not a diagnosis" in text and "see a doctor" in text
    assert "What the lesion types mean" in text and "Mole (melanocytic nevus)" in text
    assert "Whether the photo is a skin-lesion close-up at all" in text and "balanced accuracy 0.500" in text
    assert "Analyse on this device: your photo is not uploaded" in text and 'href=\\"/on-device/\\"' in text
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert list(api) == ["/predict"]  # the page's own events are not part of the API
    endpoint = api["/predict"]
    # Typed from the function (gr.api): an uploaded file in, the answer's fields out, with its docstring.
    assert [(p["parameter_name"], p["python_type"]["type"]) for p in endpoint["parameters"]] == [("image", "filepath")]
    returned = endpoint["returns"][0]["python_type"]["type"]
    for field in ("malignancy_flag: dict(flagged: bool", "image_domain: None | dict(label: str", "attention: None",
                  "disclaimer: str"):
        assert field in returned, returned
    with urllib.request.urlopen(app.url.rstrip("/") + "/gradio_api/info", timeout=30) as response:
        described = json.loads(response.read())["named_endpoints"]["/predict"]["description"]
    assert described.startswith("Analyse one close-up photo") and "server paths are refused" in described


def test_a_refused_file_reaches_gradio_client_with_the_server_s_explanation(served):
    """A URL is what a client can pass that the server refuses (a local path, gradio_client uploads itself)."""
    _, client = served
    with pytest.raises(ValidationError, match="server paths, URLs and data URLs are not accepted"):
        client.predict(handle_file("https://example.com/lesion.jpg"), api_name="/predict")


def test_examples_gallery_reads_the_manifest_and_hides_when_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))  # where Gradio copies gallery images
    models = load_models(Settings(models_dir=make_models_dir(tmp_path / "models"), threads=1))
    examples = tmp_path / "examples"
    examples.mkdir()
    empty = build_app(Settings(examples_dir=examples), models=models)
    assert not [b for b in empty.blocks.values() if isinstance(b, gr.Gallery)]

    files.jpeg(examples / "ex1.jpg", 64, 48)
    (examples / "manifest.csv").write_text("file,dx,label,source,licence\nex1.jpg,mel,Melanoma (a skin cancer),generated,CC0\n")
    demo = build_app(Settings(examples_dir=examples), models=models)
    (gallery,) = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery)]
    assert [item["caption"] for item in gallery.value] == ["True label: Melanoma (a skin cancer)"]
    (intro,) = [b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "## Examples" in str(b.value)]
    assert "generated · CC0" in intro.value  # each image's source and licence, below the gallery's intro


def bundled_models_present() -> bool:
    return all((REPO_ROOT / "models" / folder / "model.onnx").is_file() for folder in ("classifiers", "lesion_check"))


@pytest.mark.data
def test_real_ham10000_image_through_the_api(served, ham10000_dir):
    _, client = served
    image = sorted((ham10000_dir / "images").glob("*.jpg"))[0]
    result = predict(client, image)
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.data
@pytest.mark.skipif(not bundled_models_present(), reason="the three bundled packages in models/ are not there yet")
def test_bundled_models_on_a_real_image(ham10000_dir, tmp_path, monkeypatch):
    """The real bundled packages (what app.py serves by default) load, validate and answer for a real image."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    for task in ("MALIGNANCY", "LESION_TYPE", "LESION_CHECK"):
        monkeypatch.delenv(f"SKIN_DEMO_{task}_REPO", raising=False)
        monkeypatch.delenv(f"SKIN_DEMO_{task}_REVISION", raising=False)
    monkeypatch.delenv("SKIN_DEMO_MODELS_DIR", raising=False)
    models = load_models(Settings.from_env())
    for pack in models.values():
        assert isinstance(pack, ModelPack) and pack.source.startswith("bundled models/")
    assert models["malignancy"].graph is models["lesion_type"].graph  # one network with both heads, run once
    predictor = Predictor.from_models(models)
    prediction = predictor.predict(sorted((ham10000_dir / "images").glob("*.jpg"))[0])
    assert list(prediction.lesion_type) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert prediction.lesion_check.passed, prediction.lesion_check  # a HAM10000 image is a lesion close-up
    assert prediction.malignancy_flag.threshold == decision_threshold(models["malignancy"].config)
    demo = build_app(Settings(examples_dir=tmp_path / "none"), models=models)
    (listing,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models"]
    assert all(f"bundled models/{folder}" in listing.value for folder in ("classifiers", "lesion_check"))


def test_models_list_reads_per_source_test_results():

    per_source = {"ham10000": {"balanced_accuracy": 0.824, "n": 1504}, "isic2017": {"balanced_accuracy": 0.687}}
    assert page.tested(per_source) == (
        "balanced accuracy 0.82 on HAM10000 test photos, 0.69 on ISIC 2017 test photos"
    )
    assert page.tested({"balanced_accuracy": 0.98}) == "balanced accuracy 0.980 on its test set"
    assert page.tested({}) == "no test result"


def test_the_result_names_the_domain_and_says_the_ordinary_photo_caveat(tmp_path):
    """The page's words for a call (ui's result card and table) on a real prediction of an ordinary photo."""
    models = load_models(Settings(models_dir=make_models_dir(tmp_path / "models", malignancy_threshold=0.3,
                                                             domains=True), threads=1))  # fmt: skip
    prediction, photo = Predictor.from_models(models).predict_with_image(
        files.save(files.Image.new("RGB", (90, 60), GREEN), tmp_path / "phone.png")
    )
    flag = prediction.malignancy_flag
    words = texts.flag_words(flag.flagged, flag.domain, models["malignancy"].config)
    headline = page.headline_html(prediction, words, photo)
    assert '<p class="domain">Ordinary photo</p>' in headline and html.escape(words.headline) in headline
    assert html.escape(words.threshold_line) in headline and "caught 8 of 10 cancers" in words.threshold_line
    assert f"{texts.percentage(flag.threshold)} malignant" in words.threshold_line
    assert texts.percentage(prediction.malignancy_probability) not in headline, "the donut shows it, once"
    assert words.caveat.startswith(texts.CLINICAL_HARDER) and "caught" not in words.caveat
    assert 'alt="The analysed photo"' in headline
    if not flag.flagged:
        assert "cannot rule anything out" in words.headline
    assert "| image domain | Ordinary photo |" in page.per_class_markdown(prediction)
