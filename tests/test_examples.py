"""`python -m skin_demo.examples pull`: test-split picks, manifest, and the gallery's reading of it."""

from __future__ import annotations

import csv

import pytest

from skin_demo.examples import MANIFEST_COLUMNS, MAX_EXAMPLE_BYTES, MAX_EXAMPLES, main, pull, read_manifest
from skin_demo.train.data import read_split
from tests import image_files as files
from tests.conftest import REPO_ROOT

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


@pytest.fixture
def fake_ham(tmp_path):
    """A HAM10000-shaped folder with generated images, and a split CSV: 3 test images per class (2 lesions)."""
    root = tmp_path / "ham"
    (root / "images").mkdir(parents=True)
    meta_rows, split_rows = [], []
    n = 0
    for dx in CLASSES:
        for k in range(5):
            image_id = f"ISIC_{n:07d}"
            lesion_id = f"HAM_{dx}_{min(k, 3)}"  # images 3 and 4 share a lesion
            split = "test" if k >= 2 else "train"
            files.jpeg(root / "images" / f"{image_id}.jpg", 64, 48, seed=n)
            meta_rows.append([lesion_id, image_id, dx, "histo", "50", "male", "back"])
            split_rows.append([image_id, lesion_id, dx, split])
            n += 1
    with (root / "HAM10000_metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], *meta_rows])
    split_csv = tmp_path / "split.csv"
    with split_csv.open("w", newline="") as f:
        csv.writer(f).writerows([["image_id", "lesion_id", "dx", "split"], *split_rows])
    return root, split_csv, {row[0]: row for row in split_rows}


def test_pull_takes_test_split_images_one_per_lesion(tmp_path, fake_ham):
    root, split_csv, rows = fake_ham
    out = tmp_path / "examples"
    examples = pull(root, split=split_csv, per_class=3, limit=100, out_dir=out)
    # 3 test images per class, but two of them are the same lesion: 2 per class.
    assert len(examples) == 2 * len(CLASSES)
    for example in examples:
        image_id = example.path.stem
        assert rows[image_id][3] == "test"
        assert example.path.read_bytes() == (root / "images" / f"{image_id}.jpg").read_bytes()
        assert example.caption == f"True label: {example.label}"
        assert "CC BY-NC 4.0" in example.attribution and image_id in example.attribution
    with (out / "manifest.csv").open() as f:
        manifest = list(csv.DictReader(f))
    assert tuple(manifest[0]) == MANIFEST_COLUMNS
    assert read_manifest(out) == examples


def test_a_limit_goes_round_the_classes(tmp_path, fake_ham):
    root, split_csv, _ = fake_ham
    examples = pull(root, split=split_csv, per_class=2, limit=10, out_dir=tmp_path / "examples")
    per_class = {dx: sum(e.dx == dx for e in examples) for dx in CLASSES}
    # Every class's first image before any class's second: 7 firsts, then the first 3 classes' seconds.
    assert per_class == {"akiec": 2, "bcc": 2, "bkl": 2, "df": 1, "mel": 1, "nv": 1, "vasc": 1}


def test_the_committed_examples_are_there_on_a_fresh_clone():
    """What a fresh clone (and a Space built from git) shows: the committed HAM10000 test-split examples, every
    class, each listed with its licence; no more than the repository's one exception allows."""
    examples = read_manifest(REPO_ROOT / "examples")
    with (REPO_ROOT / "examples" / "manifest.csv").open(newline="") as f:
        assert len(examples) == len(list(csv.DictReader(f)))  # every listed image is present
    assert len(examples) <= MAX_EXAMPLES and {e.dx for e in examples} == set(CLASSES)
    split = read_split(REPO_ROOT / "models" / "ham10000_split.csv")
    for example in examples:
        assert split[example.path.stem] == "test"
        assert example.path.stat().st_size <= MAX_EXAMPLE_BYTES
        assert example.licence == "CC BY-NC 4.0" and "HAM10000" in example.source
    listed = {e.path.name for e in examples}
    assert {p.name for p in (REPO_ROOT / "examples").iterdir() if p.suffix == ".jpg"} == listed


def test_cli(tmp_path, fake_ham, capsys):
    root, split_csv, _ = fake_ham
    out = tmp_path / "ex"
    assert main(["pull", "--from", str(root), "--split", str(split_csv), "--per-class", "1", "--out", str(out)]) == 0
    assert len(read_manifest(out)) == len(CLASSES)
    assert main(["pull", "--from", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "HAM10000_metadata.csv" in capsys.readouterr().err


def test_read_manifest_skips_missing_images_and_tolerates_an_empty_folder(tmp_path):
    assert read_manifest(tmp_path / "absent") == []
    (tmp_path / "examples").mkdir()
    assert read_manifest(tmp_path / "examples") == []
    files.jpeg(tmp_path / "examples" / "a.jpg", 64, 48)
    (tmp_path / "examples" / "manifest.csv").write_text(
        "file,dx,label,source,licence\n"
        "a.jpg,mel,Melanoma (mel),somewhere,CC0\n"
        "gone.jpg,nv,Melanocytic nevus (nv),somewhere,CC0\n"
        "../escape.jpg,nv,x,y,z\n"
    )
    (tmp_path / "escape.jpg").write_bytes(b"")
    examples = read_manifest(tmp_path / "examples")
    assert [e.path.name for e in examples] == ["a.jpg"]


@pytest.mark.data
def test_pull_from_the_real_dataset_gives_the_committed_examples(tmp_path, ham10000_dir):
    split = REPO_ROOT / "models" / "ham10000_split.csv"
    if not split.is_file():
        pytest.skip("models/ham10000_split.csv not produced yet")
    examples = pull(ham10000_dir, split=split, out_dir=tmp_path / "examples")
    assert {e.dx for e in examples} == set(CLASSES)
    assert (tmp_path / "examples" / "manifest.csv").read_bytes() == (REPO_ROOT / "examples" / "manifest.csv").read_bytes()
    for example in examples:
        assert example.path.read_bytes() == (REPO_ROOT / "examples" / example.path.name).read_bytes()
