"""The typed results of an evaluation: per-class numbers, the ROC curve, the binary call's numbers, one report per
data source (`EvalReport`) and the side-by-side `Evaluation`; each round-trips through JSON (metrics.json).
`metrics.compute_report` makes them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    # What the positive probability was (a DECISION_SCORES name: the package's own head or the lesion-type sum),
    # where a decision rule chose it; None for a package scored on its own output only.
    score_from: str | None = None


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
            if self.binary.score_from is not None:
                out["score_from"] = self.binary.score_from
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
                    score_from=b.get("score_from"),
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


def _roc_from_dict(raw: dict[str, Any] | None) -> RocCurve | None:
    if raw is None:
        return None
    return RocCurve(
        fpr=tuple(float(v) for v in raw["fpr"]),
        tpr=tuple(float(v) for v in raw["tpr"]),
        thresholds=tuple(math.inf if v is None else float(v) for v in raw["thresholds"]),
    )


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
