"""The evaluation files (train/report.py) and the model card rendered from its template (train/card.py)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from skin_demo.config import PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.taxonomy import LESION_CODES
from skin_demo.train.card import NOT_A_DIAGNOSIS, render_model_card
from skin_demo.train.evaluate import TARGETS
from skin_demo.train.metrics import compute_report
from skin_demo.train.results import EvalReport, Evaluation
from skin_demo.train.report import (
    METRICS_FILE,
    REPORT_FILES,
    missed_targets,
    read_evaluation,
    render_markdown,
    write_evaluation,
    write_report,
)
from tests.tiny_packages import make_package, tiny_config

MALIGNANCY_CHOICE = {
    "best_epoch": 14,
    "weights": "ema",
    "val_auc": {"binary_head": {"ham10000": 0.91, "isic2017": 0.62, "selection": 0.765},
                "lesion_type_sum": {"ham10000": 0.93, "isic2017": 0.81, "selection": 0.87}},
    "source": "lesion_type head: P(akiec) + P(bcc) + P(mel)",
    "flip_tta": {"val_without": 0.87, "val_with": 0.874, "used": False},
}
TWO_SOURCES = "HAM10000 (600x450 originals, models/ham10000_split.csv) + ISIC 2017 (256x256, challenge split)"


def _lesion_report(split: str = "models/ham10000_split.csv:test", present=range(7)) -> EvalReport:
    # df is always missed (a weak class); with `present` only some classes have test images (ISIC 2017: nv/bkl/mel).
    rng = np.random.default_rng(0)
    counts = [10, 10, 10, 5, 10, 40, 4]
    y = np.concatenate([[k] * counts[k] for k in present])
    probs = rng.random((y.size, 7)) * 0.2
    called = np.where(y == 3, 2, y)  # df -> bkl
    probs[np.arange(y.size), called] += 1.0
    return compute_report(y, probs / probs.sum(1, keepdims=True), LESION_CODES, task="lesion_type", split=split)


def _malignancy_report(split: str, flip: bool = False) -> EvalReport:
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    pm = np.array([0.1, 0.2, 0.4, 0.4, 0.7, 0.4, 0.8, 0.9])
    if flip:
        y = 1 - y
    return compute_report(y, np.stack([1 - pm, pm], 1), ("benign", "malignant"), task="malignancy",
                          threshold=0.35, split=split)


def _evaluation(task: str) -> Evaluation:
    if task == "lesion_type":
        reports = {"ham10000": _lesion_report(),
                   "isic2017": _lesion_report("isic2017/labels.csv:test", present=(2, 4, 5))}
        labels = LESION_CODES
    else:
        reports = {"ham10000": _malignancy_report("models/ham10000_split.csv:test"),
                   "isic2017": _malignancy_report("isic2017/labels.csv:test", flip=True)}
        labels = ("benign", "malignant")
    return Evaluation(task, labels, reports, targets=TARGETS[task], extra={"runtime": "ONNX Runtime 9.9 (CPU)"})


def _config(task: str, **overrides) -> PackageConfig:
    labels = ("benign", "malignant") if task == "malignancy" else LESION_CODES
    malignant = ("malignant",) if task == "malignancy" else ("akiec", "bcc", "mel")
    return PackageConfig.from_dict(tiny_config(task, labels, malignant, size=(224, 224), **overrides))


def test_write_evaluation_writes_every_source_and_round_trips(tmp_path):
    evaluation = _evaluation("lesion_type")
    paths = write_evaluation(evaluation, tmp_path / "eval", title="Lesion type")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted(paths) == sorted(
        ["metrics.json", "EVAL.md", "ham10000_confusion_matrix.png", "ham10000_roc.png",
         "isic2017_confusion_matrix.png", "isic2017_roc.png"])
    for name in paths:
        if name.endswith(".png"):
            with Image.open(paths[name]) as image:
                assert image.format == "PNG" and min(image.size) > 200
    assert read_evaluation(tmp_path / "eval") == evaluation
    assert read_evaluation(tmp_path / "nothing") is None
    text = paths["EVAL.md"].read_text()
    assert text.startswith("# Lesion type")
    assert "| Metric | HAM10000 test | ISIC 2017 test |" in text
    ham, isic = evaluation.reports["ham10000"], evaluation.reports["isic2017"]
    assert ham.balanced_accuracy == pytest.approx(6 / 7) and isic.balanced_accuracy == 1.0
    assert "| Balanced accuracy (mean per-class recall) | 0.857 | 1.000 (over bkl/mel/nv) |" in text
    assert "| Weak classes (F1 or recall < 0.50) | df | none |" in text
    assert "| Targets missed | none | none |" in text
    assert "## ISIC 2017 test" in text and "No test images at all for akiec, bcc, df, vasc" in text
    assert "| df | 0 | 0 | 5 | 0 | 0 | 0 | 0 |" in text  # the weak class's confusion-matrix row (HAM10000)
    assert "![ISIC 2017 test: ROC](./isic2017_roc.png)" in text


def test_missed_targets_are_named_with_value_and_target():
    headlines = {
        "ham10000": {"split": "s.csv:test", "roc_auc": 0.90, "sensitivity": 0.93,
                     "targets": {"roc_auc": 0.95, "sensitivity": 0.90}},
        "isic2017": {"split": "isic2017/labels.csv:test", "roc_auc": None, "targets": {"roc_auc": 0.85}},
        "other": {"split": "x:test", "roc_auc": 0.5},
    }
    assert missed_targets(headlines) == [
        "HAM10000 test: ROC AUC 0.900, target >= 0.95",
        "ISIC 2017 test: ROC AUC not measured, target >= 0.85",
    ]


def test_single_report_files_for_the_lesion_check(tmp_path):
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    report = compute_report(y, np.stack([p, 1 - p], 1), ("lesion", "not_lesion"), task="lesion_check",
                            positive_label="lesion", threshold=0.5, split="held-out:test")
    paths = write_report(report, tmp_path)
    assert sorted(paths) == sorted(REPORT_FILES)
    text = (tmp_path / "EVAL.md").read_text()
    assert "| Decision threshold: P(lesion) >= | 0.5000 |" in text
    assert "| Sensitivity at the threshold | 0.667 |" in text and "| Specificity at the threshold | 0.667 |" in text
    assert read_report(tmp_path) == report
    (tmp_path / "metrics.json").write_text('{"task": "x"}')
    with pytest.raises(ValueError, match="metrics.json is not an evaluation report"):
        read_report(tmp_path)
    with pytest.raises(ValueError, match="metrics.json is not a per-source evaluation"):
        read_evaluation(tmp_path)
    assert "an unnamed set" in render_markdown(EvalReport.from_dict({**report.to_dict(), "split": None}))


def test_model_card_metadata_has_one_model_index_entry_per_source():
    evaluation = _evaluation("malignancy")
    config = _config("malignancy", decision_threshold=0.35, metrics=evaluation.headline(),
                     provenance={"data": TWO_SOURCES})
    card = ModelCard(render_model_card(config, evaluation, repo_id="org/skin-demo-malignancy"))
    data = card.data
    assert data.license == "cc-by-nc-4.0" and data.library_name == "onnx"
    assert data.pipeline_tag == "image-classification" and data.model_name == "skin-demo-malignancy"
    assert {"image-classification", "dermatology", "onnx", "skin-lesion", "malignancy"} <= set(data.tags)
    assert data.datasets == ["HAM10000", "ISIC-2017"]
    values = {}
    for r in data.eval_results:
        assert r.task_type == "image-classification" and r.dataset_split == "test"
        values.setdefault(r.dataset_type, {})[r.metric_type] = r.metric_value
    for source, dataset in (("ham10000", "HAM10000"), ("isic2017", "ISIC-2017")):
        report = evaluation.reports[source]
        assert values[dataset]["roc_auc"] == pytest.approx(report.binary.roc_auc, abs=1e-4)
        assert values[dataset]["recall"] == pytest.approx(report.binary.sensitivity, abs=1e-4)
        assert values[dataset]["specificity"] == pytest.approx(report.binary.specificity, abs=1e-4)
        assert values[dataset]["balanced_accuracy"] == pytest.approx(report.balanced_accuracy, abs=1e-4)
    # Rendered from config.metrics alone (no eval/ at hand) the metadata says the same.
    again = ModelCard(render_model_card(config, None, repo_id="org/skin-demo-malignancy"))
    assert again.data.eval_results == data.eval_results


def test_model_card_body_says_what_matters():
    evaluation = _evaluation("malignancy")
    provenance = {"data": TWO_SOURCES, "split": "models/ham10000_split.csv", "hardware": ["1 x cuda (H200, 8 threads)"],
                  "train_minutes": 37.5, "epochs": 16, "choice": MALIGNANCY_CHOICE,
                  "args": {"image_size": 224, "lr": 0.0008, "epochs": 16}}
    config = _config("malignancy", decision_threshold=0.35, metrics=evaluation.headline(), provenance=provenance)
    body = render_model_card(config, evaluation).split("\n---\n", 1)[1]
    assert NOT_A_DIAGNOSIS in body
    for heading in ("## Intended use", "## Training data", "## Preprocessing", "## Evaluation",
                    "## How the output is computed", "## Limitations and biases", "## How to use",
                    "## Training details", "## Citation"):
        assert heading in body
    # Data per source straight from the provenance; nothing about a 200x150 copy unless the package says so.
    assert "- HAM10000 (600x450 originals, models/ham10000_split.csv)\n- ISIC 2017 (256x256, challenge split)" in body
    assert "200x150" not in body
    assert "Resize so the shorter side is 224 px (bilinear interpolation)" in body
    # The side-by-side table, the threshold and what it gives per source.
    assert "| Metric | HAM10000 test | ISIC 2017 test |" in body
    assert "| Decision threshold: P(malignant) >= | 0.3500 | 0.3500 |" in body
    ham, isic = evaluation.reports["ham10000"].binary, evaluation.reports["isic2017"].binary
    assert f"- ISIC 2017 test: at the threshold the model misses about {1 - isic.sensitivity:.0%} of malignant " \
           f"lesions (sensitivity {isic.sensitivity:.3f}) and flags about {1 - isic.specificity:.0%} of benign ones " \
           f"(specificity {isic.specificity:.3f})." in body
    assert f"(specificity {ham.specificity:.3f})" in body
    # Weak classes and missed targets in plain words.
    assert "- **HAM10000 test, weak classes** (F1 or recall below 0.50): benign." in body
    assert "**Targets missed:**\n  - HAM10000 test: ROC AUC 0.867, target >= 0.95" in body
    assert "  - ISIC 2017 test: ROC AUC 0.133, target >= 0.85" in body
    # Which head gives malignancy and why.
    assert "**Malignancy comes from the lesion_type head: P(akiec) + P(bcc) + P(mel)**, chosen by the mean over " \
           "sources of the validation ROC AUC" in body
    assert "binary malignancy head: mean 0.765 (HAM10000 0.910, ISIC 2017 0.620)" in body
    assert "Weights: epoch 14, EMA" in body and "Flip test-time augmentation: not used; validation 0.870" in body
    # Training provenance.
    assert "| Hardware | 1 x cuda (H200, 8 threads) |" in body and "| Training time | 37.5 min |" in body
    assert "| Epochs | 16 |" in body and "image_size=224" in body
    assert "10.1038/sdata.2018.161" in body and "10.1109/ISBI.2018.8363547" in body
    assert "no external validation" not in body  # two test sources


def test_model_card_at_fit_time_and_for_one_source():
    # loop.py writes the card before any evaluation: metrics {} and no report.
    bare = render_model_card(_config("lesion_type", metrics={}, provenance={"data": "HAM10000 (200x150 copy)"}), None)
    assert "model-index" not in bare and ModelCard(bare).data.eval_results is None
    assert "No evaluation was recorded with this package yet" in bare
    assert "- HAM10000 (200x150 copy)" in bare  # the provenance's own words
    assert "ISIC" not in bare  # neither trained nor tested on it
    assert ModelCard(bare).data.datasets == ["HAM10000"]
    one = Evaluation("lesion_type", LESION_CODES, {"ham10000": _lesion_report()}, targets={"ham10000": TARGETS[
        "lesion_type"]["ham10000"]})
    text = render_model_card(_config("lesion_type", metrics=one.headline()), one)
    assert "| Metric | HAM10000 test |\n" in text
    assert "**Dermatofibroma (a harmless firm bump)** (weak)" in text and "no external validation" in text


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


def read_report(folder: Path) -> EvalReport | None:
    """The single report `write_report` wrote in `folder`/metrics.json, or None when there is none; raises
    ValueError for a broken file."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return EvalReport.from_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not an evaluation report written by skin_demo.train: {exc}") from exc


THREE_DOMAINS = ("HAM10000 (200x150 copy, models/ham10000_split.csv) + ISIC 2017 (256x256, challenge split) + "
                 "clinical photos (DermNet NZ + SD-198, grouped split)")


def test_a_card_trained_on_three_domains_says_so_and_names_the_score_each_source_was_called_on():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.3, 0.6, 0.5, 0.7, 0.9])
    reports = {
        source: compute_report(y, np.stack([1 - p, p], 1), ("benign", "malignant"), task="malignancy",
                               threshold=threshold, split=split, score_from=score)
        for source, split, threshold, score in (
            ("ham10000", "models/ham10000_split.csv:test", 0.04, "lesion_type_sum"),
            ("clinical", "clinical/labels.csv:test", 0.39, "binary_head"))
    }
    evaluation = Evaluation("malignancy", ("benign", "malignant"), reports)
    assert evaluation.headline()["ham10000"]["score_from"] == "lesion_type_sum"
    assert EvalReport.from_dict(reports["clinical"].to_dict()) == reports["clinical"]  # metrics.json keeps it
    config = _config("malignancy", decision_threshold=0.04, metrics=evaluation.headline(),
                     decision_thresholds={"dermoscopy": 0.04, "clinical": 0.39},
                     decision_scores={"dermoscopy": "lesion_type_sum", "clinical": "binary_head"},
                     provenance={"data": THREE_DOMAINS})
    card = render_model_card(config, evaluation)
    assert ModelCard(card).data.datasets == ["DermNet-NZ", "HAM10000", "ISIC-2017", "SD-198"]
    body = card.split("\n---\n", 1)[1]
    assert "benign vs malignant skin lesions from dermoscopy and ordinary photos (ONNX)" in body
    # A source in parentheses is not split from its " + ".
    assert "- ISIC 2017 (256x256, challenge split)\n- clinical photos (DermNet NZ + SD-198, grouped split)\n" in body
    assert "| Score the call is made on | the lesion-type package's P(akiec) + P(bcc) + P(mel) | this package's " \
           "P(malignant) |" in body
    assert "| Decision threshold: score >= | 0.0400 | 0.3900 |" in body and "P(malignant) >= |" not in body
    assert "Dermoscopy first, atlas photos second" in body and "no test set of phone photos exists" in body
    assert "far weaker" not in body


def test_the_cards_usage_example_makes_the_call_per_domain_as_the_package_says(tmp_path):
    package = make_package(tmp_path / "pkg", "malignancy", size=(32, 32), config_overrides={
        "decision_threshold": 0.04, "decision_thresholds": {"dermoscopy": 0.04, "clinical": 0.45},
        "decision_scores": {"dermoscopy": "lesion_type_sum", "clinical": "binary_head"}})
    pack = ModelPack.load(package)
    image_path = tmp_path / "lesion.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, size=(40, 40, 3), dtype=np.uint8)).save(image_path)
    code = re.search(r"```python\n(.*?)```", render_model_card(pack.config, None), re.S).group(1)
    code = code.replace('Path("path/to/package")', f"Path({str(package)!r})").replace('"lesion.jpg"',
                                                                                      repr(str(image_path)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "card_example", "exec"), {})
    p_malignant = pack.probabilities(preprocess(load_image(image_path), pack.config.preprocess)[None])[0][1]
    assert f"flagged as malignant if the image is clinical: {p_malignant >= 0.45}" in out.getvalue()
    assert "if the image is dermoscopy: flagged when the lesion-type package's sum >= 0.04" in out.getvalue()
