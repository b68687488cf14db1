"""The malignancy decision rule, per image domain: which score the call is made on, and at what threshold.

For each domain (dermoscopy, clinical) the rule chooses, on that domain's validation rows,
- the score: the malignancy package's own P(malignant) ("binary_head") or the lesion-type package's malignant
  sum ("lesion_type_sum"), whichever has the higher validation ROC AUC (mean over the domain's sources);
- the threshold: per source of the domain, the highest threshold that keeps validation sensitivity at least
  MIN_SENSITIVITY; the lowest of those (a threshold pooled over sources met the target on the big source only).

Serving applies the result (`decision_scores`, `decision_thresholds` in the malignancy package's config) through
`skin_demo.postprocess`; `decide` computes it from packages, so fitting new models and re-deciding shipped ones
run the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skin_demo.train.metrics import choose_threshold, roc_auc

MIN_SENSITIVITY = 0.90  # each domain's threshold keeps validation sensitivity at least here, on every source
SCORES = ("binary_head", "lesion_type_sum")


@dataclass(frozen=True)
class DomainDecision:
    """How one domain's malignancy call is made, and the validation numbers that chose it."""

    domain: str
    score: str  # one of SCORES
    threshold: float
    threshold_per_source: dict[str, float]
    val_auc: dict[str, dict[str, float]]  # score -> source -> ROC AUC, plus "mean"

    def to_json(self) -> dict:
        return {"score": self.score, "threshold": self.threshold, "threshold_per_source": self.threshold_per_source,
                "val_auc": self.val_auc}


def lowest_group_threshold(positive: np.ndarray, scores: np.ndarray, groups: np.ndarray,
                           min_sensitivity: float) -> tuple[float, dict[str, float]]:
    """Per group, the highest threshold that calls at least `min_sensitivity` of its positives positive; returns
    the lowest of them rounded down to 1e-4 (rounding up could lift it past the score that met the target) and
    kept strictly inside (0, 1), with the per-group values. Groups without positives are skipped."""
    raw = {str(g): choose_threshold(positive[groups == g], scores[groups == g], min_sensitivity)
           for g in np.unique(groups) if positive[groups == g].any()}
    if not raw:
        raise ValueError("cannot choose a threshold: no group has a positive example")
    lowest = math.floor(min(raw.values()) * 1e4) / 1e4
    return min(max(lowest, 1e-4), 1 - 1e-4), {g: round(t, 4) for g, t in raw.items()}


def choose_domain_decisions(scores: dict[str, np.ndarray], malignant: np.ndarray, sources: np.ndarray,
                            domains: np.ndarray, min_sensitivity: float = MIN_SENSITIVITY) -> dict[str, DomainDecision]:
    """One `DomainDecision` per domain present in `domains`, from validation rows.

    `scores` maps each candidate in SCORES to P(malignant) per row; ties in AUC go to the binary head.
    """
    decisions = {}
    for domain in np.unique(domains):
        rows = domains == domain
        val_auc = {}
        for name, values in scores.items():
            per_source = {}
            for s in np.unique(sources[rows]):
                auc = roc_auc(malignant[rows & (sources == s)].astype(bool), values[rows & (sources == s)])
                per_source[str(s)] = None if auc is None else round(auc, 4)
            defined = [v for v in per_source.values() if v is not None]
            val_auc[name] = {**per_source, "mean": round(float(np.mean(defined)), 4) if defined else None}
        score = max(scores, key=lambda name: (val_auc[name]["mean"] or 0.0, name == "binary_head"))
        threshold, per_source = lowest_group_threshold(malignant[rows], scores[score][rows], sources[rows],
                                                       min_sensitivity)
        decisions[str(domain)] = DomainDecision(str(domain), score, threshold, per_source, val_auc)
    return decisions
