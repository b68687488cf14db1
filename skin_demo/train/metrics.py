"""Classification metrics for a model package's evaluation, computed by scikit-learn, returned as typed results
(`results.py`).

`compute_report` turns true labels and predicted probabilities into an `EvalReport`: accuracy, balanced accuracy,
per-class precision / recall / F1 / one-vs-rest ROC AUC, the confusion matrix and, for a two-label task, the ROC
curve with sensitivity and specificity at the decision threshold. `choose_threshold` picks a decision threshold on
validation data.

Undefined quantities (a class with no test images has no recall, one the model never predicts has no precision,
an ROC AUC needs both positives and negatives) are None, never NaN, and never an exception.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as sk

from skin_demo.postprocess import DEFAULT_THRESHOLD, reaches

from skin_demo.train.results import BinaryMetrics, ClassMetrics, EvalReport, RocCurve


def compute_report(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    task: str,
    positive_label: str | None = None,
    threshold: float | None = None,
    predicted: np.ndarray | None = None,
    split: str | None = None,
    score_from: str | None = None,
) -> EvalReport:
    """Measure predicted probabilities `probs` [N, K] against true label indices `y_true` [N].

    The predicted label is the arg-max of `probs`, except for a two-label task, where it is the positive label
    when p(positive) reaches `threshold` (`postprocess.reaches`; default `postprocess.DEFAULT_THRESHOLD`): the
    rule the app applies with the package's decision threshold, so accuracy and the confusion matrix describe what
    a user would see. `predicted` (label
    indices [N]) overrides that rule with calls made elsewhere (evaluate passes postprocess.malignancy_flag's), and
    `score_from` records what the positive probability was (evaluate: the decision rule's score for the domain).
    `positive_label` defaults to "malignant" when it is a label, else to the second label.

    Raises ValueError for mismatched shapes, label indices outside [0, K) or an empty input.
    """
    labels = tuple(str(v) for v in labels)
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    k = len(labels)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probs must have shape [N, {k}] for labels {list(labels)}, got {list(p.shape)}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true must have shape [{p.shape[0]}], got {list(y.shape)}")
    if y.shape[0] == 0:
        raise ValueError("nothing to evaluate: y_true is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_true must hold integer label indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true has label indices outside [0, {k})")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contains NaN or infinite values")
    y = y.astype(np.int64)

    pos = None
    if k == 2:
        if positive_label is None:
            positive_label = "malignant" if "malignant" in labels else labels[1]
        if positive_label not in labels:
            raise ValueError(f"positive_label {positive_label!r} is not one of {list(labels)}")
        pos = labels.index(positive_label)
        threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        pred = np.where([reaches(score, threshold) for score in p[:, pos].tolist()], pos, 1 - pos)
    else:
        if positive_label is not None or threshold is not None or score_from is not None:
            raise ValueError("positive_label, threshold and score_from only apply to a two-label task")
        pred = p.argmax(axis=1)
    if predicted is not None:
        pred = np.asarray(predicted, dtype=np.int64)
        if pred.shape != y.shape or pred.min() < 0 or pred.max() >= k:
            raise ValueError(f"predicted must hold [{y.shape[0]}] label indices in [0, {k})")

    everything = list(range(k))
    cm = sk.confusion_matrix(y, pred, labels=everything)
    # zero_division=nan marks what is undefined (precision of a label never predicted, recall of one never seen);
    # F1 is 2TP / (2TP + FP + FN), so a present label the model never predicts gets 0, not undefined.
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y, pred, labels=everything, zero_division=np.nan
    )
    aucs = [roc_auc(y == i, p[:, i]) for i in everything]
    per_class = tuple(
        ClassMetrics(
            label=label,
            support=int(support[i]),
            predicted=int(cm[:, i].sum()),
            precision=_none_if_nan(precision[i]),
            recall=_none_if_nan(recall[i]),
            f1=_none_if_nan(f1[i]),
            roc_auc=aucs[i],
            recall_ci=wilson_interval(int(cm[i, i]), int(support[i])),
        )
        for i, label in enumerate(labels)
    )
    binary = None
    if pos is not None:
        binary = BinaryMetrics(
            positive_label=positive_label,
            threshold=threshold,
            roc_auc=aucs[pos],
            sensitivity=per_class[pos].recall,
            specificity=per_class[1 - pos].recall,
            roc=_roc(y == pos, p[:, pos]),
            score_from=score_from,
        )
    defined_aucs = [a for a in aucs if a is not None]
    balanced = balanced_accuracy(y, pred)
    return EvalReport(
        task=task,
        labels=labels,
        n=int(y.shape[0]),
        accuracy=float(sk.accuracy_score(y, pred)),
        balanced_accuracy=float(balanced),
        # Macro F1 over the labels present or predicted (sklearn's default label set).
        macro_f1=float(sk.f1_score(y, pred, average="macro", zero_division=0.0)),
        macro_roc_auc=float(np.mean(defined_aucs)) if defined_aucs else None,
        per_class=per_class,
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in cm),
        binary=binary,
        split=split,
        class_roc=() if k == 2 else tuple(_roc(y == i, p[:, i]) for i in everything),
    )


def choose_threshold(
    y_true: Sequence[bool] | np.ndarray, p_positive: np.ndarray, min_sensitivity: float
) -> float:
    """The highest threshold t for which calling p >= t positive reaches `min_sensitivity` on these data.

    Use VALIDATION data (never the test split the package is reported on): the result becomes the package's
    `decision_threshold`. `y_true` is truthy for positives (the malignant images); `p_positive` is the model's
    probability of the positive label as serving computes it (softmax of logits / temperature). The answer is
    always one of the positive scores: the k-th highest, k = ceil(min_sensitivity * positives).

    Raises ValueError when there are no positives, the shapes differ or min_sensitivity is not in (0, 1].
    """
    is_pos = np.asarray(y_true).astype(bool)
    scores = np.asarray(p_positive, dtype=np.float64)
    if is_pos.shape != scores.shape or is_pos.ndim != 1:
        raise ValueError(f"y_true and p_positive must be 1-D and the same length, got {is_pos.shape}, {scores.shape}")
    if not 0.0 < min_sensitivity <= 1.0:
        raise ValueError(f"min_sensitivity must be in (0, 1], got {min_sensitivity!r}")
    if not is_pos.any():
        raise ValueError("cannot choose a threshold: the data have no positive (malignant) examples")
    if is_pos.all():  # roc_curve needs a negative; one scored below every positive changes no threshold
        scores = np.r_[scores, scores.min() - 1.0]
        is_pos = np.r_[is_pos, False]
    # Every distinct score is a threshold, highest first; tpr only grows. The tolerance keeps 0.7 from asking
    # for 8 of 10 positives because 0.7 * 10 is 7.000000000000001 in floating point.
    _, tpr, thresholds = sk.roc_curve(is_pos, scores, drop_intermediate=False)
    reached = tpr >= min_sensitivity - 1e-9
    reached[0] = False  # thresholds[0] is +inf: nothing called positive
    return float(thresholds[np.argmax(reached)])


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (scipy); None when there are no trials.

    Used for per-class recall: with 20 test images of a class a recall of 0.60 could be anywhere from 0.39 to 0.78,
    and the report should say so.
    """
    if trials <= 0:
        return None
    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the labels present in `y_true`. A source with 3 of the 7 classes (ISIC 2017) still gets
    predictions of the other 4, which is exactly what should count as wrong, and a slice with one class gets that
    class's recall, so sklearn's warnings about either are noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        warnings.filterwarnings("ignore", message="A single label was found")
        return float(sk.balanced_accuracy_score(y_true, y_pred))


def roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """One-vs-rest ROC AUC, or None without both positives and negatives."""
    if is_positive.all() or not is_positive.any():
        return None
    return float(sk.roc_auc_score(is_positive, scores))


def _roc(is_positive: np.ndarray, scores: np.ndarray) -> RocCurve | None:
    """The ROC curve (collinear points dropped, first threshold +inf), or None without both classes."""
    if is_positive.all() or not is_positive.any():
        return None
    fpr, tpr, thresholds = sk.roc_curve(is_positive, scores)
    return RocCurve(fpr=tuple(map(float, fpr)), tpr=tuple(map(float, tpr)), thresholds=tuple(map(float, thresholds)))


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
