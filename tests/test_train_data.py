"""Data readers: HAM10000 over several folders, ISIC ground-truth CSV, class folders, the ISIC set's HAM map."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from skin_demo.train.data import (
    DataError, IGNORE_LABEL, label_index, read_class_folders, read_ham10000, read_isic_ground_truth,
    read_malignant_vs_benign,
)
from skin_demo.train.dataset import decode_all
from tests.fake_ham import make_fake_ham10000


def _jpeg(path, colour=(120, 80, 60)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)


def test_ham_reader_finds_images_in_several_folders(tmp_path):
    root = make_fake_ham10000(tmp_path / "ham", per_class=2, two_folders=True)
    samples = read_ham10000(root)
    assert len(samples) == 14
    assert {s.path.parent.name for s in samples} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert Counter(s.dx for s in samples)["mel"] == 2
    assert all(s.malignant == (s.dx in {"mel", "bcc", "akiec"}) for s in samples)


def test_ham_reader_reports_missing_images_by_id(tmp_path):
    root = make_fake_ham10000(tmp_path / "ham", per_class=2)
    victim = next(root.rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DataError, match=victim.stem):
        read_ham10000(root)


def test_unreadable_images_are_reported_by_id(tmp_path):
    root = make_fake_ham10000(tmp_path / "ham", per_class=1)
    victim = next(root.rglob("*.jpg"))
    victim.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match=victim.stem):
        decode_all(read_ham10000(root))


def test_isic_ground_truth_csv(tmp_path):
    for name in ("ISIC_1", "ISIC_2"):
        _jpeg(tmp_path / "img" / f"{name}.jpg")
    csv_path = tmp_path / "gt.csv"
    csv_path.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n"
                        "ISIC_1,1.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_2,0.0,0.0,0.0,0.0,0.0,1.0,0.0\n")
    samples = read_isic_ground_truth(csv_path, tmp_path / "img")
    assert [(s.image_id, s.dx, s.malignant) for s in samples] == [("ISIC_1", "mel", True), ("ISIC_2", "df", False)]
    csv_path.write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_1,1.0,1.0,0.0,0.0,0.0,0.0,0.0\n")
    with pytest.raises(DataError, match="ISIC_1"):
        read_isic_ground_truth(csv_path, tmp_path / "img")


def test_class_folders_with_binary_and_lesion_labels(tmp_path):
    _jpeg(tmp_path / "train" / "benign" / "1.jpg")
    _jpeg(tmp_path / "train" / "malignant" / "1.jpg")
    _jpeg(tmp_path / "test" / "bcc" / "7.png")
    samples = {s.image_id: s for s in read_class_folders(tmp_path)}
    assert set(samples) == {"train/benign/1.jpg", "train/malignant/1.jpg", "test/bcc/7.png"}
    assert samples["train/malignant/1.jpg"].malignant and samples["train/malignant/1.jpg"].dx is None
    assert label_index(samples["train/malignant/1.jpg"], "lesion_type") == IGNORE_LABEL
    assert label_index(samples["train/malignant/1.jpg"], "malignancy") == 1
    assert label_index(samples["test/bcc/7.png"], "lesion_type") == 1
    _jpeg(tmp_path / "train" / "maybe" / "2.jpg")
    with pytest.raises(DataError, match="maybe"):
        read_class_folders(tmp_path)


@pytest.mark.data
def test_malignant_vs_benign_set_is_cross_referenced_to_ham(malignant_vs_benign_dir):
    samples = read_malignant_vs_benign(malignant_vs_benign_dir)
    with (malignant_vs_benign_dir / "suspected_label_noise.csv").open() as handle:
        noisy = {row["file"] for row in csv.DictReader(handle)}
    assert len(samples) == 3297 - len(noisy)
    assert not noisy & {s.image_id for s in samples}
    # All benign images are HAM10000 nevi in disguise (the folder's README); they carry their HAM lesion.
    benign = [s for s in samples if not s.malignant]
    assert len(benign) == 1800 and all(s.lesion_id and s.dx == "nv" for s in benign)
    assert all(s.malignant for s in samples if s.lesion_id is None)


@pytest.mark.data
def test_real_ham_reader(ham10000_dir):
    samples = read_ham10000(ham10000_dir)
    assert len(samples) == 10015
    assert Counter(s.dx for s in samples) == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327,
                                               "vasc": 142, "df": 115}
    assert np.asarray(decode_all(samples[:3])[0]).shape == (150, 200, 3)
