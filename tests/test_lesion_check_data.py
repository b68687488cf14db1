"""The bundled models/lesion_check package, run the way the app runs it, gives the numbers its config records:
exactly, for every held-out not_lesion image and every clinical test photo (passed, and given the clinical
domain); within sampling error, for a fixed subsample of the HAM10000 and ISIC 2017 test images."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import image_domain, lesion_check
from skin_demo.train.data import read_split
from tests.conftest import HAM10000_DIR, REPO_ROOT, SHARED_DATA

PACKAGE = REPO_ROOT / "models" / "lesion_check"
NOT_LESION_DIR = SHARED_DATA / "not_lesion"
ISIC2017_DIR = SHARED_DATA / "isic2017"
CLINICAL_DIR = SHARED_DATA / "clinical"
SUBSAMPLE = 150  # images per positive source


@pytest.fixture(scope="module")
def pack() -> ModelPack:
    if not all((d / "labels.csv").is_file() for d in (NOT_LESION_DIR, ISIC2017_DIR, CLINICAL_DIR)):
        pytest.skip(f"not_lesion / isic2017 / clinical data not found under {SHARED_DATA}")
    if not (HAM10000_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"HAM10000 not found at {HAM10000_DIR}")
    return ModelPack.load(PACKAGE)


def _calls(pack: ModelPack, paths: list) -> list[tuple[bool, str]]:
    """(passed, image domain) per image, as the app calls them."""
    out = []
    for start in range(0, len(paths), 64):
        batch = np.stack([preprocess(load_image(p), pack.config.preprocess) for p in paths[start:start + 64]])
        for row in pack.probabilities(batch):
            probabilities = dict(zip(pack.config.labels, row.tolist()))
            out.append((lesion_check(probabilities, pack.config).passed,
                        image_domain(probabilities, pack.config).label))
    return out


def _passed(pack: ModelPack, paths: list) -> list[bool]:
    return [passed for passed, _ in _calls(pack, paths)]


@pytest.mark.data
def test_not_lesion_test_images_are_rejected_exactly_as_recorded(pack):
    with (REPO_ROOT / "models" / "not_lesion_split.csv").open(newline="") as handle:
        test_rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    recorded = pack.config.metrics["per_category"]
    assert set(recorded) == {row["category"] for row in test_rows}
    for category, numbers in recorded.items():
        paths = [NOT_LESION_DIR / row["file"] for row in test_rows if row["category"] == category]
        passed = _passed(pack, paths)
        assert (len(passed), sum(passed)) == (numbers["n"], numbers["passed"]), category


@pytest.mark.data
@pytest.mark.parametrize("source", ["ham10000", "isic2017"])
def test_lesion_test_images_pass_at_the_recorded_rate(pack, source):
    if source == "ham10000":
        split = read_split(REPO_ROOT / "models" / "ham10000_split.csv")
        ids = sorted(image_id for image_id, subset in split.items() if subset == "test")
        paths = [HAM10000_DIR / "images" / f"{image_id}.jpg" for image_id in ids]
    else:
        with (ISIC2017_DIR / "labels.csv").open(newline="") as handle:
            ids = sorted(row["image_id"] for row in csv.DictReader(handle) if row["isic2017_split"] == "test")
        paths = [ISIC2017_DIR / "images" / f"{image_id}.jpg" for image_id in ids]
    recorded = pack.config.metrics["per_source"][source]
    assert recorded["n"] == len(paths)
    subsample = paths[:: max(1, len(paths) // SUBSAMPLE)][:SUBSAMPLE]
    rate = float(np.mean(_passed(pack, subsample)))
    # A fixed subsample of the recorded set: its pass rate may differ from the whole set's only by sampling error.
    p = recorded["pass_rate"]
    tolerance = 3 * math.sqrt(max(p * (1 - p), 0.01) / len(subsample))
    assert rate >= p - tolerance, (source, rate, p)


@pytest.mark.data
def test_clinical_test_photos_pass_and_get_their_domain_exactly_as_recorded(pack):
    with (CLINICAL_DIR / "labels.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == "test"]
    calls = _calls(pack, [CLINICAL_DIR / "images" / f"{row['image_id']}.jpg" for row in rows])
    recorded = pack.config.metrics["per_source"]["clinical_all"]
    assert recorded["n"] == len(rows)
    assert recorded["passed"] == sum(passed for passed, _ in calls)
    assert recorded["own_domain"] == sum(passed and domain == "clinical" for passed, domain in calls)
