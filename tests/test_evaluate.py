"""`python -m skin_demo.train evaluate`: an exported package measured through ModelPack on each source's test split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard
from PIL import Image

from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, PackageError, load_package, softmax
from skin_demo.train import evaluate, evaluate_cli
from skin_demo.train.data import Sample
from skin_demo.train.combine import combine_packages
from skin_demo.train.evaluate import EvaluationError, HeldOutSet, evaluate_package, held_out_sets
from skin_demo.train.perturb import PERTURBATIONS, Perturbation
from skin_demo.train.report import read_evaluation
from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import make_fake_isic2017
from tests.tiny_packages import make_models_dir, make_package, tiny_logits


@pytest.fixture
def fake_data(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    split = write_fake_split(ham, tmp_path / "split.csv")
    isic = make_fake_isic2017(tmp_path / "isic2017", per_class_and_split=3, size=48)
    return ham, split, isic


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    evaluate_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["evaluate", *map(str, argv)])
    return args.func(args)


def _probs(samples, pack):
    """What the tiny package must give, computed in numpy from the same decoded images."""
    batch = np.stack([preprocess(load_image(s.path), pack.config.preprocess) for s in samples])
    return softmax(tiny_logits(batch, len(pack.config.labels)) / np.float32(pack.config.temperature))


def test_each_source_is_measured_on_its_own_test_split_through_the_serving_path(tmp_path, fake_data):
    ham, split, isic = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type", config_overrides={"temperature": 2.0})
    sets = held_out_sets(ham, split, isic)
    assert [s.source for s in sets] == ["ham10000", "isic2017"]
    assert sets[0].split.endswith("split.csv:test") and sets[1].split == "isic2017/labels.csv:test"
    assert len(sets[0].samples) == 14 and len(sets[1].samples) == 9  # the challenge's test split, whole
    evaluation = evaluate_package(package, sets, batch_size=4)
    assert list(evaluation.reports) == ["ham10000", "isic2017"]
    pack = ModelPack.load(package)
    for held_out in sets:
        report = evaluation.reports[held_out.source]
        truth = np.array([pack.config.labels.index(s.dx) for s in held_out.samples])
        predicted = _probs(held_out.samples, pack).argmax(1)  # over all seven classes, also on ISIC 2017
        cm = np.zeros((7, 7), int)
        np.add.at(cm, (truth, predicted), 1)
        assert np.array_equal(np.array(report.confusion_matrix), cm)
        present = sorted(set(truth))
        assert report.balanced_accuracy == pytest.approx(np.mean([cm[i, i] / cm[i].sum() for i in present]))
        assert report.accuracy == pytest.approx(np.mean(truth == predicted))
        assert report.split == held_out.split and report.extra["skipped_unlabelled"] == 0
    assert evaluation.headline()["isic2017"]["balanced_accuracy_over"] == ["bkl", "mel", "nv"]
    assert "balanced_accuracy_over" not in evaluation.headline()["ham10000"]
    # Each evaluated source carries its targets; the clinical photos were not evaluated here.
    assert evaluation.targets == {s: t for s, t in evaluate.TARGETS["lesion_type"].items() if s != "clinical"}
    assert "ONNX Runtime" in evaluation.extra["runtime"]


def test_malignancy_is_called_by_postprocess_at_the_package_threshold(tmp_path, fake_data):
    ham, split, isic = fake_data
    sets = held_out_sets(ham, split, isic)
    # Labels in the "wrong" order: P(malignant) must come from malignant_labels, not from a column position.
    package = make_package(tmp_path / "pkg", "malignancy", labels=("malignant", "benign"),
                           config_overrides={"decision_threshold": 0.3})
    evaluation = evaluate_package(package, sets)
    pack = ModelPack.load(package)
    for held_out in sets:
        b = evaluation.reports[held_out.source].binary
        p = _probs(held_out.samples, pack)[:, 0]
        truth = np.array([s.malignant for s in held_out.samples])
        assert b.threshold == 0.3 and b.positive_label == "malignant"
        assert b.sensitivity == pytest.approx((p[truth] >= 0.3).mean())
        assert b.specificity == pytest.approx((p[~truth] < 0.3).mean())
    # Without a recorded threshold the app calls at 0.5, and so does evaluate.
    plain = make_package(tmp_path / "plain", "malignancy")
    b = evaluate_package(plain, sets[:1]).reports["ham10000"].binary
    p = _probs(sets[0].samples, ModelPack.load(plain))[:, 1]
    truth = np.array([s.malignant for s in sets[0].samples])
    assert b.threshold == 0.5 and b.sensitivity == pytest.approx((p[truth] >= 0.5).mean())


def test_unlabelled_samples_are_skipped_and_bad_data_are_refused(tmp_path, fake_data):
    ham, split, isic = fake_data
    sets = held_out_sets(ham, split)
    samples = sets[0].samples
    extra = Sample("x", samples[0].path, None, None, True, "isic_mvb")  # benign/malignant only: no lesion type
    lesion = make_package(tmp_path / "lesion", "lesion_type")
    report = evaluate_package(lesion, [HeldOutSet("ham10000", "s", (*samples, extra))]).reports["ham10000"]
    assert report.n == len(samples) and report.extra["skipped_unlabelled"] == 1
    narrow = make_package(tmp_path / "narrow", "lesion_type", labels=("mel", "nv"), malignant_labels=("mel",))
    with pytest.raises(EvaluationError, match="label 'akiec', which the lesion_type package does not have"):
        evaluate_package(narrow, sets)
    with pytest.raises(EvaluationError, match="ham10000 has no 'holdout' images"):
        held_out_sets(ham, split, subset="holdout")
    with pytest.raises(PackageError):
        evaluate_package(tmp_path / "missing", sets)


def test_cli_records_both_sources_in_the_package(tmp_path, fake_data, capsys):
    ham, split, isic = fake_data
    package = make_package(tmp_path / "pkg", "malignancy", config_overrides={"decision_threshold": 0.45})
    (package / "eval").mkdir()
    (package / "eval" / "per_class_f1.png").write_bytes(b"an older evaluation's plot")
    assert _cli(package, "--ham", ham, "--split", split, "--isic2017", isic, "--batch-size", "5") == 0
    out = capsys.readouterr().out
    assert "| Metric | HAM10000 test | ISIC 2017 test |" in out  # the side-by-side table, for the closing note
    assert "| Sensitivity at the threshold |" in out and "| Images | 14 | 9 |" in out
    evaluation = read_evaluation(package / "eval")
    assert sorted(p.name for p in (package / "eval").iterdir()) == sorted(
        ["metrics.json", "EVAL.md", "ham10000_confusion_matrix.png", "ham10000_roc.png",
         "isic2017_confusion_matrix.png", "isic2017_roc.png"]
    )
    # config.json and the embedded copy (ModelPack.load checks they are equal) carry each source's headline.
    config = ModelPack.load(package).config
    assert set(config.metrics) == {"ham10000", "isic2017", "per_domain"}
    # Both sources are dermoscopy: one domain, its figures pooled from the two sources' calls.
    dermoscopy = config.metrics["per_domain"]["dermoscopy"]
    reports = evaluation.reports.values()
    malignant = sum(r.confusion_matrix[1][0] + r.confusion_matrix[1][1] for r in reports)
    caught = sum(r.confusion_matrix[1][1] for r in reports)
    assert (dermoscopy["n_malignant"], dermoscopy["threshold"]) == (malignant, 0.45)
    assert dermoscopy["sensitivity"] == pytest.approx(caught / malignant, abs=1e-4)
    for source, report in evaluation.reports.items():
        recorded = config.metrics[source]
        assert recorded["split"] == report.split and recorded["n"] == report.n
        assert recorded["sensitivity"] == pytest.approx(report.binary.sensitivity, abs=1e-4)
        assert recorded["specificity"] == pytest.approx(report.binary.specificity, abs=1e-4)
        assert recorded["threshold"] == 0.45 and recorded["targets"] == evaluate.TARGETS["malignancy"][source]
    missed = [f"{name} test: ROC AUC" for name, source in (("HAM10000", "ham10000"), ("ISIC 2017", "isic2017"))
              if config.metrics[source]["roc_auc"] < evaluate.TARGETS["malignancy"][source]["roc_auc"]]
    assert missed, "the tiny package cannot reach the real targets"
    for line in missed:
        assert line in out
    # ... and the card was regenerated from the same numbers, one model-index entry per source.
    card = ModelCard((package / "README.md").read_text())
    by_dataset = {}
    for r in card.data.eval_results:
        by_dataset.setdefault(r.dataset_type, {})[r.metric_type] = r.metric_value
    assert by_dataset["HAM10000"]["recall"] == config.metrics["ham10000"]["sensitivity"]
    assert by_dataset["ISIC-2017"]["specificity"] == config.metrics["isic2017"]["specificity"]
    assert "does not diagnose" in card.text and "| Metric | HAM10000 test | ISIC 2017 test |" in card.text
    assert "### ISIC 2017 test" in card.text and "**Targets missed:**" in card.text


def test_a_package_with_a_head_per_task_is_evaluated_head_by_head_as_its_parts_were(tmp_path, fake_data, capsys,
                                                                                       monkeypatch):
    ham, split, isic = fake_data
    data = ("--ham", ham, "--split", split, "--isic2017", isic)
    parts = make_models_dir(tmp_path / "parts", malignancy_threshold=0.45)
    assert _cli(parts / "lesion_type", *data) == 0
    assert _cli(parts / "malignancy", "--lesion-type", parts / "lesion_type", *data) == 0
    both = combine_packages([parts / "malignancy", parts / "lesion_type"], tmp_path / "both")
    assert _cli(both, "--lesion-type", parts / "lesion_type", *data) == 1
    assert "drop --lesion-type" in capsys.readouterr().err
    decoded = []
    monkeypatch.setattr(evaluate, "load_image", lambda path, **kw: decoded.append(path) or load_image(path, **kw))
    assert _cli(both, *data, "--out", tmp_path / "report") == 0
    # One pass over the images for both heads: each test image read once.
    assert sorted(decoded) == sorted(s.path for held_out in held_out_sets(ham, split, isic) for s in held_out.samples)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["lesion_type", "malignancy"]
    assert _cli(both, *data) == 0
    out = capsys.readouterr().out
    assert "malignancy package" in out and "lesion_type package" in out
    heads = load_package(both)
    for task in ("malignancy", "lesion_type"):
        # The same figures as each part measured alone (the malignancy head with the package's own lesion-type head).
        recorded, alone = read_evaluation(both / "eval" / task), read_evaluation(parts / task / "eval")
        for source, report in alone.reports.items():
            assert recorded.reports[source].confusion_matrix == report.confusion_matrix
            assert recorded.reports[source].binary == report.binary
        assert heads[task].config.metrics == ModelPack.load(parts / task).config.metrics
    card = (both / "README.md").read_text()
    assert "## The malignancy head" in card and "| Metric | HAM10000 test | ISIC 2017 test |" in card


def test_cli_limit_needs_out_and_leaves_the_package_alone(tmp_path, fake_data, capsys):
    ham, split, isic = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type")
    before = {p.name: p.read_bytes() for p in package.iterdir()}
    args = ("--ham", ham, "--split", split, "--isic2017", isic, "--limit", "5")
    assert _cli(package, *args) == 2
    assert "pass --out" in capsys.readouterr().err
    assert _cli(package, *args, "--out", tmp_path / "quick") == 0
    quick = read_evaluation(tmp_path / "quick")
    assert [r.n for r in quick.reports.values()] == [5, 5]
    assert all("seeded random 5 images" in r.split for r in quick.reports.values())
    assert {p.name: p.read_bytes() for p in package.iterdir()} == before
    # Same seed, same images.
    assert _cli(package, *args, "--out", tmp_path / "again") == 0
    a = json.loads((tmp_path / "quick" / "metrics.json").read_text())["reports"]
    b = json.loads((tmp_path / "again" / "metrics.json").read_text())["reports"]
    assert [r["confusion_matrix"] for r in a.values()] == [r["confusion_matrix"] for r in b.values()]


def test_cli_perturb_measures_the_perturbed_images_and_leaves_the_package_alone(tmp_path, fake_data, capsys):
    ham, split, isic = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type")
    before = {p.name: p.read_bytes() for p in package.iterdir()}
    args = ("--ham", ham, "--split", split, "--isic2017", isic, "--perturb", "phone_look", "--seed", "3")
    assert _cli(package, *args) == 2
    assert "pass --out" in capsys.readouterr().err
    assert _cli(package, *args, "--out", tmp_path / "phone") == 0
    assert {p.name: p.read_bytes() for p in package.iterdir()} == before
    reports = read_evaluation(tmp_path / "phone").reports
    assert reports["isic2017"].split == "isic2017/labels.csv:test through the phone_look perturbation (seed 3)"
    # The figures are those of the perturbed images, each drawn as Perturbation draws it for its image id.
    pack = ModelPack.load(package)
    perturb = Perturbation("phone_look", 3)
    samples = held_out_sets(ham, split, isic)[1].samples
    batch = np.stack([preprocess(perturb(load_image(s.path), s.image_id, pack.config.preprocess.resize_shorter_side),
                                 pack.config.preprocess) for s in samples])
    predicted = softmax(tiny_logits(batch, 7)).argmax(1)
    truth = np.array([pack.config.labels.index(s.dx) for s in samples])
    cm = np.zeros((7, 7), int)
    np.add.at(cm, (truth, predicted), 1)
    assert np.array_equal(np.array(reports["isic2017"].confusion_matrix), cm)
    clean = _probs(samples, pack)
    assert not np.allclose(clean, softmax(tiny_logits(batch, 7)))


@pytest.mark.parametrize("name", PERTURBATIONS)
def test_a_perturbation_is_drawn_per_seed_and_image(name):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    perturb = Perturbation(name, seed=1)
    first = np.asarray(perturb(image, "ISIC_1", 224))
    assert np.array_equal(first, np.asarray(perturb(image, "ISIC_1", 224)))
    assert not np.array_equal(first, np.asarray(Perturbation(name, seed=2)(image, "ISIC_1", 224)))
    assert not np.array_equal(first, np.asarray(perturb(image, "ISIC_2", 224)))
    if name == "phone_look":  # at the scale training sees the image at
        assert first.shape == (224, 299, 3)
    with pytest.raises(ValueError, match="unknown perturbation"):
        Perturbation("fog")


def test_cli_reports_broken_input_plainly(tmp_path, fake_data, capsys):
    ham, split, isic = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type", truncate=100)
    assert _cli(package, "--ham", ham, "--split", split) == 1
    assert "error:" in capsys.readouterr().err
    good = make_package(tmp_path / "good", "lesion_type")
    assert _cli(good, "--ham", ham, "--split", split, "--isic2017", tmp_path / "nowhere") == 1
    assert "point --isic2017 at the ISIC 2017 folder" in capsys.readouterr().err


@pytest.mark.data
def test_evaluate_on_the_real_test_splits(tmp_path, ham10000_dir):
    isic = SHARED_DATA / "isic2017"
    if not (isic / "labels.csv").is_file():
        pytest.skip(f"real ISIC 2017 data not found at {isic}")
    package = make_package(tmp_path / "pkg", "lesion_type", size=(64, 64))
    split = REPO_ROOT / "models" / "ham10000_split.csv"
    assert _cli(package, "--ham", ham10000_dir, "--split", split, "--isic2017", isic, "--limit", "8",
                "--out", tmp_path / "eval") == 0
    evaluation = read_evaluation(tmp_path / "eval")
    assert evaluation.reports["ham10000"].split.startswith("models/ham10000_split.csv:test")
    assert all(r.n == 8 for r in evaluation.reports.values())
    isic_support = {c.label: c.support for c in evaluation.reports["isic2017"].per_class if c.support}
    assert set(isic_support) <= {"nv", "bkl", "mel"}


def test_wired_into_the_training_cli(tmp_path, fake_data):
    from skin_demo.train.cli import main

    ham, split, _ = fake_data
    package = make_package(tmp_path / "pkg", "lesion_type")
    out = Path(tmp_path / "quick")
    assert main(["evaluate", str(package), "--ham", str(ham), "--split", str(split), "--limit", "3",
                 "--out", str(out)]) == 0
    assert list(read_evaluation(out).reports) == ["ham10000"] and read_evaluation(out).reports["ham10000"].n == 3
