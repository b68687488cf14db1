"""The one post-processing rule (skin_demo.postprocess) and the words for its calls (skin_demo.texts), on the configs
of tiny real packages: the image domain from either form of lesion check, the domain a call is made for, the score
and threshold per domain, and what the page says about it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skin_demo import postprocess, texts
from skin_demo.imaging import preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import (
    DEFAULT_THRESHOLD,
    LESION_CHECK_CLINICAL_MESSAGE,
    LESION_CHECK_FAILED_MESSAGE,
    LESION_CHECK_PASSED_MESSAGE,
    ImageDomain,
    MalignancyFlag,
    decision_domain,
    decision_threshold,
    image_domain,
    lesion_check,
    malignancy_flag,
    malignancy_score,
)
from tests.tiny_packages import CLINICAL_THRESHOLD, PER_DOMAIN_METRICS, make_package, per_domain_overrides
from tests.web_packages import DARK, GREEN, SKIN, make_lesion_check_package

MALIGNANCY = {"benign": 0.8, "malignant": 0.2}
LESION_TYPE = {"akiec": 0.1, "bcc": 0.15, "bkl": 0.05, "df": 0.05, "mel": 0.25, "nv": 0.35, "vasc": 0.05}  # sum 0.5


def load(folder) -> ModelPack:
    return ModelPack.load(folder, threads=1)


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    return {
        "check": load(make_lesion_check_package(root / "check", 0.5)),
        "older_check": load(make_lesion_check_package(root / "older_check", 0.5, domains=False)),
        "per_domain": load(make_package(root / "per_domain", "malignancy", config_overrides=per_domain_overrides(0.3))),
        "one_threshold": load(make_package(root / "one", "malignancy", config_overrides={"decision_threshold": 0.3})),
        "no_threshold": load(make_package(root / "none", "malignancy")),
        "lesion_type": load(make_package(root / "lesion_type", "lesion_type")),
    }


def check_probs(dermoscopy: float, clinical: float) -> dict[str, float]:
    return {"dermoscopy": dermoscopy, "clinical": clinical, "not_lesion": 1.0 - dermoscopy - clinical}


@pytest.mark.parametrize(
    "dermoscopy, clinical, label, message",
    [
        (0.30, 0.25, "dermoscopy", LESION_CHECK_PASSED_MESSAGE),  # passes on the sum though not_lesion is largest
        (0.20, 0.40, "clinical", LESION_CHECK_CLINICAL_MESSAGE),
        (0.25, 0.25, "dermoscopy", LESION_CHECK_PASSED_MESSAGE),  # exactly at the threshold; a tie is dermoscopy
        (0.30, 0.15, "not_lesion", LESION_CHECK_FAILED_MESSAGE),
        (0.05, 0.40, "not_lesion", LESION_CHECK_FAILED_MESSAGE),
    ],
)
def test_three_way_check_passes_on_the_lesion_sum_and_names_the_likelier_domain(packs, dermoscopy, clinical, label,
                                                                                 message):  # fmt: skip
    config = packs["check"].config
    probabilities = check_probs(dermoscopy, clinical)
    domain = image_domain(probabilities, config)
    assert domain == ImageDomain(label, probabilities)
    assert domain.to_json() == {"label": label, "probabilities": probabilities}
    check = lesion_check(probabilities, config)
    assert check.passed is (label != "not_lesion")
    assert check.score == pytest.approx(dermoscopy + clinical) and check.threshold == 0.5
    assert check.message == message


def test_older_two_label_check_passes_on_p_lesion_and_knows_only_dermoscopy(packs):
    config = packs["older_check"].config
    passed = image_domain({"lesion": 0.7, "not_lesion": 0.3}, config)
    assert passed == ImageDomain("dermoscopy", {"dermoscopy": 0.7, "not_lesion": 0.3})
    assert lesion_check({"lesion": 0.7, "not_lesion": 0.3}, config).message == LESION_CHECK_PASSED_MESSAGE
    failed = image_domain({"lesion": 0.4, "not_lesion": 0.6}, config)
    assert failed.label == "not_lesion" and decision_domain(failed) == "dermoscopy"
    check = lesion_check({"lesion": 0.4, "not_lesion": 0.6}, config)
    assert (check.passed, check.score, check.message) == (False, 0.4, LESION_CHECK_FAILED_MESSAGE)


def test_the_tiny_check_package_finds_each_domain_on_real_images(packs):
    """The packages' own probabilities through the rule: the colours the browser tests rely on."""
    pack = packs["check"]
    for colour, label in ((SKIN, "dermoscopy"), (GREEN, "clinical"), (DARK, "not_lesion")):
        tensor = preprocess(Image.new("RGB", (64, 48), colour), pack.config.preprocess)[np.newaxis]
        probabilities = dict(zip(pack.config.labels, pack.probabilities(tensor)[0].tolist(), strict=True))
        assert image_domain(probabilities, pack.config).label == label, (colour, probabilities)


def test_decision_domain_is_the_images_or_for_a_non_lesion_the_likelier_one():
    assert decision_domain(ImageDomain("clinical", check_probs(0.45, 0.5))) == "clinical"
    assert decision_domain(ImageDomain("dermoscopy", check_probs(0.5, 0.45))) == "dermoscopy"
    assert decision_domain(ImageDomain("not_lesion", check_probs(0.05, 0.1))) == "clinical"
    assert decision_domain(ImageDomain("not_lesion", check_probs(0.1, 0.05))) == "dermoscopy"
    assert decision_domain(ImageDomain("not_lesion", {"dermoscopy": 0.1, "not_lesion": 0.9})) == "dermoscopy"


def test_malignancy_score_is_made_on_the_score_each_domain_names(packs):
    per_domain, lesion_type = packs["per_domain"].config, packs["lesion_type"].config
    assert malignancy_score("dermoscopy", MALIGNANCY, per_domain, LESION_TYPE, lesion_type) == pytest.approx(0.2)
    assert malignancy_score("clinical", MALIGNANCY, per_domain, LESION_TYPE, lesion_type) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="lesion-type"):
        malignancy_score("clinical", MALIGNANCY, per_domain, None, None)
    older = packs["one_threshold"].config  # no decision_scores: the binary head everywhere, lesion type not needed
    assert malignancy_score("clinical", MALIGNANCY, older, None, None) == pytest.approx(0.2)


def test_malignancy_flag_uses_the_threshold_of_its_domain(packs):
    per_domain = packs["per_domain"].config
    assert malignancy_flag(0.4, per_domain, "dermoscopy") == MalignancyFlag(True, 0.3, "dermoscopy", "binary_head")
    assert malignancy_flag(0.4, per_domain, "clinical") == MalignancyFlag(
        False, CLINICAL_THRESHOLD, "clinical", "lesion_type_sum"
    )
    assert malignancy_flag(CLINICAL_THRESHOLD, per_domain, "clinical").flagged  # at the threshold: flagged
    assert malignancy_flag(0.4, per_domain, "clinical").to_json() == {
        "flagged": False, "threshold": CLINICAL_THRESHOLD, "domain": "clinical", "score_from": "lesion_type_sum"
    }  # fmt: skip
    assert decision_threshold(per_domain) == 0.3  # the dermoscopy one, for older readers
    # Older packages: one threshold (or none) for every domain.
    assert malignancy_flag(0.4, packs["one_threshold"].config, "clinical") == MalignancyFlag(True, 0.3, "clinical")
    assert malignancy_flag(0.4, packs["no_threshold"].config, "clinical").threshold == DEFAULT_THRESHOLD
    assert malignancy_flag(0.4, packs["one_threshold"].config) == MalignancyFlag(True, 0.3)  # dermoscopy by default


def test_a_domain_without_its_own_threshold_falls_back_to_decision_threshold(tmp_path):
    overrides = {"decision_threshold": 0.3, "decision_thresholds": {"clinical": 0.6}}
    config = load(make_package(tmp_path / "m", "malignancy", config_overrides=overrides)).config
    assert postprocess.domain_threshold(config, "dermoscopy") == 0.3
    assert postprocess.domain_threshold(config, "clinical") == 0.6


# -- the words ---------------------------------------------------------------------------------------------------


def test_dermoscopy_words_are_the_pages_usual_headline(packs):
    config = packs["per_domain"].config
    flagged, below = (texts.flag_words(f, "dermoscopy", config) for f in (True, False))
    assert (flagged.headline, flagged.caveat, flagged.domain_name) == (texts.FLAGGED, "", "Dermoscopy image")
    assert (below.headline, below.caveat) == (texts.NOT_FLAGGED, "")
    assert "in tests on dermoscopy images it never saw, it caught" in flagged.threshold_line
    assert flagged.score_name == "the malignancy model"


def test_ordinary_photo_words_quote_the_measured_figures_and_never_reassure(packs):
    config = packs["per_domain"].config  # clinical: sensitivity 0.87, specificity 0.31
    flagged, below = (texts.flag_words(f, "clinical", config) for f in (True, False))
    measured = ("At that level, in tests on ordinary photos it never saw, it caught 8 of 10 cancers and raised false "
                "alarms on 7 of 10 harmless spots.")
    for words in (flagged, below):
        assert words.domain_name == "Ordinary photo"
        assert words.caveat.startswith("Ordinary photos are much harder for the model than dermoscopy images. "
                                       "Those test photos came from dermatology atlases; a phone photo may fare worse.")
        assert words.threshold_line == f"The model raises an alert from 45 % malignant. {measured}"  # clinical: 0.45
        assert "caught" not in words.caveat, "the figures are said once, in the threshold line"
        assert words.score_name == "the lesion-type model (its malignant types together)"
    assert flagged.headline == texts.FLAGGED and "doctor" in flagged.caveat
    assert "cannot rule anything out" in below.headline and below.headline.startswith(texts.NOT_FLAGGED)
    assert "see a doctor" in below.caveat
    for words in (flagged, below):
        text = f"{words.headline} {words.caveat}".lower()
        assert not any(calm in text for calm in ("benign", "no sign", "nothing to worry", "probably fine", "all clear"))


def test_ordinary_photo_words_without_figures_say_it_was_not_validated(tmp_path):
    overrides = per_domain_overrides(0.3, per_domain={"dermoscopy": PER_DOMAIN_METRICS["dermoscopy"]})
    config = load(make_package(tmp_path / "m", "malignancy", config_overrides=overrides)).config
    words = texts.flag_words(False, "clinical", config)
    assert "not validated on ordinary photos" in words.caveat and "caught" not in words.threshold_line
    assert "atlases" not in words.caveat, "no test photos to describe"
    assert "It has no test figures for ordinary photos." in words.threshold_line
    older = load(make_package(tmp_path / "older", "malignancy")).config
    assert "not validated on ordinary photos" in texts.flag_words(True, "clinical", older).caveat


@pytest.mark.parametrize(
    "sensitivity, specificity, phrase",
    [
        # Never rounded to flatter the model: cancers caught down, false alarms up.
        (0.87, 0.31, "caught 8 of 10 cancers and raised false alarms on 7 of 10"),
        (0.851, 0.709, "caught 8 of 10 cancers and raised false alarms on 3 of 10"),  # the bundled clinical figures
        (0.96, 0.97, "caught 9 of 10 cancers and raised false alarms on 1 of 10"),
        (0.9, 0.6, "caught 9 of 10 cancers and raised false alarms on 4 of 10"),  # 0.9 * 10 is 9, 0.4 * 10 is 4
        (0.7, 0.7, "caught 7 of 10 cancers and raised false alarms on 3 of 10"),  # 1 - 0.7 is 0.30000000000000004
        (1.0, 1.0, "caught 10 of 10 cancers and raised false alarms on 0 of 10"),
        (0.04, 0.5, "caught 0 of 10 cancers and raised false alarms on 5 of 10"),
    ],
)
def test_figures_are_said_in_tenths(tmp_path, sensitivity, specificity, phrase):
    figures = {**PER_DOMAIN_METRICS["clinical"], "sensitivity": sensitivity, "specificity": specificity}
    overrides = per_domain_overrides(0.3, per_domain={"clinical": figures})
    config = load(make_package(tmp_path / "m", "malignancy", config_overrides=overrides)).config
    assert phrase in texts.flag_words(True, "clinical", config).threshold_line


@pytest.mark.parametrize("p, shown", [(0.0783, "7.8 %"), (0.0013, "0.13 %"), (0.1797, "18 %"), (0.374, "37 %"),
                                      (1.0, "100 %"), (0.0, "0 %")])
def test_percentages_are_shown_with_two_significant_digits(p, shown):
    assert texts.percentage(p) == shown


def test_all_flag_words_are_flag_words_for_every_domain_and_outcome(packs):
    config = packs["per_domain"].config
    table = texts.all_flag_words(config)
    assert set(table) == {"dermoscopy", "clinical"}
    for domain, outcomes in table.items():
        assert outcomes == {"flagged": texts.flag_words(True, domain, config).to_json(),
                            "not_flagged": texts.flag_words(False, domain, config).to_json()}  # fmt: skip
