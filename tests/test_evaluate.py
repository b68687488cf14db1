"""`python -m skin_demo.train evaluate`: an exported package measured through ModelPack on a split."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
from huggingface_hub import ModelCard

from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, PackageError, softmax
from skin_demo.train import evaluate
from skin_demo.train.data import Sample, read_ham10000, read_split
from skin_demo.train.evaluate import EvaluationError, evaluate_package, select_samples
from skin_demo.train.metrics import compute_report
from skin_demo.train.report import read_report
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.tiny_packages import make_package, tiny_logits


@pytest.fixture
def fake_data(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    split = write_fake_split(ham, tmp_path / "split.csv")
    return ham, split


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *map(str, argv)])
    return args.func(args)


def _expected_probs(samples, pack):
    batch = np.stack([preprocess(load_image(s.path), pack.config.preprocess) for s in samples])
    return softmax(tiny_logits(batch, len(pack.config.labels)) / np.float32(pack.config.temperature))


def test_evaluate_package_uses_the_serving_path(tmp_path, fake_data):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type", config_overrides={"temperature": 2.0})
    samples = select_samples(read_ham10000(ham), read_split(split), "test")
    assert len(samples) == 14 and all(read_split(split)[s.image_id] == "test" for s in samples)
    report = evaluate_package(package, samples, split="fake:test", batch_size=4)
    pack = ModelPack.load(package)
    y = np.array([pack.config.labels.index(s.dx) for s in samples])
    expected = compute_report(y, _expected_probs(samples, pack), pack.config.labels, task="lesion_type",
                              split="fake:test")
    assert report.confusion_matrix == expected.confusion_matrix
    assert report.balanced_accuracy == pytest.approx(expected.balanced_accuracy)
    assert report.macro_roc_auc == pytest.approx(expected.macro_roc_auc, abs=1e-6)
    assert report.n == 14 and report.split == "fake:test"
    assert report.extra["skipped_unlabelled"] == 0 and "ONNX Runtime" in report.extra["runtime"]


def test_malignancy_uses_the_package_threshold_and_skips_unlabelled(tmp_path, fake_data):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "malignancy", config_overrides={"decision_threshold": 0.3})
    samples = select_samples(read_ham10000(ham), read_split(split), "test")
    report = evaluate_package(package, samples)
    assert report.binary.threshold == 0.3 and report.binary.positive_label == "malignant"
    pack = ModelPack.load(package)
    p = _expected_probs(samples, pack)[:, 1]
    truth = np.array([s.malignant for s in samples])
    assert report.binary.sensitivity == pytest.approx((p[truth] >= 0.3).mean())
    assert report.binary.specificity == pytest.approx((p[~truth] < 0.3).mean())
    # A benign/malignant-only image has no lesion type: skipped and counted, not a crash.
    extra = Sample("x", samples[0].path, None, None, True, "isic_mvb")
    lesion = make_package(tmp_path / "lesion", "lesion_type")
    report = evaluate_package(lesion, [*samples, extra])
    assert report.n == len(samples) and report.extra["skipped_unlabelled"] == 1


def test_labels_the_package_lacks_are_an_error(tmp_path, fake_data):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type", labels=("mel", "nv"), malignant_labels=("mel",))
    samples = select_samples(read_ham10000(ham), read_split(split), "test")
    with pytest.raises(EvaluationError, match="label 'akiec', which the lesion_type package does not have"):
        evaluate_package(package, samples)
    with pytest.raises(EvaluationError, match="no 'holdout' images"):
        select_samples(samples, read_split(split), "holdout")
    with pytest.raises(PackageError):
        evaluate_package(tmp_path / "missing", samples)


def test_cli_writes_the_report_into_the_package_and_updates_it(tmp_path, fake_data, capsys):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "malignancy", config_overrides={"decision_threshold": 0.45})
    assert _cli(package, "--data", ham, "--split", split, "--batch-size", "5") == 0
    out = capsys.readouterr().out
    assert "malignancy: n=14" in out and "sensitivity=" in out
    report = read_report(package / "eval")
    assert report is not None and report.split.endswith("split.csv:test")
    assert sorted(p.name for p in (package / "eval").iterdir()) == sorted(
        ["metrics.json", "EVAL.md", "confusion_matrix.png", "per_class_f1.png", "roc.png"]
    )
    # The config (file and embedded copy: ModelPack.load checks they are equal) carries the headline numbers.
    config = ModelPack.load(package).config
    metrics = config.metrics
    assert metrics["split"] == report.split
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity"):
        assert key in metrics
    assert metrics["sensitivity"] == pytest.approx(report.binary.sensitivity, abs=1e-4)
    assert config.decision_threshold == 0.45 and metrics["threshold"] == 0.45
    # ... and the card was regenerated from the same report.
    card = ModelCard((package / "README.md").read_text())
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values["recall"] == metrics["sensitivity"] and values["roc_auc"] == metrics["roc_auc"]
    assert "does not diagnose" in card.text


def test_cli_limit_needs_out_and_leaves_the_package_alone(tmp_path, fake_data, capsys):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type")
    before = {p.name: p.read_bytes() for p in package.iterdir()}
    assert _cli(package, "--data", ham, "--split", split, "--limit", "5") == 2
    assert "pass --out" in capsys.readouterr().err
    assert _cli(package, "--data", ham, "--split", split, "--limit", "5", "--out", tmp_path / "quick") == 0
    assert read_report(tmp_path / "quick").n == 5
    assert "seeded random 5 images" in read_report(tmp_path / "quick").split
    assert {p.name: p.read_bytes() for p in package.iterdir()} == before
    # Same seed, same images.
    assert _cli(package, "--data", ham, "--split", split, "--limit", "5", "--out", tmp_path / "again") == 0
    a = json.loads((tmp_path / "quick" / "metrics.json").read_text())
    b = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert a["confusion_matrix"] == b["confusion_matrix"]


def test_cli_reports_a_broken_package_plainly(tmp_path, fake_data, capsys):
    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type", truncate=100)
    assert _cli(package, "--data", ham, "--split", split) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_on_real_ham10000_images(tmp_path, ham10000_dir):
    # The real folder, with a split that puts 20 of its first 60 images in "test"; --limit keeps 12 of those.
    with (ham10000_dir / "HAM10000_metadata.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:60]
    split = tmp_path / "split.csv"
    split.write_text(
        "image_id,lesion_id,dx,split\n"
        + "".join(f"{r['image_id']},{r['lesion_id']},{r['dx']},{('train', 'val', 'test')[i % 3]}\n"
                  for i, r in enumerate(rows))
    )
    package = make_package(tmp_path / "pkg", "lesion_type", size=(64, 64))
    assert _cli(package, "--data", ham10000_dir, "--split", split, "--limit", "12", "--out", tmp_path / "eval") == 0
    report = read_report(tmp_path / "eval")
    assert report.n == 12 and report.task == "lesion_type"
    assert sum(c.support for c in report.per_class) == 12


def test_wired_into_the_training_cli(tmp_path, fake_data):
    from skin_demo.train.cli import main

    ham, split = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type")
    assert main(["evaluate", str(package), "--data", str(ham), "--split", str(split), "--limit", "3",
                 "--out", str(tmp_path / "quick")]) == 0
    assert read_report(tmp_path / "quick").n == 3
