"""Train -> export -> serve, end to end on CPU in seconds with timm's tiny test model, over three sources in two
image domains.

Uses a handful of real HAM10000 images when ../shared/data has them, generated ones otherwise, plus a synthetic
ISIC 2017-layout folder and a synthetic clinical-photo folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skin_demo.config import PackageConfig
from skin_demo.modelpack import ModelPack
from skin_demo.predictor import Predictor
from skin_demo.train.cli import main
from skin_demo.train.data import read_ham10000
from skin_demo.train.split import grouped_stratified_split, write_split_csv
from skin_demo.train.weight_storage import FLOAT16, INT8
from tests.conftest import HAM10000_DIR
from tests.fake_clinical import make_fake_clinical
from tests.fake_ham import copy_real_ham10000, make_fake_ham10000
from tests.fake_isic import make_fake_isic2017


@pytest.fixture
def small_ham(tmp_path) -> tuple[Path, Path]:
    if (HAM10000_DIR / "HAM10000_metadata.csv").is_file():
        root = copy_real_ham10000(tmp_path / "ham", HAM10000_DIR, per_class=6)
    else:
        root = make_fake_ham10000(tmp_path / "ham", per_class=6, size=(200, 150))
    samples = read_ham10000(root)
    split = tmp_path / "split.csv"
    # Synthetic lesions are one image each, so a 50/25/25 split keeps every class in val and test.
    write_split_csv(split, samples, grouped_stratified_split(samples, fractions=(0.5, 0.25, 0.25)))
    return root, split


@pytest.mark.slow
def test_fit_export_and_serve_round_trip(small_ham, tmp_path):
    ham, split = small_ham
    isic = make_fake_isic2017(tmp_path / "isic2017")
    clinical = make_fake_clinical(tmp_path / "clinical")
    run = tmp_path / "run"
    argv = ["fit", "--ham", str(ham), "--split", str(split), "--isic2017", str(isic), "--clinical", str(clinical),
            "--phone-look", "0.5", "--arch", "test_efficientnet",
            "--no-pretrained", "--image-size", "48", "--warm-size", "32", "--warm-epochs", "1", "--epochs", "2",
            "--batch-size", "8", "--threads", "2", "--cache", str(tmp_path / "cache"), "--out", str(run),
            "--color-constancy", "shades_of_gray"]
    assert main(argv) == 0

    # The run folder keeps what made it and what it produced.
    assert json.loads((run / "args.json").read_text())["arch"] == "test_efficientnet"
    history = json.loads((run / "history.json").read_text())
    assert [(r["epoch"], r["size"]) for r in history["history"]] == [(1, 32), (2, 48)]
    # Validation is measured per source, for the raw and the EMA weights.
    assert set(history["history"][-1]["ema"]["lesion_type"]) == {"ham10000", "isic2017", "clinical", "selection"}
    assert (run / "last.pt").is_file() and (run / "best_lesion_type.pt").is_file()
    choices = json.loads((run / "choices.json").read_text())
    assert set(choices["malignancy"]) == {"best_epoch", "weights", "val_without_flip", "val_with_flip", "flip_tta",
                                          "logit_adjustment_tau", "tuning_by_tau"}
    # Logit adjustment is tried for lesion type only, on the validation rows kept out of epoch selection.
    assert set(choices["lesion_type"]["tuning_by_tau"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}
    assert choices["malignancy"]["tuning_by_tau"] == {}

    packs = {task: ModelPack.load(run / "packages" / task) for task in ("malignancy", "lesion_type")}
    lesion_cfg = packs["lesion_type"].config
    assert lesion_cfg.labels == ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    assert lesion_cfg.malignant_labels == ("akiec", "bcc", "mel")
    assert lesion_cfg.preprocess.size == (48, 48)
    # Each domain's threshold keeps validation sensitivity >= 0.90 on each of its sources: the lowest per-source
    # one, rounded down to 4 decimals (the per-source values are recorded rounded, so the served one lies at most
    # one rounding step, 1e-4, below the smallest; 1e-9 is float slack). Dermoscopy's is also decision_threshold.
    malignancy = packs["malignancy"].config
    decision = malignancy.provenance["decision"]
    assert decision["min_sensitivity"] == 0.9
    per_source = decision["domains"]["dermoscopy"]["threshold_per_source"]
    assert set(per_source) == {"ham10000", "isic2017"}
    assert 0 <= min(per_source.values()) - malignancy.decision_threshold <= 1e-4 + 1e-9
    assert set(malignancy.decision_thresholds) == {"dermoscopy", "clinical"}
    assert malignancy.decision_thresholds["dermoscopy"] == malignancy.decision_threshold
    assert set(decision["domains"]["clinical"]["threshold_per_source"]) == {"clinical"}
    assert set(malignancy.decision_scores.values()) <= {"binary_head", "lesion_type_sum"}
    card = (packs["malignancy"].path / "README.md").read_text()
    assert f"HAM10000 {per_source['ham10000']}, ISIC 2017 {per_source['isic2017']}" in card
    # Colour constancy chosen for training travels in the package, so serving applies it too.
    assert {p.config.preprocess.color_constancy for p in packs.values()} == {"shades_of_gray"}
    assert malignancy.provenance["choice"] == choices["malignancy"]
    for pack in packs.values():
        assert pack.config.provenance["onnx_parity_max_abs_logit_diff"] < 1e-3
        assert (pack.path / "README.md").is_file()
        # Weights are stored as int8 or float16 (a quarter or half the download) when that moves no probability by
        # more than 1e-2.
        storage = {INT8: "int8", FLOAT16: "float16"}.get(pack.config.provenance["weights"])
        if storage is not None:
            assert pack.config.provenance[f"{storage}_max_probability_change"] <= 1e-2
        assert pack.config.temperature > 0
        assert PackageConfig.from_json((pack.path / "config.json").read_text()) == pack.config

    image = next(ham.rglob("*.jpg"))
    prediction = Predictor(packs["malignancy"], packs["lesion_type"]).predict(image)
    assert sum(prediction.lesion_type.values()) == pytest.approx(1.0, abs=1e-5)
    assert 0.0 <= prediction.malignancy_probability <= 1.0


@pytest.mark.slow
def test_resume_continues_from_the_last_epoch(small_ham, tmp_path):
    ham, split = small_ham
    run = tmp_path / "run"
    common = ["fit", "--ham", str(ham), "--split", str(split), "--arch", "test_efficientnet", "--no-pretrained",
              "--image-size", "32", "--batch-size", "8", "--threads", "2", "--out", str(run), "--no-export",
              "--tasks", "lesion_type"]
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history["history"]] == [1, 2]
    assert np.isfinite([r["train_loss"] for r in history["history"]]).all()
