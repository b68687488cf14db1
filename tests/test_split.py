"""The lesion-grouped, class-stratified split: no lesion in two splits, class shares kept, deterministic."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from skin_demo.train.data import Sample, read_ham10000
from skin_demo.train.split import grouped_stratified_split, write_split_csv

REPO_ROOT = Path(__file__).resolve().parent.parent


def _synthetic_samples() -> list[Sample]:
    """400 lesions over 3 classes with 1-4 images each (like HAM10000's repeated lesions)."""
    samples = []
    for i in range(400):
        dx = ("nv", "mel", "df")[0 if i % 10 < 7 else (1 if i % 10 < 9 else 2)]
        for j in range(1 + i % 4):
            samples.append(Sample(f"img_{i}_{j}", Path("x.jpg"), f"lesion_{i}", dx, dx == "mel", "test"))
    return samples


def _check_grouped_and_stratified(samples: list[Sample], assignment: dict[str, str], tolerance: float) -> None:
    splits_of_lesion: dict[str, set[str]] = {}
    for s in samples:
        splits_of_lesion.setdefault(s.lesion_id, set()).add(assignment[s.image_id])
    straddling = [lid for lid, splits in splits_of_lesion.items() if len(splits) > 1]
    assert straddling == []
    per_class = Counter(s.dx for s in samples)
    per_class_split = Counter((s.dx, assignment[s.image_id]) for s in samples)
    for dx, total in per_class.items():
        for split, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
            assert abs(per_class_split[(dx, split)] / total - share) <= tolerance, (dx, split)


def test_split_groups_lesions_and_stratifies_classes():
    samples = _synthetic_samples()
    assignment = grouped_stratified_split(samples, seed=3)
    assert set(assignment) == {s.image_id for s in samples}
    _check_grouped_and_stratified(samples, assignment, tolerance=0.03)


def test_split_is_deterministic_per_seed():
    samples = _synthetic_samples()
    assert grouped_stratified_split(samples, seed=1) == grouped_stratified_split(list(reversed(samples)), seed=1)
    assert grouped_stratified_split(samples, seed=1) != grouped_stratified_split(samples, seed=2)


def test_split_rejects_a_lesion_with_two_diagnoses():
    samples = [Sample("a", Path("a.jpg"), "L1", "nv", False, "t"), Sample("b", Path("b.jpg"), "L1", "mel", True, "t")]
    with pytest.raises(ValueError, match="L1"):
        grouped_stratified_split(samples)


@pytest.mark.data
def test_bundled_split_file_matches_the_real_data(ham10000_dir, tmp_path):
    """models/ham10000_split.csv is what `split` writes for the real data, grouped and stratified."""
    samples = read_ham10000(ham10000_dir)
    assignment = grouped_stratified_split(samples, seed=0)
    _check_grouped_and_stratified(samples, assignment, tolerance=0.02)
    regenerated = tmp_path / "split.csv"
    write_split_csv(regenerated, samples, assignment)
    assert regenerated.read_text() == (REPO_ROOT / "models" / "ham10000_split.csv").read_text()
    with regenerated.open() as handle:
        counts = Counter(row["split"] for row in csv.DictReader(handle))
    assert counts["test"] > 1400 and counts["val"] > 1400
