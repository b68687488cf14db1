"""mount_on_device without a browser: what /on-device/ serves, with which headers, and what it refuses."""

from __future__ import annotations

import gzip

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from skin_demo import postprocess, texts
from skin_demo.modelpack import ModelPack, Models
from skin_demo.web.server import mount_on_device
from skin_demo.web.site import RUNTIME_WASM, wasm_size
from tests.web_packages import make_three_packages

TEXTS = {"disclaimer": "Not a diagnosis.", "disclaimer_short": "Not a diagnosis."}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = make_three_packages(tmp_path_factory.mktemp("models"))
    packs = {task: ModelPack.load(root / task, threads=1) for task in ("malignancy", "lesion_type", "lesion_check")}
    models = Models(packs, notices={"lesion_type": "The lesion-type model from the Hub is not in use."})
    app = FastAPI()

    @app.get("/")
    def home() -> dict:
        return {"page": "the app's own"}

    mount_on_device(app, models, texts=TEXTS)
    return TestClient(app), packs


def test_manifest_lists_the_packages_in_use_with_the_apps_texts_and_notices(client):
    http, packs = client
    manifest = http.get("/on-device/manifest.json").json()
    assert set(manifest["models"]) == set(packs)
    for task, entry in manifest["models"].items():
        body = http.get("/on-device/" + entry["url"]).content
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
    for task, entry in http.get("/on-device/manifest.json").json()["models"].items():
        url = "/on-device/" + entry["url"]
        with http.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as encoded:
            assert encoded.headers["content-encoding"] == "gzip"
            wire = b"".join(encoded.iter_raw())
        assert len(wire) == entry["transfer_bytes"] < entry["bytes"]
        assert gzip.decompress(wire) == (packs[task].path / "model.onnx").read_bytes()
        plain = http.get(url, headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers and len(plain.content) == entry["bytes"]


def test_unknown_models_and_stale_hashes_are_not_served(client):
    http, _ = client
    entry = http.get("/on-device/manifest.json").json()["models"]["malignancy"]
    stale = entry["url"].replace(entry["sha256"][:16], "0" * 16)
    assert http.get("/on-device/" + stale).status_code == 404
    assert http.get("/on-device/models/other/" + entry["sha256"][:16] + "/model.onnx").status_code == 404


def test_manifest_carries_the_rules_names_and_the_words_the_server_writes(client):
    """The page holds no thresholds and no words of its own: the words for each domain's call are written here from
    the malignancy package in use (its measured figures), the lesion-check messages from postprocess."""
    http, packs = client
    manifest = http.get("/on-device/manifest.json").json()
    assert manifest["flag_words"] == texts.all_flag_words(packs["malignancy"].config)
    assert "caught 9 of 10 cancers" in manifest["flag_words"]["clinical"]["not_flagged"]["threshold_line"]
    assert manifest["lesion_check_messages"] == postprocess.LESION_CHECK_MESSAGES
    assert manifest["domains"] == ["dermoscopy", "clinical"] and manifest["not_lesion_label"] == "not_lesion"
    assert manifest["score_tasks"] == {"binary_head": "malignancy", "lesion_type_sum": "lesion_type"}
    assert manifest["names"]["clinical"] == "Ordinary photo"
