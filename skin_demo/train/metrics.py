"""Classification metrics for a model package's evaluation, computed by scikit-learn, returned as typed results.

`compute_report` turns true labels and predicted probabilities into an `EvalReport`: accuracy, balanced accuracy,
per-class precision / recall / F1 / one-vs-rest ROC AUC, the confusion matrix and, for a two-label task, the ROC
curve with sensitivity and specificity at the decision threshold. `Evaluation` holds one report per data source
(HAM10000 test, ISIC 2017 test, ...), side by side. `choose_threshold` picks a decision threshold on validation data.

Undefined quantities (a class with no test images has no recall, one the model never predicts has no precision,
an ROC AUC needs both positives and negatives) are None, never NaN, and never an exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as sk

from skin_demo.postprocess import DEFAULT_THRESHOLD, reaches

# A class counts as weak when its F1 or its recall on the held-out split is below this.
WEAK_CLASS_FLOOR = 0.5
# Fewer test images than this and a per-class number is too noisy to read on its own.
SMALL_SUPPORT = 30


@dataclass(frozen=True)
class ClassMetrics:
    """One label's numbers, computed one-vs-rest."""

    label: str
    support: int  # test images whose true label is this one
    predicted: int  # test images the model assigned to this label
    precision: float | None  # None when the model never predicts the label
    recall: float | None  # None when the label has no test images
    f1: float | None  # None when the label is neither present nor predicted
    roc_auc: float | None  # None when the label has no test images (or only test images)
    recall_ci: tuple[float, float] | None = None  # 95% Wilson interval for the recall


@dataclass(frozen=True)
class RocCurve:
    """ROC curve points, by decreasing threshold; collinear points are dropped (as scikit-learn does)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    # thresholds[0] is +inf: the point (0, 0) where nothing is called positive; it is written to JSON as null.
    thresholds: tuple[float, ...]


@dataclass(frozen=True)
class BinaryMetrics:
    """The numbers of a two-label task, with the positive label's probability as the score."""

    positive_label: str
    threshold: float  # positive when p(positive) >= threshold
    roc_auc: float | None
    sensitivity: float | None  # recall of the positive label at the threshold
    specificity: float | None  # recall of the negative label at the threshold
    roc: RocCurve | None


@dataclass(frozen=True)
class EvalReport:
    """Everything `compute_report` measured; `to_dict`/`from_dict` round-trip it through metrics.json."""

    task: str
    labels: tuple[str, ...]
    n: int
    accuracy: float
    balanced_accuracy: float | None  # mean recall over the labels that have test images (ISIC 2017: nv/bkl/mel)
    macro_f1: float | None  # mean F1 over the labels that are present or predicted
    macro_roc_auc: float | None  # mean one-vs-rest ROC AUC over the labels where it is defined
    per_class: tuple[ClassMetrics, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted label
    binary: BinaryMetrics | None = None
    split: str | None = None  # what was evaluated, e.g. "models/ham10000_split.csv:test"
    extra: dict[str, Any] = field(default_factory=dict)  # provenance of the run (package, timings, ...)
    # One-vs-rest ROC curve per label of a multi-class task (None where undefined); last, as it is the bulk of
    # metrics.json. A two-label task has its one curve in `binary.roc`.
    class_roc: tuple[RocCurve | None, ...] = ()

    @property
    def roc_auc(self) -> float | None:
        """The headline ROC AUC: the binary AUC for a two-label task, else the macro one-vs-rest AUC."""
        if self.binary is not None:
            return self.binary.roc_auc
        return self.macro_roc_auc

    def class_metrics(self, label: str) -> ClassMetrics:
        """The `ClassMetrics` of `label`; raises KeyError for a label the report does not have."""
        for item in self.per_class:
            if item.label == label:
                return item
        raise KeyError(label)

    def weak_classes(self, floor: float = WEAK_CLASS_FLOOR) -> list[str]:
        """Labels with test images whose F1 or recall is below `floor`, worst F1 first."""
        weak = [
            c for c in self.per_class if c.support > 0 and ((c.f1 or 0.0) < floor or (c.recall or 0.0) < floor)
        ]
        return [c.label for c in sorted(weak, key=lambda c: (c.f1 or 0.0, c.label))]

    def headline(self) -> dict[str, Any]:
        """The summary numbers that go into a package config's `metrics` (None where undefined)."""
        out: dict[str, Any] = {
            "n": self.n,
            "balanced_accuracy": _round(self.balanced_accuracy),
            "accuracy": _round(self.accuracy),
            "macro_f1": _round(self.macro_f1),
            "roc_auc": _round(self.roc_auc),
        }
        if self.split is not None:
            out = {"split": self.split, **out}
        present = [c.label for c in self.per_class if c.support > 0]
        if len(present) < len(self.labels):
            out["balanced_accuracy_over"] = present
        if self.binary is not None:
            out["sensitivity"] = _round(self.binary.sensitivity)
            out["specificity"] = _round(self.binary.specificity)
            out["threshold"] = _round(self.binary.threshold)
        out["weak_classes"] = self.weak_classes()
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, +inf thresholds become None)."""
        return _jsonable(dataclasses.asdict(self))

    def to_json(self) -> str:
        """`to_dict` as indented JSON text ending in a newline."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvalReport:
        """Rebuild a report from `to_dict` output (e.g. a package's eval/metrics.json); raises ValueError."""
        try:
            binary = None
            if raw.get("binary") is not None:
                b = dict(raw["binary"])
                binary = BinaryMetrics(
                    positive_label=str(b["positive_label"]),
                    threshold=float(b["threshold"]),
                    roc_auc=_opt_float(b.get("roc_auc")),
                    sensitivity=_opt_float(b.get("sensitivity")),
                    specificity=_opt_float(b.get("specificity")),
                    roc=_roc_from_dict(b.get("roc")),
                )
            per_class = tuple(
                ClassMetrics(
                    label=str(c["label"]),
                    support=int(c["support"]),
                    predicted=int(c["predicted"]),
                    precision=_opt_float(c.get("precision")),
                    recall=_opt_float(c.get("recall")),
                    f1=_opt_float(c.get("f1")),
                    roc_auc=_opt_float(c.get("roc_auc")),
                    recall_ci=None if c.get("recall_ci") is None else tuple(float(v) for v in c["recall_ci"]),
                )
                for c in raw["per_class"]
            )
            return cls(
                task=str(raw["task"]),
                labels=tuple(str(v) for v in raw["labels"]),
                n=int(raw["n"]),
                accuracy=float(raw["accuracy"]),
                balanced_accuracy=_opt_float(raw.get("balanced_accuracy")),
                macro_f1=_opt_float(raw.get("macro_f1")),
                macro_roc_auc=_opt_float(raw.get("macro_roc_auc")),
                per_class=per_class,
                confusion_matrix=tuple(tuple(int(v) for v in row) for row in raw["confusion_matrix"]),
                binary=binary,
                split=raw.get("split"),
                extra=dict(raw.get("extra") or {}),
                class_roc=tuple(_roc_from_dict(r) for r in raw.get("class_roc") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an evaluation report: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> EvalReport:
        """Parse `to_json` output; raises ValueError for anything else."""
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class Evaluation:
    """One package measured on the held-out set of each data source, side by side (a package's eval/metrics.json).

    `reports` maps a source name ("ham10000", "isic2017") to its `EvalReport`, in the order they were evaluated;
    `targets` maps a source to {headline metric: the minimum the project aims for}.
    """

    task: str
    labels: tuple[str, ...]
    reports: dict[str, EvalReport]
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # package, runtime, when

    def headline(self) -> dict[str, dict[str, Any]]:
        """Per source, the numbers that go into a package config's `metrics`, with that source's targets."""
        out = {}
        for source, report in self.reports.items():
            out[source] = report.headline()
            if self.targets.get(source):
                out[source]["targets"] = dict(self.targets[source])
        return out

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "task": self.task,
                "labels": self.labels,
                "reports": {source: report.to_dict() for source, report in self.reports.items()},
                "targets": self.targets,
                "extra": self.extra,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Evaluation:
        """Rebuild from `to_dict` output; raises ValueError for anything else."""
        try:
            return cls(
                task=str(raw["task"]),
                labels=tuple(str(v) for v in raw["labels"]),
                reports={str(k): EvalReport.from_dict(v) for k, v in raw["reports"].items()},
                targets={str(k): {str(m): float(x) for m, x in v.items()} for k, v in (raw.get("targets") or {}).items()},
                extra=dict(raw.get("extra") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not an evaluation: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> Evaluation:
        return cls.from_dict(json.loads(text))


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
) -> EvalReport:
    """Measure predicted probabilities `probs` [N, K] against true label indices `y_true` [N].

    The predicted label is the arg-max of `probs`, except for a two-label task, where it is the positive label
    when p(positive) reaches `threshold` (`postprocess.reaches`; default `postprocess.DEFAULT_THRESHOLD`): the
    rule the app applies with the package's decision threshold, so accuracy and the confusion matrix describe what
    a user would see. `predicted` (label
    indices [N]) overrides that rule with calls made elsewhere (evaluate passes postprocess.malignancy_flag's).
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
        if positive_label is not None or threshold is not None:
            raise ValueError("positive_label and threshold only apply to a two-label task")
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
    predictions of the other 4, which is exactly what should count as wrong, so sklearn's warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
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


def _roc_from_dict(raw: dict[str, Any] | None) -> RocCurve | None:
    if raw is None:
        return None
    return RocCurve(
        fpr=tuple(float(v) for v in raw["fpr"]),
        tpr=tuple(float(v) for v in raw["tpr"]),
        thresholds=tuple(math.inf if v is None else float(v) for v in raw["thresholds"]),
    )


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
