"""Predictor and charts on tiny real packages: label order, sums, malignancy as a sum, the post-processing rule
(malignancy flag, lesion check), the charts' slices."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Wedge

from skin_demo import charts
from skin_demo.imaging import ImageError, load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import (
    DEFAULT_THRESHOLD,
    LESION_CHECK_FAILED_MESSAGE,
    LESION_CHECK_PASSED_MESSAGE,
    LesionCheck,
    MalignancyFlag,
)
from skin_demo.predictor import Prediction, Predictor, RankedLabel
from skin_demo.taxonomy import BENIGN_COLOUR, LESION_COLOURS, MALIGNANT_COLOUR, OTHER_COLOUR, display_name
from tests import image_files as files
from tests.tiny_packages import (
    CLINICAL_THRESHOLD,
    FAILING_LESION_THRESHOLD,
    LESION_CHECK_TEMPERATURE,
    PASSING_LESION_THRESHOLD,
    make_package,
)
from tests.web_packages import DARK, GREEN, SKIN, make_three_packages


@pytest.fixture
def packs(tmp_path):
    # Different input sizes: each model must get the tensor made with its own config.
    malignancy = ModelPack.load(make_package(tmp_path / "malignancy", "malignancy", size=(40, 40)), threads=1)
    lesion_type = ModelPack.load(make_package(tmp_path / "lesion_type", "lesion_type", size=(32, 32)), threads=1)
    return malignancy, lesion_type


def expected_probabilities(pack: ModelPack, path) -> np.ndarray:
    tensor = preprocess(load_image(path), pack.config.preprocess)[np.newaxis]
    return pack.probabilities(tensor)[0]


def test_prediction_matches_each_model_in_label_order(tmp_path, packs):
    malignancy, lesion_type = packs
    # PNG: decoded exactly. (JPEGs are decoded at reduced scale, see the draft test below.)
    path = files.save(files.lesion_photo(300, 200), tmp_path / "photo.png")
    prediction = Predictor(malignancy, lesion_type).predict(path)

    assert list(prediction.malignancy) == ["benign", "malignant"]
    assert list(prediction.lesion_type) == list(lesion_type.config.labels)
    np.testing.assert_allclose(list(prediction.malignancy.values()), expected_probabilities(malignancy, path), 1e-6)
    np.testing.assert_allclose(list(prediction.lesion_type.values()), expected_probabilities(lesion_type, path), 1e-6)
    assert sum(prediction.malignancy.values()) == pytest.approx(1.0, abs=1e-5)
    assert sum(prediction.lesion_type.values()) == pytest.approx(1.0, abs=1e-5)
    assert prediction.malignancy_probability == pytest.approx(prediction.malignancy["malignant"])
    assert prediction.lesion_type_malignant_probability == pytest.approx(
        sum(prediction.lesion_type[c] for c in ("akiec", "bcc", "mel"))
    )
    assert set(prediction.timings_ms) == {"decode", "preprocess", "inference", "total"}


def test_large_jpeg_is_decoded_at_reduced_scale_with_nearly_the_same_answer(tmp_path, packs):
    path = files.jpeg(tmp_path / "phone.jpg", 2400, 1800)
    prediction = Predictor(*packs).predict(path)
    exact = expected_probabilities(packs[1], path)
    np.testing.assert_allclose(list(prediction.lesion_type.values()), exact, atol=1e-2)


def test_malignancy_is_the_sum_over_malignant_labels(tmp_path):
    labels = ("benign", "suspicious", "malignant")
    malignancy = ModelPack.load(
        make_package(tmp_path / "m", "malignancy", labels=labels, malignant_labels=("suspicious", "malignant"))
    )
    lesion_type = ModelPack.load(make_package(tmp_path / "t", "lesion_type"))
    prediction = Predictor(malignancy, lesion_type).predict(files.jpeg(tmp_path / "p.jpg"))
    assert list(prediction.malignancy) == list(labels)
    assert prediction.malignancy_probability == pytest.approx(
        prediction.malignancy["suspicious"] + prediction.malignancy["malignant"]
    )


def test_top_k_is_sorted_with_display_names(tmp_path, packs):
    prediction = Predictor(*packs).predict(files.jpeg(tmp_path / "p.jpg"))
    top = prediction.lesion_type_top
    assert len(top) == 3
    assert [r.probability for r in top] == sorted((r.probability for r in top), reverse=True)
    assert top[0].probability == max(prediction.lesion_type.values())
    for r in top:
        assert r.name == display_name(r.label)  # e.g. "Mole (melanocytic nevus)"


def test_different_images_give_different_answers(tmp_path, packs):
    predictor = Predictor(*packs)
    red = files.save(files.Image.new("RGB", (64, 64), (230, 30, 30)), tmp_path / "red.png")
    blue = files.save(files.Image.new("RGB", (64, 64), (30, 30, 230)), tmp_path / "blue.png")
    assert predictor.predict(red).lesion_type != predictor.predict(blue).lesion_type


def test_to_json_is_plain_data(tmp_path, packs):
    import json

    result = Predictor(*packs).predict(files.jpeg(tmp_path / "p.jpg")).to_json()
    assert json.loads(json.dumps(result)) == result
    assert set(result["malignancy"]) == {"benign", "malignant"}


def test_bad_image_raises_image_error(tmp_path, packs):
    with pytest.raises(ImageError, match="could not read image"):
        Predictor(*packs).predict(files.truncated_jpeg(tmp_path / "t.jpg"))


def test_malignancy_flag_uses_the_package_threshold(tmp_path, packs):
    _, lesion_type = packs
    photo = files.save(files.lesion_photo(200, 150), tmp_path / "p.png")
    unset = Predictor(*packs).predict(photo)
    assert unset.malignancy_flag == MalignancyFlag(unset.malignancy_probability >= DEFAULT_THRESHOLD, DEFAULT_THRESHOLD)
    p = unset.malignancy_probability
    for threshold in (p / 2, (1 + p) / 2):  # below and above this image's P(malignant): flagged, then not
        folder = make_package(tmp_path / f"m{threshold}", "malignancy", size=(40, 40),
                              config_overrides={"decision_threshold": threshold})  # fmt: skip
        prediction = Predictor(ModelPack.load(folder, threads=1), lesion_type).predict(photo)
        assert prediction.malignancy_probability == pytest.approx(p)
        assert prediction.malignancy_flag == MalignancyFlag(p >= threshold, threshold)
    assert unset.lesion_check is None and unset.to_json()["lesion_check"] is None
    assert unset.image_domain is None and unset.to_json()["image_domain"] is None
    assert unset.malignancy_flag.domain == "dermoscopy"  # without a check: called as the models were validated


@pytest.mark.parametrize("threshold, passed", [(PASSING_LESION_THRESHOLD, True), (FAILING_LESION_THRESHOLD, False)])
def test_lesion_check_runs_the_third_package(tmp_path, packs, threshold, passed):
    overrides = {"decision_threshold": threshold, "temperature": LESION_CHECK_TEMPERATURE}
    folder = make_package(tmp_path / "check", "lesion_check", config_overrides=overrides)
    check_pack = ModelPack.load(folder, threads=1)
    photo = files.save(files.lesion_photo(200, 150), tmp_path / "p.png")
    prediction = Predictor(*packs, check_pack).predict(photo)
    score = float(expected_probabilities(check_pack, photo)[0])  # P(lesion): the first label
    assert prediction.lesion_check == LesionCheck(
        passed, pytest.approx(score, abs=1e-6), threshold,
        LESION_CHECK_PASSED_MESSAGE if passed else LESION_CHECK_FAILED_MESSAGE,
    )  # fmt: skip
    assert prediction.to_json()["lesion_check"]["passed"] is passed
    assert sum(prediction.lesion_type.values()) == pytest.approx(1.0, abs=1e-5)  # the models ran either way


@pytest.mark.parametrize(
    "colour, domain, decided_for",
    [(SKIN, "dermoscopy", "dermoscopy"), (GREEN, "clinical", "clinical"), (DARK, "not_lesion", None)],
)
def test_the_call_is_made_for_the_image_domain_the_check_finds(tmp_path, colour, domain, decided_for):
    root = make_three_packages(tmp_path / "models")  # three-way check; clinical photos on the lesion-type sum
    packs = [ModelPack.load(root / task, threads=1) for task in ("malignancy", "lesion_type", "lesion_check")]
    photo = files.save(files.Image.new("RGB", (90, 60), colour), tmp_path / "p.png")
    prediction = Predictor(*packs).predict(photo)
    check_probabilities = dict(zip(packs[2].config.labels, expected_probabilities(packs[2], photo), strict=True))
    assert prediction.image_domain.label == domain
    assert prediction.image_domain.probabilities == pytest.approx(check_probabilities, abs=1e-6)
    assert prediction.lesion_check.passed is (domain != "not_lesion")
    flag = prediction.malignancy_flag
    if decided_for is None:  # not a lesion: the numbers are still there, called for the likelier domain
        probabilities = prediction.image_domain.probabilities
        decided_for = "dermoscopy" if probabilities["dermoscopy"] >= probabilities["clinical"] else "clinical"
    assert flag.domain == decided_for
    if decided_for == "clinical":
        assert prediction.malignancy_probability == prediction.lesion_type_malignant_probability
        assert (flag.threshold, flag.score_from) == (CLINICAL_THRESHOLD, "lesion_type_sum")
    else:
        assert prediction.malignancy_probability == pytest.approx(prediction.malignancy["malignant"])
        assert (flag.threshold, flag.score_from) == (0.3, "binary_head")
    assert flag.flagged is (prediction.malignancy_probability >= flag.threshold)
    result = prediction.to_json()
    assert result["image_domain"] == {"label": domain, "probabilities": prediction.image_domain.probabilities}
    assert result["malignancy_flag"]["domain"] == decided_for


# -- charts ------------------------------------------------------------------------------------------------


def fixed_prediction() -> Prediction:
    lesion = {"akiec": 0.05, "bcc": 0.10, "bkl": 0.15, "df": 0.02, "mel": 0.20, "nv": 0.45, "vasc": 0.03}
    return Prediction(
        malignancy={"benign": 0.7, "malignant": 0.3},
        lesion_type=lesion,
        malignancy_probability=0.3,
        malignancy_flag=MalignancyFlag(flagged=True, threshold=0.25),
        lesion_check=LesionCheck(passed=True, score=0.9, threshold=0.5, message=LESION_CHECK_PASSED_MESSAGE),
        lesion_type_malignant_probability=0.35,
        lesion_type_top=(
            RankedLabel("nv", "Melanocytic nevus (nv)", 0.45),
            RankedLabel("mel", "Melanoma (mel)", 0.20),
            RankedLabel("bkl", "Benign keratosis-like lesion (bkl)", 0.15),
        ),
    )


def test_malignancy_donut_slices_colours_and_centre():
    figure = charts.malignancy_donut(fixed_prediction())
    assert isinstance(figure, Figure)
    slices = slices_of(figure)
    assert [(label, colour) for label, _, colour in slices] == [
        ("Malignant", MALIGNANT_COLOUR.lower()),
        ("Benign", BENIGN_COLOUR.lower()),
    ]
    assert [round(share, 6) for _, share, _ in slices] == [0.3, 0.7]
    texts = [t.get_text() for t in figure.texts]
    assert "30 %" in texts and "malignant" in texts
    assert not any("70" in t for t in texts), "the legend names the slices; the one number is the centre's"


def test_lesion_type_donut_top3_short_names_and_other():
    figure = charts.lesion_type_donut(fixed_prediction())
    slices = slices_of(figure)
    assert [label for label, _, _ in slices] == ["mole", "melanoma", "benign keratosis", "other"]
    assert [colour for _, _, colour in slices] == [
        LESION_COLOURS["nv"].lower(), LESION_COLOURS["mel"].lower(), LESION_COLOURS["bkl"].lower(), OTHER_COLOUR.lower()
    ]  # fmt: skip
    shares = [share for _, share, _ in slices]
    assert shares == pytest.approx([0.45, 0.20, 0.15, 0.20])  # other = akiec + bcc + df + vasc
    assert sum(shares) == pytest.approx(1.0)
    legend = " ".join(t.get_text() for t in figure.texts)
    assert "45 %" in legend and "mole" in legend  # the centre: the top type's share and short name
    assert "20" not in legend, "only the top type's share is shown, in the centre"


def test_rendered_svgs_keep_text_as_text_and_are_cheap():
    rendered = charts.render(fixed_prediction())
    for svg in (rendered.malignancy_svg, rendered.lesion_type_svg):
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "benign keratosis" in rendered.lesion_type_svg  # real <text>, readable and searchable
    assert "Malignant" in rendered.malignancy_svg
    assert rendered.ms < 1000  # generous: the timing itself is reported by the app and the benchmark


def slices_of(figure: Figure) -> list[tuple[str, float, str]]:
    """(label, share of the full circle, facecolor as #rrggbb) for each wedge of a donut, in drawing order."""
    wedges = [p for p in figure.patches if isinstance(p, Wedge)]
    return [(w.get_label(), (w.theta2 - w.theta1) / 360.0, to_hex(w.get_facecolor())) for w in wedges]
