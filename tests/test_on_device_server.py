"""mount_on_device and the static build without a browser: what /on-device/ serves, with which headers, and what it
refuses."""

from __future__ import annotations

import gzip
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from skin_demo import postprocess, texts
from skin_demo.modelpack import ModelPack, Models, load_package
from skin_demo.web.build import build_static
from skin_demo.web.server import mount_on_device
from skin_demo.web.site import RUNTIME_WASM, wasm_size
from tests.web_packages import make_combined_packages, make_three_packages

TEXTS = {"disclaimer": "Not a diagnosis.", "disclaimer_short": "Not a diagnosis."}


def mounted(models: Models) -> TestClient:
    """A client of an app with its own page at / and the on-device page for `models` at /on-device/."""
    app = FastAPI()

    @app.get("/")
    def home() -> dict:
        return {"page": "the app's own"}

    mount_on_device(app, models, texts=TEXTS)
    return TestClient(app)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = make_three_packages(tmp_path_factory.mktemp("models"))
    packs = {task: ModelPack.load(root / task, threads=1) for task in ("malignancy", "lesion_type", "lesion_check")}
    return mounted(Models(packs, notices={"lesion_type": "The lesion-type model from the Hub is not in use."})), packs


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """Malignancy and lesion_type as one package with a head per task, and the lesion check."""
    models_dir = make_combined_packages(tmp_path_factory.mktemp("combined"))
    packs = {**load_package(models_dir / "classifiers", threads=1),
             "lesion_check": ModelPack.load(models_dir / "lesion_check", threads=1)}  # fmt: skip
    return mounted(Models(packs)), packs


def test_manifest_lists_the_packages_in_use_with_the_apps_texts_and_notices(client):
    http, packs = client
    manifest = http.get("/on-device/manifest.json").json()
    assert [entry["tasks"] for entry in manifest["models"]] == [[task] for task in packs]
    for entry in manifest["models"]:
        body = http.get("/on-device/" + entry["url"]).content
        (task,) = entry["tasks"]
        assert body == (packs[task].path / "model.onnx").read_bytes() and len(body) == entry["bytes"]
    assert manifest["messages"]["disclaimer"] == "Not a diagnosis."
    assert manifest["notices"] == {"lesion_type": "The lesion-type model from the Hub is not in use."}
    assert manifest["runtime"]["wasm"]["bytes"] == wasm_size()


def test_only_the_on_device_routes_are_cross_origin_isolated(client):
    http, _ = client
    page = http.get("/on-device/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    home = http.get("/")
    assert home.json() == {"page": "the app's own"} and "cross-origin-embedder-policy" not in home.headers
    redirect = http.get("/on-device", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == "on-device/"


def test_wasm_is_sent_gzip_encoded_and_decoded_for_clients_without_gzip(client):
    http, _ = client
    url = "/on-device/" + http.get("/on-device/manifest.json").json()["runtime"]["wasm"]["url"]
    assert url.endswith(RUNTIME_WASM)
    encoded = http.get(url, headers={"Accept-Encoding": "gzip"})
    assert encoded.headers["content-encoding"] == "gzip" and encoded.headers["content-type"] == "application/wasm"
    assert len(encoded.content) == wasm_size()  # httpx decodes it
    plain = http.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == encoded.content
    assert plain.content[:4] == b"\0asm"


def test_models_are_sent_gzip_encoded_and_the_manifest_counts_what_travels(client):
    http, packs = client
    for entry in http.get("/on-device/manifest.json").json()["models"]:
        url = "/on-device/" + entry["url"]
        with http.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as encoded:
            assert encoded.headers["content-encoding"] == "gzip"
            wire = b"".join(encoded.iter_raw())
        assert len(wire) == entry["transfer_bytes"] < entry["bytes"]
        assert gzip.decompress(wire) == (packs[entry["tasks"][0]].path / "model.onnx").read_bytes()
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and len(plain.content) == entry["bytes"]


def test_unknown_models_and_stale_hashes_are_not_served(client):
    http, _ = client
    entry = http.get("/on-device/manifest.json").json()["models"][0]
    stale = entry["url"].replace(entry["sha256"][:16], "0" * 16)
    assert http.get("/on-device/" + stale).status_code == 404
    assert http.get("/on-device/models/other/" + entry["sha256"][:16] + "/model.onnx").status_code == 404


def test_manifest_carries_the_rules_names_and_the_words_the_server_writes(client):
    """The page holds no thresholds and no words of its own: the words for each domain's call are written here from
    the malignancy package in use (its measured figures), the lesion-check messages from postprocess."""
    http, packs = client
    manifest = http.get("/on-device/manifest.json").json()
    assert manifest["flag_words"] == texts.all_flag_words(packs["malignancy"].config)
    assert "caught 8 of 10 cancers" in manifest["flag_words"]["clinical"]["not_flagged"]["threshold_line"]
    assert manifest["lesion_check_messages"] == postprocess.LESION_CHECK_MESSAGES
    assert manifest["domains"] == ["dermoscopy", "clinical"] and manifest["not_lesion_label"] == "not_lesion"
    assert manifest["score_tasks"] == {"binary_head": "malignancy", "lesion_type_sum": "lesion_type"}
    assert manifest["names"]["clinical"] == "Ordinary photo"


def test_a_package_with_a_head_per_task_is_one_model_file_counted_once(combined):
    """The page downloads, counts and runs the file of a package with a head per task once for all its tasks."""
    http, packs = combined
    manifest = http.get("/on-device/manifest.json").json()
    assert [entry["tasks"] for entry in manifest["models"]] == [["malignancy", "lesion_type"], ["lesion_check"]]
    files = [packs["malignancy"].path / "model.onnx", packs["lesion_check"].path / "model.onnx"]
    assert [entry["bytes"] for entry in manifest["models"]] == [f.stat().st_size for f in files]
    shared = manifest["models"][0]
    assert shared["url"] == f"models/malignancy+lesion_type/{shared['sha256'][:16]}/model.onnx"
    with http.stream("GET", "/on-device/" + shared["url"], headers={"Accept-Encoding": "gzip"}) as encoded:
        wire = b"".join(encoded.iter_raw())
    assert len(wire) == shared["transfer_bytes"] and gzip.decompress(wire) == files[0].read_bytes()
    assert http.get("/on-device/" + shared["url"].replace("malignancy+lesion_type", "malignancy")).status_code == 404


def test_the_static_build_holds_a_shared_model_file_once(combined, tmp_path):
    _, packs = combined
    out = build_static(tmp_path / "site", list(packs.values()), texts=TEXTS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [entry["tasks"] for entry in manifest["models"]] == [["malignancy", "lesion_type"], ["lesion_check"]]
    assert sorted(p.relative_to(out).as_posix() for p in (out / "models").rglob("*.onnx")) == sorted(
        entry["url"] for entry in manifest["models"])
    assert (out / manifest["models"][0]["url"]).read_bytes() == (packs["lesion_type"].path / "model.onnx").read_bytes()
    assert "- `malignancy+lesion_type`: " in (out / "README.md").read_text(encoding="utf-8")
