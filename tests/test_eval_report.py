"""The evaluation report files (train/report.py) and the model card (train/card.py)."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from skin_demo.config import PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.taxonomy import LESION_CODES
from skin_demo.train.card import NOT_A_DIAGNOSIS, render_model_card
from skin_demo.train.metrics import EvalReport, compute_report
from skin_demo.train.report import REPORT_FILES, read_report, render_markdown, write_report
from tests.tiny_packages import make_package, tiny_config


def _lesion_report(split: str = "models/ham10000_split.csv:test") -> EvalReport:
    # df is always missed (a weak class), and vasc has no test images at all.
    rng = np.random.default_rng(0)
    y = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3] * 5 + [4] * 10 + [5] * 40)
    probs = rng.random((y.size, 7)) * 0.2
    hit = np.ones(y.size, bool)
    hit[30:35] = False  # df -> bkl
    probs[np.arange(y.size), np.where(hit, y, 2)] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    return compute_report(y, probs, LESION_CODES, task="lesion_type", split=split)


def _malignancy_report() -> EvalReport:
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    pm = np.array([0.1, 0.2, 0.4, 0.4, 0.7, 0.4, 0.8, 0.9])
    return compute_report(y, np.stack([1 - pm, pm], 1), ("benign", "malignant"), task="malignancy",
                          threshold=0.35, split="models/ham10000_split.csv:test")


def _config(task: str, **overrides) -> PackageConfig:
    labels = ("benign", "malignant") if task == "malignancy" else LESION_CODES
    malignant = ("malignant",) if task == "malignancy" else ("akiec", "bcc", "mel")
    return PackageConfig.from_dict(tiny_config(task, labels, malignant, size=(224, 224), **overrides))


def test_write_report_writes_every_file_and_round_trips(tmp_path):
    report = _lesion_report()
    paths = write_report(report, tmp_path / "eval", title="Lesion type")
    assert sorted(paths) == sorted(REPORT_FILES)
    for name in REPORT_FILES:
        assert paths[name].stat().st_size > 0
    for png in ("confusion_matrix.png", "per_class_f1.png", "roc.png"):
        with Image.open(paths[png]) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert read_report(tmp_path / "eval") == report
    assert read_report(tmp_path / "nothing") is None
    text = paths["EVAL.md"].read_text()
    assert text.startswith("# Lesion type")
    assert "**Weak classes**" in text and "Dermatofibroma (df) (F1 0.000" in text
    assert "No test images at all for vasc" in text
    assert "| df | 0 | 0 | 5 | 0 | 0 | 0 | 0 |" in text  # the confusion-matrix row of the weak class
    assert "![ROC](./roc.png)" in text


def test_binary_report_markdown_and_plots(tmp_path):
    report = _malignancy_report()
    write_report(report, tmp_path)
    text = (tmp_path / "EVAL.md").read_text()
    assert "| Sensitivity at the threshold | 1.000 |" in text
    assert "| Specificity at the threshold | 0.400 |" in text
    assert "| Decision threshold (p(malignant) >=) | 0.350 |" in text
    assert json.loads((tmp_path / "metrics.json").read_text())["binary"]["threshold"] == 0.35


def test_broken_metrics_json_is_reported_with_its_path(tmp_path):
    (tmp_path / "metrics.json").write_text('{"task": "x"}')
    with pytest.raises(ValueError, match="metrics.json is not an evaluation report"):
        read_report(tmp_path)


def test_model_card_metadata_is_valid_hugging_face_yaml():
    report = _lesion_report()
    config = _config("lesion_type", metrics=report.headline())
    text = render_model_card(config, report, repo_id="org/skin-demo-lesion-type")
    card = ModelCard(text)
    data = card.data
    assert data.license == "cc-by-nc-4.0"
    assert data.library_name == "onnx"
    assert data.pipeline_tag == "image-classification"
    assert {"image-classification", "dermatology", "onnx", "skin-lesion"} <= set(data.tags)
    assert data.datasets == ["HAM10000"]
    results = {r.metric_type: r for r in data.eval_results}
    assert results["balanced_accuracy"].metric_value == pytest.approx(report.balanced_accuracy, abs=1e-4)
    assert results["accuracy"].metric_value == pytest.approx(report.accuracy, abs=1e-4)
    assert results["f1"].metric_value == pytest.approx(report.macro_f1, abs=1e-4)
    assert results["roc_auc"].metric_value == pytest.approx(report.macro_roc_auc, abs=1e-4)
    assert all(r.dataset_split == "test" and r.task_type == "image-classification" for r in data.eval_results)
    assert data.model_name == "skin-demo-lesion-type"


def test_model_card_body_says_what_matters():
    report = _lesion_report()
    text = render_model_card(_config("lesion_type"), report)
    body = text.split("\n---\n", 1)[1]
    assert NOT_A_DIAGNOSIS in body
    for heading in ("## Intended use", "## Training data", "## Preprocessing", "## Evaluation",
                    "## Limitations and biases", "## How to use", "## Citation"):
        assert heading in body
    assert "grouped by `lesion_id`" in body and "200x150" in body
    assert "Darker skin types" in body and "phone" in body
    assert "Resize so the shorter side is 224 px (bilinear interpolation)" in body
    assert "**Dermatofibroma (df)** (weak)" in body
    assert "Weak classes on the test split:** df" in body
    assert "10.1038/sdata.2018.161" in body
    assert "ISIC" not in body  # no extra data recorded for this package


def test_model_card_without_report_and_with_isic_data():
    config = _config(
        "malignancy",
        decision_threshold=0.27,
        provenance={"data": "HAM10000 (200x150 copy) + ISIC malignant-vs-benign non-HAM images"},
        metrics={"split": "models/ham10000_split.csv:test", "balanced_accuracy": 0.8, "roc_auc": 0.9,
                 "sensitivity": 0.91, "specificity": 0.6},
    )
    text = render_model_card(config, None)
    card = ModelCard(text)
    assert card.data.datasets == ["HAM10000", "ISIC-Archive"]
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {
        "balanced_accuracy": 0.8, "roc_auc": 0.9, "recall": 0.91, "specificity": 0.6,
    }
    assert "No evaluation report was recorded" in text
    assert "ISIC \"Skin Cancer: Malignant vs. Benign\"" in text and "International Skin Imaging" in text
    assert "p(malignant) >= 0.2700" in text
    # Nothing to put in model-index: no model-index at all (the Hub rejects an empty one).
    bare = render_model_card(_config("lesion_type", metrics={}), None)
    assert "model-index" not in bare and ModelCard(bare).data.eval_results is None


def test_the_cards_usage_example_matches_the_serving_path(tmp_path):
    """Run the card's own Python example on a tiny package; it must print what ModelPack computes."""
    package = make_package(tmp_path / "pkg", "malignancy", size=(32, 32),
                           config_overrides={"decision_threshold": 0.4, "temperature": 1.5})
    pack = ModelPack.load(package)
    rng = np.random.default_rng(1)
    image_path = tmp_path / "lesion.png"
    Image.fromarray(rng.integers(0, 255, size=(45, 60, 3), dtype=np.uint8)).save(image_path)
    card = render_model_card(pack.config, None)
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    code = code.replace('Path("path/to/package")', f"Path({str(package)!r})")
    code = code.replace('"lesion.jpg"', repr(str(image_path)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "card_example", "exec"), {})
    printed = dict(line.split(": ") for line in out.getvalue().splitlines() if ": " in line)
    expected = pack.probabilities(preprocess(load_image(image_path), pack.config.preprocess)[None])[0]
    for label, p in zip(pack.config.labels, expected):
        assert float(printed[label]) == pytest.approx(float(p), abs=1e-3)
    assert f"flagged as malignant: {expected[1] >= 0.4}" in out.getvalue()


def test_markdown_handles_an_unnamed_split():
    report = _malignancy_report()
    text = render_markdown(EvalReport.from_dict({**report.to_dict(), "split": None}))
    assert "an unnamed set" in text
