"""The HAM10000 reader (several folders, missing and unreadable images named) and the decoding it feeds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from skin_demo.train.data import DataError, read_ham10000
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


@pytest.mark.data
def test_real_ham_reader(ham10000_dir):
    samples = read_ham10000(ham10000_dir)
    assert len(samples) == 10015
    assert Counter(s.dx for s in samples) == {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327,
                                               "vasc": 142, "df": 115}
    assert np.asarray(decode_all(samples[:3])[0]).shape == (150, 200, 3)
