"""The head on the pooled features: scikit-learn's class-balanced multinomial logistic regression over the three
image domains (dermoscopy, clinical, not_lesion), its penalty and pass threshold chosen on validation, copied into
the linear layer the package exports."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from skin_demo.postprocess import DOMAIN_LABELS, NOT_LESION
from skin_demo.train.decision import lowest_group_threshold
from skin_demo.train.lesion_check.data import Item

log = logging.getLogger("skin_demo.train")

MIN_VAL_PASS_RATE = 0.99  # every positive source passes at least this share of its validation images
C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 1.0)  # inverse L2 penalties tried; validation picks one


@dataclass(frozen=True)
class Head:
    """A fitted regression on raw features (standardisation folded in) and its validation numbers."""

    c: float
    weights: np.ndarray  # [3, D], rows in DOMAIN_LABELS order
    bias: np.ndarray  # [3]
    threshold: float  # P(lesion) = P(dermoscopy) + P(clinical) at or above this passes
    val_rejection: float
    val_domain_accuracy: float  # share of passed validation lesions given their own domain
    val_pass: dict[str, float]

    @property
    def val_score(self) -> float:
        """What chooses the penalty: rejection of non-lesions and the right domain for lesions, equally."""
        return (self.val_rejection + self.val_domain_accuracy) / 2


def fit_regression(features: np.ndarray, labels: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced multinomial L2 logistic regression (scikit-learn) on standardised features; returns
    (weights [K, D], bias [K]) on the raw features, the standardisation folded in, so the package's linear layer
    takes the backbone's output as it is. `labels` are indices into DOMAIN_LABELS."""
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
    model.fit(scaler.transform(features), labels)
    if list(model.classes_) != list(range(len(DOMAIN_LABELS))):
        raise ValueError(f"every label of {DOMAIN_LABELS} needs fitting images; got classes {model.classes_}")
    weights = model.coef_ / scaler.scale_
    bias = model.intercept_ - weights @ scaler.mean_
    return weights, bias


def probabilities(features: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Softmax of the regression's logits [N, K], in float64 (what chooses the penalty and the threshold)."""
    logits = features.astype(np.float64) @ weights.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def lesion_scores(probs: np.ndarray) -> np.ndarray:
    """P(lesion): everything but not_lesion."""
    return 1.0 - probs[:, DOMAIN_LABELS.index(NOT_LESION)]


def linear_head(weights: np.ndarray, bias: np.ndarray) -> torch.nn.Linear:
    """The regression as a torch linear layer (logits in DOMAIN_LABELS order)."""
    head = torch.nn.Linear(weights.shape[1], weights.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weights).float())
        head.bias.copy_(torch.from_numpy(bias).float())
    return head


def choose_head(x_fit: np.ndarray, y_fit: np.ndarray, x_val_pos: np.ndarray, val_pos: list[Item],
                x_val_neg: np.ndarray, min_pass_rate: float = MIN_VAL_PASS_RATE) -> Head:
    """Fit one regression per C_GRID penalty; keep the one with the best `Head.val_score` at its own threshold
    (ties: the stronger penalty). The threshold passes `min_pass_rate` of every positive source's validation
    images (`decision.lowest_group_threshold`, the rule the malignancy thresholds use too)."""
    groups = np.array([i.group for i in val_pos])
    own_domain = np.array([DOMAIN_LABELS.index(i.label) for i in val_pos])
    best = None
    for c in sorted(C_GRID):
        weights, bias = fit_regression(x_fit, y_fit, c)
        pos_probs = probabilities(x_val_pos, weights, bias)
        pos_scores = lesion_scores(pos_probs)
        threshold, _ = lowest_group_threshold(np.ones(len(val_pos), bool), pos_scores, groups, min_pass_rate)
        passed = pos_scores >= threshold
        likelier = pos_probs[:, :2].argmax(1)  # dermoscopy or clinical, whichever is likelier
        head = Head(
            c=c, weights=weights, bias=bias, threshold=threshold,
            val_rejection=round(float(np.mean(lesion_scores(probabilities(x_val_neg, weights, bias)) < threshold)), 4),
            val_domain_accuracy=round(float(np.mean(likelier[passed] == own_domain[passed])), 4),
            val_pass={g: round(float(np.mean(passed[groups == g])), 4) for g in sorted(set(groups))},
        )
        log.info("C %g: threshold %.4f, val rejection %.4f, domain accuracy %.4f", c, threshold, head.val_rejection,
                 head.val_domain_accuracy)
        if best is None or head.val_score > best.val_score:
            best = head
    return best
