"""`python -m skin_demo.train decide`: a malignancy package's score and threshold per image domain, chosen on the
validation images of every source through the serving path, written into the package (config, embedded copy,
card) so that serving makes exactly the recorded call."""

from __future__ import annotations

import numpy as np
import pytest

from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import malignancy_flag, malignancy_score
from skin_demo.train import sources
from skin_demo.train.cli import main
from tests.fake_clinical import make_fake_clinical
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import make_fake_isic2017
from tests.tiny_packages import make_package


@pytest.fixture
def data(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    return (ham, write_fake_split(ham, tmp_path / "split.csv"), make_fake_isic2017(tmp_path / "isic", size=48),
            make_fake_clinical(tmp_path / "clinical", per_class_and_split=4))


def test_decide_records_each_domain_and_serving_makes_the_recorded_calls(tmp_path, data, capsys):
    ham, split, isic, clinical = data
    malignancy = make_package(tmp_path / "malignancy", "malignancy")
    lesion_type = make_package(tmp_path / "lesion_type", "lesion_type")
    argv = ["decide", str(malignancy), "--lesion-type", str(lesion_type), "--ham", str(ham), "--split", str(split),
            "--isic2017", str(isic), "--clinical", str(clinical), "--threads", "1"]
    assert main(argv) == 0
    assert '"min_sensitivity": 0.9' in capsys.readouterr().out

    config = ModelPack.load(malignancy).config  # also proves config.json and the embedded copy agree
    decision = config.provenance["decision"]
    assert set(config.decision_thresholds) == set(config.decision_scores) == {"dermoscopy", "clinical"}
    assert config.decision_threshold == config.decision_thresholds["dermoscopy"]
    assert set(decision["domains"]["dermoscopy"]["threshold_per_source"]) == {"ham10000", "isic2017"}
    for domain, chosen in decision["domains"].items():
        aucs = chosen["val_auc"]
        assert chosen["score"] == max(aucs, key=lambda name: (aucs[name]["mean"] or 0, name == "binary_head"))

    # Through the serving path, every source's validation malignancies reach >= 90 % sensitivity.
    packs = {"malignancy": ModelPack.load(malignancy), "lesion_type": ModelPack.load(lesion_type)}
    val = sources.samples(sources.label_table(ham, split, isic, clinical), "val")
    for source in ("ham10000", "isic2017", "clinical"):
        flags = []
        for sample in (s for s in val if s.source == source and s.malignant):
            probs = {task: dict(zip(p.config.labels, p.probabilities(
                preprocess(load_image(sample.path), p.config.preprocess)[None])[0].tolist()))
                for task, p in packs.items()}
            score = malignancy_score(sample.domain, probs["malignancy"], config, probs["lesion_type"],
                                     packs["lesion_type"].config)
            flags.append(malignancy_flag(score, config, sample.domain).flagged)
        assert np.mean(flags) >= 0.9, source
    card = (malignancy / "README.md").read_text()
    assert "Ordinary (clinical) photos: flagged when" in card and "Dermoscopy images: flagged when" in card


def test_decide_without_data_is_a_clear_error(tmp_path, capsys):
    malignancy = make_package(tmp_path / "malignancy", "malignancy")
    assert main(["decide", str(malignancy), "--ham", str(tmp_path / "none"), "--split", str(tmp_path / "x.csv")]) == 1
    assert "error:" in capsys.readouterr().err
