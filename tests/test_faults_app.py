"""Faults seen from outside the app: what a visitor (page, API) and an operator (`python app.py`) get when the
Hub is down, slow or serves a broken package, and when a bundled package is corrupt.

tests/test_hub.py covers the fallback itself (load_models, against the Hub stand-in) and test_modelpack.py the
package checks; here the same faults go through the launched app: the page and the /predict answer say why the
bundled model is in use (naming the repo, never a path on the server or the Hub's URL), and `python app.py` either
serves with the reason shown or exits naming the bad file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from skin_demo.settings import HubSource, Settings
from tests import image_files as files
from tests.conftest import REPO_ROOT
from tests.served_app import free_port, serve
from tests.tiny_packages import make_models_dir, make_package, package_files, tiny_config

pytestmark = pytest.mark.slow

REPO = "skin-demo/lesion-type"
STARTUP_TIMEOUT_S = 90  # `python app.py` imports gradio and onnxruntime: seconds, more on a busy CPU


def page_config(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=10) as response:
        return json.loads(response.read())


def notice_on_page(config: dict) -> str:
    """The text of the page's model-notice box as it reads ("" when the page has none; Markdown escapes removed)."""
    boxes = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "model-notice"]
    return re.sub(r"\\(.)", r"\1", boxes[0]["props"]["value"]) if boxes else ""


def assert_nothing_of_the_server(text: str, tmp_path: Path, hub) -> None:
    """No path on this server and not the Hub's URL (issue 20: the notices showed both)."""
    assert str(tmp_path) not in text and "/tmp/" not in text and hub.endpoint not in text and "http" not in text, text


def predict(url: str, image: Path) -> dict:
    client = Client(url, verbose=False, ssl_verify=False)
    return client.submit(handle_file(str(image)), api_name="/predict").result(timeout=60)


def broken_hub_package(tmp_path: Path) -> Path:
    """A lesion-type package whose config.json lists other labels than the model embeds."""
    folder = make_package(tmp_path / "wrong_labels", "lesion_type")
    wrong = tiny_config("lesion_type", ("a", "b", "c", "d", "e", "f", "g"), ("a",))
    (folder / "config.json").write_text(json.dumps(wrong))
    return folder


# fault -> (how to break the Hub, phrases the notice must contain)
HUB_FAULTS = {
    "down": ("down", ["download failed"]),
    "slow": ("slow", ["download failed"]),
    "truncated-model": ("truncate", ["download failed"]),
    "wrong-labels": (None, ["model.onnx", "differs from", "labels"]),
}


@pytest.mark.parametrize("fault", list(HUB_FAULTS), ids=list(HUB_FAULTS))
def test_page_and_api_say_why_the_bundled_model_is_used(hub, tmp_path, monkeypatch, fault):
    mode, phrases = HUB_FAULTS[fault]
    good = make_package(tmp_path / "good", "lesion_type")
    source = broken_hub_package(tmp_path) if fault == "wrong-labels" else good
    sha = hub.add_commit(REPO, package_files(source))
    if mode:
        hub.set_fault(mode, delay_s=10.0)
    settings = Settings(
        models_dir=make_models_dir(tmp_path / "bundled"),
        hub={"lesion_type": HubSource(REPO, sha)},
        hub_timeout_s=0.3,
        examples_dir=tmp_path / "none",
        threads=1,
    )
    start = time.perf_counter()
    with serve(tmp_path, settings=settings) as app:  # loads the models, as app.py does
        assert time.perf_counter() - start < 20, "a broken Hub must not hold up the start for long"
        notice = notice_on_page(page_config(app.url))
        result = predict(app.url, files.jpeg(tmp_path / "photo.jpg", 200, 150))
    assert REPO in notice and "using the bundled model" in notice, notice
    for phrase in phrases:
        assert phrase in notice, (phrase, notice)
    assert result["models"]["lesion_type"]["source"] == "bundled bundled/lesion_type"
    assert result["models"]["malignancy"]["source"] == "bundled bundled/malignancy"
    api_notice = result["notices"]["lesion_type"]
    assert REPO in api_notice and all(phrase in api_notice for phrase in phrases), api_notice
    assert_nothing_of_the_server(notice + json.dumps(result["notices"]) + json.dumps(result["models"]), tmp_path, hub)
    assert sum(result["lesion_type"].values()) == pytest.approx(1.0, abs=1e-5)


def app_env(tmp_path: Path, models_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKIN_DEMO_", "GRADIO_"))}
    env.update(
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(free_port()),
        GRADIO_TEMP_DIR=str(tmp_path / "gradio_tmp"),
        GRADIO_ANALYTICS_ENABLED="False",
        SKIN_DEMO_MODELS_DIR=str(models_dir),
        SKIN_DEMO_EXAMPLES_DIR=str(tmp_path / "no_examples"),
        SKIN_DEMO_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def test_app_process_serves_on_bundled_models_and_shows_why_when_the_hub_is_down(hub, tmp_path):
    """`python app.py` configured by environment variables, as on a Space, with the Hub refusing connections."""
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "pkg", "lesion_type")))
    hub.set_fault("down")
    env = app_env(
        tmp_path,
        make_models_dir(tmp_path / "bundled"),
        SKIN_DEMO_LESION_TYPE_REPO=REPO,
        SKIN_DEMO_LESION_TYPE_REVISION=sha,
        SKIN_DEMO_HUB_TIMEOUT="1",
        HF_ENDPOINT=hub.endpoint,
    )
    url = f"http://127.0.0.1:{env['GRADIO_SERVER_PORT']}/"
    log = tmp_path / "app.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "app.py"], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        config = None
        while config is None:
            assert proc.poll() is None, f"app.py exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"app.py did not start in {STARTUP_TIMEOUT_S} s:\n{log.read_text()}"
            try:
                config = page_config(url)
            except OSError:
                time.sleep(0.25)
        notice = notice_on_page(config)
        result = predict(url, files.jpeg(tmp_path / "photo.jpg", 200, 150))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert REPO in notice and "download failed (the Hub could not be reached)" in notice, notice
    assert "download failed" in result["notices"]["lesion_type"]
    assert_nothing_of_the_server(notice + json.dumps(result), tmp_path, hub)
    assert result["models"]["lesion_type"]["source"].startswith("bundled ")
    text = log.read_text()
    assert "falling back" in text and REPO in text, text


def truncate_model(package: Path) -> Path:
    model = package / "model.onnx"
    model.write_bytes(model.read_bytes()[:300])
    return model


def relabel_config(package: Path) -> Path:
    config = package / "config.json"
    raw = json.loads(config.read_text())
    raw["labels"] = [f"class_{i}" for i in range(len(raw["labels"]))]
    raw["malignant_labels"] = ["class_0"]
    config.write_text(json.dumps(raw))
    return package / "model.onnx"  # the model's embedded config no longer matches: the model file is named


def garble_config(package: Path) -> Path:
    config = package / "config.json"
    config.write_text("{not json")
    return config


CORRUPTIONS = {
    "truncated-model": ("lesion_type", truncate_model, "truncated"),
    "relabelled-config": ("malignancy", relabel_config, "differs from"),
    "config-not-json": ("lesion_type", garble_config, "not valid JSON"),
}


def test_app_process_exits_naming_the_corrupt_bundled_file(tmp_path):
    """A corrupt bundled package is a startup error: `python app.py` exits 1 with one line naming the file."""
    task, corrupt, phrase = CORRUPTIONS["truncated-model"]
    models_dir = make_models_dir(tmp_path / "bundled")
    bad_file = corrupt(models_dir / task)
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO_ROOT, env=app_env(tmp_path, models_dir),
        capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(bad_file) in result.stderr and phrase in result.stderr, output
    assert "Traceback" not in output, output
    assert "Running on" not in output  # it never started serving


@pytest.mark.parametrize("case", [c for c in CORRUPTIONS if c != "truncated-model"])
def test_app_main_refuses_other_corrupt_bundled_files(tmp_path, monkeypatch, capsys, case):
    """The same entry point in-process (the subprocess test above proves the exit status reaches the shell)."""
    import app

    task, corrupt, phrase = CORRUPTIONS[case]
    models_dir = make_models_dir(tmp_path / "bundled")
    bad_file = corrupt(models_dir / task)
    monkeypatch.setenv("SKIN_DEMO_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("SKIN_DEMO_EXAMPLES_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    assert app.main() == 1
    err = capsys.readouterr().err
    assert err.startswith("skin-demo cannot start: ") and str(bad_file) in err and phrase in err, err
    assert "Traceback" not in err
