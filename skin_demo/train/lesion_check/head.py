"""The head on the pooled features: a small scikit-learn MLP over the three image domains (dermoscopy, clinical,
not_lesion), trained class-balanced, its penalty and pass threshold chosen on validation, copied into the torch
layers the package exports.

A linear head (logistic regression) separated dermoscopy from everything else, but not an ordinary photo of a
lesion from a rash photo: on the 128-px features, at the threshold that passed 95 % of the clinical validation
photos, it rejected 82 % of the validation non-lesions but only 49 % of the rashes; one hidden layer rejected 87 %
of the non-lesions under the same pass rates.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from skin_demo.postprocess import DOMAIN_LABELS, NOT_LESION
from skin_demo.train.decision import lowest_group_threshold
from skin_demo.train.lesion_check.data import Item

log = logging.getLogger("skin_demo.train")

MIN_VAL_PASS_RATE = {"dermoscopy": 0.99, "clinical": 0.95}  # per domain: each source passes this share of its val
HIDDEN_UNITS = 256
MAX_EPOCHS = 80  # a fixed budget of passes over the fitting features, a regulariser beside the L2 penalty
ALPHA_GRID = (1e-2, 1e-1, 1.0)  # L2 penalties tried; validation picks one


@dataclass(frozen=True)
class Head:
    """A fitted MLP on raw features (standardisation folded in) and its validation numbers."""

    alpha: float
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights [out, in], bias [out]) per layer, ReLU between
    threshold: float  # P(lesion) = P(dermoscopy) + P(clinical) at or above this passes
    val_rejection: float
    val_domain_accuracy: float  # share of passed validation lesions given their own domain
    val_pass: dict[str, float]

    @property
    def val_score(self) -> float:
        """What chooses the penalty: rejection of non-lesions and the right domain for lesions, equally."""
        return (self.val_rejection + self.val_domain_accuracy) / 2


def fit_mlp(features: np.ndarray, labels: np.ndarray, alpha: float, seed: int = 0
            ) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Class-balanced MLP (one ReLU hidden layer, scikit-learn) on standardised features; returns its layers on the
    raw features, the standardisation folded into the first, so the package takes the backbone's output as it is.
    `labels` are indices into DOMAIN_LABELS."""
    scaler = StandardScaler().fit(features)
    model = MLPClassifier(hidden_layer_sizes=(HIDDEN_UNITS,), alpha=alpha, max_iter=MAX_EPOCHS, random_state=seed)
    with warnings.catch_warnings():  # stopping at MAX_EPOCHS is deliberate, not a failure to converge
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(features), labels, sample_weight=compute_sample_weight("balanced", labels))
    if list(model.classes_) != list(range(len(DOMAIN_LABELS))):
        raise ValueError(f"every label of {DOMAIN_LABELS} needs fitting images; got classes {model.classes_}")
    first = model.coefs_[0].T / scaler.scale_
    layers = [(first, model.intercepts_[0] - first @ scaler.mean_)]
    layers += [(w.T, b) for w, b in zip(model.coefs_[1:], model.intercepts_[1:])]
    return tuple((w.astype(np.float64), b.astype(np.float64)) for w, b in layers)


def probabilities(features: np.ndarray, layers: tuple[tuple[np.ndarray, np.ndarray], ...]) -> np.ndarray:
    """Softmax of the MLP's logits [N, K], in float64 (what chooses the penalty and the threshold)."""
    x = features.astype(np.float64)
    for index, (weights, bias) in enumerate(layers):
        x = x @ weights.T + bias
        if index < len(layers) - 1:
            x = np.maximum(x, 0.0)
    x -= x.max(axis=1, keepdims=True)
    exp = np.exp(x)
    return exp / exp.sum(axis=1, keepdims=True)


def lesion_scores(probs: np.ndarray) -> np.ndarray:
    """P(lesion): everything but not_lesion."""
    return 1.0 - probs[:, DOMAIN_LABELS.index(NOT_LESION)]


def torch_head(layers: tuple[tuple[np.ndarray, np.ndarray], ...]) -> torch.nn.Sequential:
    """The MLP as torch layers (logits in DOMAIN_LABELS order)."""
    modules: list[torch.nn.Module] = []
    for index, (weights, bias) in enumerate(layers):
        linear = torch.nn.Linear(weights.shape[1], weights.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weights).float())
            linear.bias.copy_(torch.from_numpy(bias).float())
        modules.append(linear)
        if index < len(layers) - 1:
            modules.append(torch.nn.ReLU())
    return torch.nn.Sequential(*modules)


def pass_threshold(scores: np.ndarray, items: list[Item], min_pass: dict[str, float]) -> float:
    """The highest threshold at which every positive source passes its domain's share of its validation images
    (`decision.lowest_group_threshold`, the rule the malignancy thresholds use too)."""
    groups = np.array([i.group for i in items])
    thresholds = []
    for domain, share in min_pass.items():
        rows = np.array([i.label == domain for i in items])
        if rows.any():
            thresholds.append(lowest_group_threshold(np.ones(int(rows.sum()), bool), scores[rows], groups[rows],
                                                     share)[0])
    return min(thresholds)


def choose_head(x_fit: np.ndarray, y_fit: np.ndarray, x_val_pos: np.ndarray, val_pos: list[Item],
                x_val_neg: np.ndarray, min_pass: dict[str, float] = MIN_VAL_PASS_RATE) -> Head:
    """Fit one MLP per ALPHA_GRID penalty; keep the one with the best `Head.val_score` at its own threshold
    (ties: the stronger penalty)."""
    groups = np.array([i.group for i in val_pos])
    own_domain = np.array([DOMAIN_LABELS.index(i.label) for i in val_pos])
    best = None
    for alpha in sorted(ALPHA_GRID, reverse=True):
        layers = fit_mlp(x_fit, y_fit, alpha)
        pos_probs = probabilities(x_val_pos, layers)
        pos_scores = lesion_scores(pos_probs)
        threshold = pass_threshold(pos_scores, val_pos, min_pass)
        passed = pos_scores >= threshold
        likelier = pos_probs[:, :2].argmax(1)  # dermoscopy or clinical, whichever is likelier
        head = Head(
            alpha=alpha, layers=layers, threshold=threshold,
            val_rejection=round(float(np.mean(lesion_scores(probabilities(x_val_neg, layers)) < threshold)), 4),
            val_domain_accuracy=round(float(np.mean(likelier[passed] == own_domain[passed])), 4),
            val_pass={g: round(float(np.mean(passed[groups == g])), 4) for g in sorted(set(groups))},
        )
        log.info("alpha %g: threshold %.4f, val rejection %.4f, domain accuracy %.4f, pass %s", alpha, threshold,
                 head.val_rejection, head.val_domain_accuracy, head.val_pass)
        if best is None or head.val_score > best.val_score:
            best = head
    return best
