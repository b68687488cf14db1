"""train.metrics: scikit-learn behind our typed results, checked against small cases computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from skin_demo.train.metrics import choose_threshold, compute_report, wilson_interval
from skin_demo.train.results import EvalReport, Evaluation

# Ten images, three classes. Arg-max predictions are marked; three are wrong.
LABELS3 = ("a", "b", "c")
Y3 = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
P3 = np.array(
    [
        [0.7, 0.2, 0.1],  # a -> a
        [0.6, 0.3, 0.1],  # a -> a
        [0.5, 0.4, 0.1],  # a -> a
        [0.2, 0.7, 0.1],  # a -> b  (wrong)
        [0.1, 0.8, 0.1],  # b -> b
        [0.3, 0.6, 0.1],  # b -> b
        [0.6, 0.3, 0.1],  # b -> a  (wrong)
        [0.1, 0.1, 0.8],  # c -> c
        [0.2, 0.2, 0.6],  # c -> c
        [0.1, 0.6, 0.3],  # c -> b  (wrong)
    ]
)


def test_hand_computed_three_classes():
    r = compute_report(Y3, P3, LABELS3, task="toy")
    # Confusion matrix (rows true, columns predicted):
    #        a  b  c
    #   a  [ 3, 1, 0 ]   support 4
    #   b  [ 1, 2, 0 ]   support 3
    #   c  [ 0, 1, 2 ]   support 3
    #   predicted: 4, 4, 2
    assert r.confusion_matrix == ((3, 1, 0), (1, 2, 0), (0, 1, 2))
    assert r.n == 10
    assert r.accuracy == pytest.approx(7 / 10)
    a, b, c = r.per_class
    assert (a.support, b.support, c.support) == (4, 3, 3)
    assert (a.predicted, b.predicted, c.predicted) == (4, 4, 2)
    # precision = TP / predicted: a 3/4, b 2/4, c 2/2; recall = TP / support: a 3/4, b 2/3, c 2/3
    assert (a.precision, b.precision, c.precision) == pytest.approx((0.75, 0.5, 1.0))
    assert (a.recall, b.recall, c.recall) == pytest.approx((0.75, 2 / 3, 2 / 3))
    # F1 = 2TP / (2TP + FP + FN): a 6/8, b 4/(4+2+1) = 4/7, c 4/(4+0+1) = 4/5
    assert (a.f1, b.f1, c.f1) == pytest.approx((0.75, 4 / 7, 0.8))
    # balanced accuracy = mean recall = (3/4 + 2/3 + 2/3) / 3 = 25/36
    assert r.balanced_accuracy == pytest.approx(25 / 36)
    # macro F1 = (3/4 + 4/7 + 4/5) / 3 = (105 + 80 + 112) / 140 / 3 = 99/140
    assert r.macro_f1 == pytest.approx(99 / 140)
    # One-vs-rest AUC as Mann-Whitney (pairs positive > negative, ties count 1/2):
    #  a: positives 0.7 0.6 0.5 0.2 vs negatives 0.1 0.3 0.6 0.1 0.2 0.1 (24 pairs)
    #     0.7 beats 6; 0.6 beats 5, ties 1 -> 5.5; 0.5 beats 5; 0.2 beats 3, ties 1 -> 3.5; total 20 -> 5/6
    #  b: positives 0.8 0.6 0.3 vs negatives 0.2 0.3 0.4 0.7 0.1 0.2 0.6 (21 pairs)
    #     0.8 beats 7; 0.6 beats 5, ties 1 -> 5.5; 0.3 beats 3, ties 1 -> 3.5; total 16 -> 16/21
    #  c: positives 0.8 0.6 0.3 vs seven negatives of 0.1 -> 21/21 = 1
    assert (a.roc_auc, b.roc_auc, c.roc_auc) == pytest.approx((5 / 6, 16 / 21, 1.0))
    # macro AUC = (5/6 + 16/21 + 1) / 3 = (35 + 32 + 42) / 42 / 3 = 109/126
    assert r.macro_roc_auc == pytest.approx(109 / 126)
    assert r.roc_auc == r.macro_roc_auc
    assert r.binary is None
    # One ROC curve per class; c's scores separate perfectly, so its curve passes through (fpr 0, tpr 1).
    assert len(r.class_roc) == 3 and (0.0, 1.0) in zip(r.class_roc[2].fpr, r.class_roc[2].tpr)
    # b (F1 4/7 = 0.57) is above the 0.5 floor; with a 0.6 floor it is the one weak class.
    assert r.weak_classes() == []
    assert r.weak_classes(floor=0.6) == ["b"]


# Eight images, two labels; the score is p(malignant).
#   y:           0    0    0    0    0    1    1    1
#   p:          0.1  0.2  0.4  0.4  0.7  0.4  0.8  0.9
Y2 = np.array([0, 0, 0, 0, 0, 1, 1, 1])
PM = np.array([0.1, 0.2, 0.4, 0.4, 0.7, 0.4, 0.8, 0.9])
P2 = np.stack([1 - PM, PM], axis=1)


def test_hand_computed_binary():
    r = compute_report(Y2, P2, ("benign", "malignant"), task="malignancy")
    bm = r.binary
    assert bm is not None and bm.positive_label == "malignant" and bm.threshold == 0.5
    # AUC: positives 0.9 and 0.8 beat all 5 negatives; 0.4 beats 0.1, 0.2 and ties two 0.4s -> 3; 13/15
    assert bm.roc_auc == pytest.approx(13 / 15)
    assert r.roc_auc == bm.roc_auc
    # At 0.5: malignant calls 0.7 (FP), 0.8, 0.9 -> TP 2, FN 1, FP 1, TN 4
    assert bm.sensitivity == pytest.approx(2 / 3)
    assert bm.specificity == pytest.approx(4 / 5)
    assert r.accuracy == pytest.approx(6 / 8)
    assert r.confusion_matrix == ((4, 1), (1, 2))
    # At 0.4 (>=): all three positives found, and three negatives (0.4, 0.4, 0.7) called malignant.
    r04 = compute_report(Y2, P2, ("benign", "malignant"), task="malignancy", threshold=0.4)
    assert (r04.binary.sensitivity, r04.binary.specificity) == pytest.approx((1.0, 2 / 5))
    assert r04.confusion_matrix == ((2, 3), (0, 3))
    # ROC by decreasing threshold; (fp, tp) counts: 0.9 (0,1), 0.8 (0,2), 0.7 (1,2), 0.4 (3,3), 0.2 (4,3),
    # 0.1 (5,3). The 0.2 point lies on the line from 0.4 to 0.1 and is dropped.
    roc = bm.roc
    assert roc.thresholds == (math.inf, 0.9, 0.8, 0.7, 0.4, 0.1)
    assert roc.fpr == pytest.approx((0, 0, 0, 1 / 5, 3 / 5, 1))
    assert roc.tpr == pytest.approx((0, 1 / 3, 2 / 3, 2 / 3, 1, 1))
    assert r.headline()["sensitivity"] == pytest.approx(0.6667)


def test_choose_threshold_is_the_highest_that_reaches_the_sensitivity():
    # Positive scores, highest first: 0.9, 0.8, 0.4.
    assert choose_threshold(Y2, PM, 0.9) == 0.4  # needs ceil(2.7) = 3 positives
    assert choose_threshold(Y2, PM, 1.0) == 0.4
    assert choose_threshold(Y2, PM, 0.6) == 0.8  # needs ceil(1.8) = 2
    assert choose_threshold(Y2, PM, 2 / 3) == 0.8  # exactly 2 of 3, despite float rounding
    assert choose_threshold(Y2, PM, 0.3) == 0.9
    # 0.7 * 10 is 7.000000000000001 in floating point: it must still ask for 7 of 10, not 8.
    y = np.ones(10, dtype=bool)
    scores = np.linspace(1.0, 0.1, 10)
    assert choose_threshold(y, scores, 0.7) == pytest.approx(scores[6])
    # The chosen threshold really gives the promised sensitivity, and a hair higher does not.
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300), 2)
    t = choose_threshold(y, s, 0.9)
    assert (s[y] >= t).mean() >= 0.9
    assert (s[y] >= np.nextafter(t, 2.0)).mean() < 0.9


def test_choose_threshold_refuses_bad_input():
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(np.zeros(4, bool), np.linspace(0, 1, 4), 0.9)
    with pytest.raises(ValueError, match="min_sensitivity"):
        choose_threshold(Y2, PM, 0.0)
    with pytest.raises(ValueError, match="same length"):
        choose_threshold(Y2, PM[:3], 0.9)


def test_degenerate_cases_give_none_not_a_crash():
    # Class "c" has no test images, and the model never predicts "b".
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.05, 0.05], [0.4, 0.1, 0.5], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    r = compute_report(y, p, LABELS3, task="toy")
    a, b, c = r.per_class
    assert c.recall is None and c.roc_auc is None and c.support == 0 and c.recall_ci is None
    assert r.class_roc[2] is None
    assert c.precision == 0.0 and c.f1 == 0.0  # predicted once, wrongly
    assert b.precision is None and b.recall == 0.0 and b.f1 == 0.0
    assert r.balanced_accuracy == pytest.approx((0.5 + 0.0) / 2)  # over the classes that have images
    assert r.weak_classes() == ["b", "a"]
    json.loads(r.to_json())
    # A single-class test set: every AUC is undefined, the report still builds and serialises.
    one = compute_report(np.zeros(3, int), np.full((3, 2), 0.5), ("benign", "malignant"), task="malignancy")
    assert one.binary.roc_auc is None and one.binary.roc is None and one.binary.sensitivity is None
    assert one.binary.specificity == 0.0  # p = 0.5 >= 0.5: all called malignant
    assert one.macro_roc_auc is None
    assert EvalReport.from_json(one.to_json()) == one


def test_bad_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        compute_report(Y3, P3[:, :2], LABELS3, task="toy")
    with pytest.raises(ValueError, match="outside"):
        compute_report(np.array([0, 3]), P3[:2], LABELS3, task="toy")
    with pytest.raises(ValueError, match="empty"):
        compute_report(np.array([], int), np.zeros((0, 3)), LABELS3, task="toy")
    with pytest.raises(ValueError, match="two-label"):
        compute_report(Y3, P3, LABELS3, task="toy", threshold=0.3)
    with pytest.raises(ValueError, match="positive_label"):
        compute_report(Y2, P2, ("benign", "malignant"), task="m", positive_label="x")


def test_report_round_trips_through_json():
    r = compute_report(Y2, P2, ("benign", "malignant"), task="malignancy", split="s.csv:test")
    text = r.to_json()
    raw = json.loads(text)
    assert raw["binary"]["roc"]["thresholds"][0] is None  # +inf is not JSON
    assert raw["split"] == "s.csv:test" and raw["confusion_matrix"] == [[4, 1], [1, 2]]
    assert EvalReport.from_json(text) == r
    r3 = compute_report(Y3, P3, LABELS3, task="toy")
    assert EvalReport.from_dict(json.loads(r3.to_json())) == r3
    with pytest.raises(ValueError, match="not an evaluation report"):
        EvalReport.from_dict({"task": "x"})


def test_wilson_interval():
    assert wilson_interval(0, 0) is None
    low, high = wilson_interval(12, 20)
    # Textbook value for 12/20: 0.387 to 0.781
    assert (low, high) == pytest.approx((0.3866, 0.7812), abs=1e-4)
    assert wilson_interval(5, 5)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 5)[0] == pytest.approx(0.0)


def test_headline_names_the_classes_balanced_accuracy_is_over():
    # An ISIC 2017-like test set for a 7-class model: only nv, bkl and mel have images; one bkl is called df.
    labels = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    y = np.array([5, 5, 5, 5, 2, 2, 4, 4, 4])
    pred = np.array([5, 5, 5, 4, 2, 3, 4, 5, 5])
    probs = np.full((9, 7), 0.01)
    probs[np.arange(9), pred] = 0.94
    r = compute_report(y, probs, labels, task="lesion_type")
    # recall nv 3/4, bkl 1/2, mel 1/3 -> mean over the three present classes; df still counts as a prediction.
    assert r.balanced_accuracy == pytest.approx((3 / 4 + 1 / 2 + 1 / 3) / 3)
    assert r.confusion_matrix[2][3] == 1 and r.class_metrics("df").support == 0
    # F1 = 2TP / (2TP + FP + FN): bkl 2/3, df 0, mel 2/5, nv 6/9; macro over the labels present or predicted.
    assert r.macro_f1 == pytest.approx((2 / 3 + 0 + 2 / 5 + 2 / 3) / 4)
    assert r.class_metrics("akiec").f1 is None and r.class_metrics("df").f1 == 0.0
    headline = r.headline()
    assert headline["balanced_accuracy_over"] == ["bkl", "mel", "nv"]
    assert headline["weak_classes"] == ["mel"]  # F1 0.4; bkl's recall 0.5 is not below the 0.5 floor
    assert "balanced_accuracy_over" not in compute_report(Y3, P3, LABELS3, task="toy").headline()


def test_predicted_calls_made_elsewhere_override_the_threshold_rule():
    # The caller's calls (postprocess.malignancy_flag in evaluate) decide sensitivity; the scores still give the AUC.
    r = compute_report(Y2, P2, ("benign", "malignant"), task="malignancy", threshold=0.5,
                       predicted=np.array([0, 0, 0, 0, 0, 1, 1, 0]))
    assert r.binary.sensitivity == pytest.approx(2 / 3) and r.binary.specificity == 1.0
    assert r.binary.roc_auc == pytest.approx(13 / 15)
    with pytest.raises(ValueError, match="predicted must hold"):
        compute_report(Y2, P2, ("benign", "malignant"), task="m", predicted=np.array([0, 2, 0, 0, 0, 1, 1, 0]))


def test_evaluation_keeps_one_report_per_source_and_round_trips():
    ham = compute_report(Y2, P2, ("benign", "malignant"), task="malignancy", threshold=0.4, split="ham:test")
    isic = compute_report(Y2[::-1], P2, ("benign", "malignant"), task="malignancy", threshold=0.4, split="isic:test")
    evaluation = Evaluation("malignancy", ("benign", "malignant"), {"ham10000": ham, "isic2017": isic},
                            targets={"ham10000": {"roc_auc": 0.95}}, extra={"package": "p"})
    headline = evaluation.headline()
    assert list(headline) == ["ham10000", "isic2017"]
    assert headline["ham10000"]["split"] == "ham:test" and headline["ham10000"]["targets"] == {"roc_auc": 0.95}
    assert headline["ham10000"]["sensitivity"] == 1.0 and "targets" not in headline["isic2017"]
    assert headline["isic2017"]["roc_auc"] != headline["ham10000"]["roc_auc"]
    again = Evaluation.from_json(evaluation.to_json())
    assert again == evaluation and list(again.reports) == ["ham10000", "isic2017"]
    with pytest.raises(ValueError, match="not an evaluation"):
        Evaluation.from_dict({"task": "x"})
