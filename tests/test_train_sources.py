"""The joined label table of HAM10000, ISIC 2017 and the clinical photos: splits as committed / as the challenge's /
as the set's own, no group on two sides, each row with its image domain."""

from __future__ import annotations

import pytest

from skin_demo.train.data import DataError
from skin_demo.train.sources import COLUMNS, clinical_table, isic2017_table, label_table, samples
from tests.fake_clinical import make_fake_clinical
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import STRADDLING_GROUP, make_fake_isic2017


@pytest.fixture
def two_sources(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=3)
    split = write_fake_split(ham, tmp_path / "split.csv")
    return ham, split, make_fake_isic2017(tmp_path / "isic2017")


def test_label_table_joins_both_sources_with_their_splits(two_sources):
    ham, split, isic = two_sources
    table = label_table(ham, split, isic)
    assert list(table.columns) == COLUMNS
    assert set(table["source"]) == {"ham10000", "isic2017"}
    assert set(table.loc[table.source == "isic2017", "dx"]) == {"nv", "bkl", "mel"}
    # Malignancy follows the dx convention in both sources: mel (and akiec, bcc) are malignant.
    assert (table["malignant"] == table["dx"].isin({"akiec", "bcc", "mel"})).all()
    # Every source brings benign and malignant examples to training.
    train = table[table.split == "train"]
    assert train.groupby("source")["malignant"].nunique().eq(2).all()


def test_no_group_straddles_two_splits_and_test_stays_the_challenge_s(two_sources):
    _, _, isic = two_sources
    table = isic2017_table(isic)
    assert table.groupby("group_id")["split"].nunique().max() == 1
    straddling = table[table.group_id == f"isic2017:{STRADDLING_GROUP}"]
    assert list(straddling["split"]) == ["test"]  # its train member was dropped, its test member kept
    assert (table.split == "test").sum() == 9


def test_samples_carry_source_and_group(two_sources):
    ham, split, isic = two_sources
    val = samples(label_table(ham, split, isic), "val")
    assert {s.source for s in val} == {"ham10000", "isic2017"}
    assert all(s.lesion_id for s in val)


def test_missing_isic_labels_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="labels.csv not found"):
        isic2017_table(tmp_path)


def test_clinical_photos_join_as_their_own_domain(two_sources, tmp_path):
    ham, split, isic = two_sources
    table = label_table(ham, split, isic, make_fake_clinical(tmp_path / "clinical"))
    clinical = table[table.source == "clinical"]
    assert set(clinical["domain"]) == {"clinical"} and set(table.loc[table.source != "clinical", "domain"]) == {
        "dermoscopy"}
    # Squamous cell carcinoma: malignant, with no HAM10000 code (it teaches malignancy only).
    scc = clinical[clinical["dx"].isna()]
    assert len(scc) == 6 and scc["malignant"].all()
    val = [s for s in samples(table, "val") if s.source == "clinical"]
    assert {s.domain for s in val} == {"clinical"} and {s.class_key for s in val} >= {"mel", "malignant"}
    assert table.groupby("group_id")["split"].nunique().max() == 1


def test_missing_clinical_labels_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="labels.csv not found"):
        clinical_table(tmp_path)
