"""`python -m skin_demo.train lesion-check` end to end on tiny generated data sets (timm's test model, random
weights): the package it writes loads in the app's loader, carries its config inside the ONNX file, and its
recorded numbers are the ones the serving path gives."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from skin_demo.config import ONNX_METADATA_KEY, PackageConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import DOMAIN_LABELS, image_domain, lesion_check
from skin_demo.train.cli import main
from skin_demo.train.lesion_check import fit_mlp, nuisance, probabilities, torch_head
from skin_demo.train.package_files import write_package
from skin_demo.train.weight_storage import with_int8_weights
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_not_lesion import CATEGORIES, make_fake_not_lesion


def _noise_image(path: Path, rng: np.random.Generator, base: tuple[int, int, int], size=(64, 48)) -> None:
    pixels = np.clip(np.array(base) + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path, quality=90)


def _fake_sources(root: Path) -> dict[str, Path]:
    """HAM10000, ISIC 2017, clinical, not_lesion and malignant-vs-benign folders in their real layouts, a few images
    each."""
    rng = np.random.default_rng(0)
    ham = make_fake_ham10000(root / "ham", per_class=6)
    isic = root / "isic"
    isic.mkdir()
    with (isic / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "dx", "malignant", "isic2017_split", "group_id", "fanconi_duplicate"])
        for i, split in enumerate(["train"] * 4 + ["val"] * 2 + ["test"] * 2):
            image_id = f"ISIC_{9000000 + i}"
            _noise_image(isic / "images" / f"{image_id}.jpg", rng, (150, 90, 80), size=(64, 64))
            writer.writerow([image_id, "nv", 0, split, image_id, "train/malignant/1.jpg" if i == 0 else ""])
    not_lesion = make_fake_not_lesion(root / "not_lesion")
    mvb = root / "mvb"
    mvb.mkdir()
    with (mvb / "fanconi_to_ham10000_map.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["split", "label", "file", "ham_image_id", "ham_lesion_id", "ham_dx", "hp_corr",
                         "second_best_corr"])
        for i in range(1, 4):
            _noise_image(mvb / "train" / "malignant" / f"{i}.jpg", rng, (160, 100, 90), size=(56, 56))
            writer.writerow(["train", "malignant", f"{i}.jpg", "", "", "", "", ""])
        _noise_image(mvb / "train" / "benign" / "9.jpg", rng, (160, 100, 90), size=(56, 56))
        writer.writerow(["train", "benign", "9.jpg", "ISIC_0000001", "HAM_0000001", "nv", "0.99", "0.5"])
    clinical = root / "clinical"
    clinical.mkdir()
    with (clinical / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "source", "source_label", "ham7", "malignant", "group_id", "split", "width",
                         "height", "source_path"])
        for i, (source, split) in enumerate([("dermnet", "train")] * 3 + [("sd198", "train")] * 2
                                            + [("dermnet", "val"), ("sd198", "val"), ("dermnet", "test"),
                                               ("sd198", "test"), ("sd198", "test")]):
            image_id = f"{'DN' if source == 'dermnet' else 'SD'}_{i:04d}"
            _noise_image(clinical / "images" / f"{image_id}.jpg", rng, (200, 150, 130), size=(96, 72))
            writer.writerow([image_id, source, "Melanoma", "mel", 1, image_id, split, 96, 72, "x.jpg"])
    return {"ham": ham, "isic": isic, "not_lesion": not_lesion, "mvb": mvb, "clinical": clinical}


@pytest.mark.slow
def test_lesion_check_command_writes_a_package_the_app_loads(tmp_path, capsys):
    sources = _fake_sources(tmp_path / "data")
    split = write_fake_split(sources["ham"], tmp_path / "ham_split.csv")
    package, not_lesion_split = tmp_path / "package", tmp_path / "not_lesion_split.csv"
    argv = ["lesion-check", "--ham", str(sources["ham"]), "--ham-split", str(split), "--isic", str(sources["isic"]),
            "--not-lesion", str(sources["not_lesion"]), "--mvb", str(sources["mvb"]), "--clinical", str(sources["clinical"]),
            "--not-lesion-split", str(not_lesion_split), "--arch", "test_efficientnet", "--no-pretrained",
            "--image-size", "32", "--taps", "2", "--positive-copies", "1", "--negative-copies", "1",
            "--clinical-copies", "1",
            "--cost-images", "3", "--flat-images", "10",
            "--threads", "1", "--out", str(tmp_path / "run"), "--package", str(package)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "not a lesion: hands and faces" in printed and "HAM10000 test split" in printed

    pack = ModelPack.load(package)
    config = pack.config
    assert (config.task, config.labels, config.malignant_labels) == ("lesion_check", DOMAIN_LABELS, ())
    assert 0 < config.decision_threshold < 1
    embedded = onnx.load(str(package / "model.onnx")).metadata_props
    embedded_json = {p.key: p.value for p in embedded}[ONNX_METADATA_KEY]
    assert json.loads(embedded_json) == json.loads((package / "config.json").read_text())
    assert PackageConfig.from_json(embedded_json) == config

    # The split CSV names every not_lesion image once, 3 / 1 / 1 per category of 5.
    with not_lesion_split.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 25 and {r["file"] for r in rows} == {f"images/c{c}_{i}.jpg" for c in range(5) for i in range(5)}
    for category in CATEGORIES:
        assert sorted(r["split"] for r in rows if r["category"] == category) == ["fit", "fit", "fit", "test", "val"]

    # The recorded per-category numbers are what the app's own path gives for the test images.
    test_rows = [r for r in rows if r["split"] == "test"]
    assert len(test_rows) == 5
    _assert_recorded_as_served(pack, test_rows, sources["not_lesion"])
    per_source = config.metrics["per_source"]
    assert per_source["ham10000"]["n"] == 14 and per_source["isic2017"]["n"] == 2
    # Clinical photos per atlas and together (where the targets apply); the domain found is what image_domain says.
    assert {k: per_source[k]["n"] for k in ("clinical_dermnet", "clinical_sd198", "clinical_all")} == {
        "clinical_dermnet": 1, "clinical_sd198": 2, "clinical_all": 3}
    clinical_test = [sources["clinical"] / "images" / f"{name}.jpg" for name in ("DN_0007", "SD_0008", "SD_0009")]
    calls = []
    for path in clinical_test:
        p = dict(zip(config.labels, pack.probabilities(preprocess(load_image(path), config.preprocess)[None])[0]))
        calls.append((lesion_check(p, config).passed, image_domain(p, config).label))
    assert per_source["clinical_all"]["passed"] == sum(passed for passed, _ in calls)
    assert per_source["clinical_all"].get("own_domain", 0) == sum(passed and d == "clinical" for passed, d in calls)
    # Each fitted positive source is left out once.
    assert set(config.metrics["leave_one_source_out"]) == {"ham10000", "isic2017", "clinical_dermnet",
                                                           "clinical_sd198"}
    # MVB: the copy of an ISIC 2017 training image is reported apart; the HAM10000 copy is not used at all.
    assert per_source["mvb_non_ham_seen"]["n"] == 1 and per_source["mvb_non_ham"]["n"] == 2
    # The robustness rows: the same test images, each through one nuisance.
    robustness = config.metrics["robustness"]
    assert {k: v["n"] for k, v in robustness.items()} == {
        "ham10000+nuisance": 14, "isic2017+nuisance": 2, "clinical_dermnet+nuisance": 1,
        "clinical_sd198+nuisance": 2, "not_lesion+nuisance": 5, "flat or blank picture (generated)": 5}
    assert {"decode", "preprocess", "model", "model_p10", "threads"} <= set(config.metrics["cost_ms"])
    assert {"trained_at", "hardware", "train_minutes", "code_commit"} <= set(config.provenance)
    card = (package / "README.md").read_text()
    assert "does not diagnose" in card and "| not a lesion: document |" in card
    assert json.loads((package / "eval" / "metrics.json").read_text())["task"] == "lesion_check"
    assert main(["lesion-check", "--show", str(package)]) == 0
    assert "not a lesion: document" in capsys.readouterr().out

    # --measure: the same package with other weights (its int8 copy, say) gets its test figures measured again;
    # the validation and leave-one-source-out figures of the fit stay.
    changed = tmp_path / "changed"
    proto = with_int8_weights(onnx.load(str(package / "model.onnx")), min_elements=16)
    write_package(changed, proto, config, card="")
    assert main(["lesion-check", "--measure", str(changed), *argv[1:15], "--threads", "1"]) == 0
    remeasured = ModelPack.load(changed)
    for key in ("validation", "leave_one_source_out"):
        assert remeasured.config.metrics[key] == config.metrics[key]
    assert remeasured.config.provenance == config.provenance
    _assert_recorded_as_served(remeasured, test_rows, sources["not_lesion"])
    assert "| not a lesion: document |" in (changed / "README.md").read_text()
    assert json.loads((changed / "eval" / "metrics.json").read_text())["task"] == "lesion_check"


def _assert_recorded_as_served(pack: ModelPack, test_rows: list[dict], not_lesion: Path) -> None:
    """Each not_lesion test image (one per category) passed or not as the package's recorded figures say."""
    config = pack.config
    for row in test_rows:
        batch = preprocess(load_image(not_lesion / row["file"]), config.preprocess)[None]
        p = dict(zip(config.labels, pack.probabilities(batch)[0].tolist()))
        recorded = config.metrics["per_category"][row["category"]]
        assert recorded["n"] == 1 and recorded["passed"] == int(lesion_check(p, config).passed)


def test_nuisance_is_seeded_and_keeps_an_rgb_image():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8), "RGB")
    first = [nuisance(image, np.random.default_rng([0, 5, k])) for k in range(20)]
    again = [nuisance(image, np.random.default_rng([0, 5, k])) for k in range(20)]
    assert all(a.mode == "RGB" and min(a.size) >= 8 for a in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert len({np.asarray(a).tobytes() for a in first}) == 20


def test_mlp_folds_the_standardisation_into_the_exported_layers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 600)
    # Features on wildly different scales and offsets; only the first two carry the class.
    features = rng.normal(0, 1, (600, 5)) * np.array([1000, 0.01, 5, 1, 50]) + np.array([500, -3, 0, 7, 1e4])
    features[:, 0] += np.where(labels == 1, 6000, 0)
    features[:, 1] += np.where(labels == 2, 0.2, 0)
    layers = fit_mlp(features.astype(np.float32), labels, alpha=1e-3)
    p = probabilities(features.astype(np.float32), layers)
    assert np.mean(p.argmax(1) == labels) > 0.95
    logits = torch_head(layers)(torch.from_numpy(features.astype(np.float32))).detach()
    assert np.allclose(torch.softmax(logits, dim=1).numpy(), p, atol=1e-4)
