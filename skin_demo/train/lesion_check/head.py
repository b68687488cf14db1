"""The head on the pooled features: a class-balanced logistic regression, its penalty and pass threshold chosen on
validation, copied into the linear layer the package exports."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from skin_demo.train.lesion_check.data import Item
from skin_demo.train.metrics import choose_threshold

log = logging.getLogger("skin_demo.train")

MIN_VAL_PASS_RATE = 0.99  # every positive source passes at least this share of its validation images
L2_GRID = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # logistic-regression penalties tried; validation picks one


def fit_logistic_regression(features: np.ndarray, lesion: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression for P(lesion) (full-batch L-BFGS on standardised features).

    Returns (weights [D], bias) on the raw features: the standardisation is folded in, so the linear layer of the
    package takes the backbone's output as it is.
    """
    x = torch.from_numpy(features).double()
    y = torch.from_numpy(lesion.astype(np.float64))
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    n_pos = float(y.sum())
    # Each class weighs half of the loss, whatever its size.
    weight = torch.where(y > 0, 0.5 / n_pos, 0.5 / (len(y) - n_pos))
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], lr=1.0, max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ w + b
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).sum()
        loss = loss + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    raw_w = (w.detach() / std).numpy()
    raw_b = float(b.detach() - (raw_w * mean.numpy()).sum())
    return raw_w, raw_b


def p_lesion(features: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    """P(lesion) from the regression on raw features, in float64 (what chooses the penalty and the threshold)."""
    return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ weights + bias)))


def linear_head(weights: np.ndarray, bias: float) -> torch.nn.Linear:
    """logits = [z/2, -z/2] with z the regression's log-odds: softmax gives P(lesion) = sigmoid(z) exactly."""
    head = torch.nn.Linear(len(weights), 2)
    with torch.no_grad():
        w = torch.from_numpy(weights).float()
        head.weight.copy_(torch.stack([w / 2, -w / 2]))
        head.bias.copy_(torch.tensor([bias / 2, -bias / 2]))
    return head


def pass_threshold(scores_by_source: dict[str, np.ndarray]) -> float:
    """The highest threshold at which every source passes MIN_VAL_PASS_RATE of its images, rounded down."""
    per_source = [
        choose_threshold(np.ones(len(s), bool), s, min_sensitivity=MIN_VAL_PASS_RATE) for s in scores_by_source.values()
    ]
    # Round down: rounding up could lift the threshold past the score that met the pass-rate target. A package
    # threshold must lie strictly inside (0, 1).
    return min(max(math.floor(min(per_source) * 1e4) / 1e4, 1e-4), 1 - 1e-4)


def choose_head(x_fit: np.ndarray, y_fit: np.ndarray, x_val_pos: np.ndarray, val_pos: list[Item],
                x_val_neg: np.ndarray) -> tuple[dict, dict]:
    """Fit one regression per L2_GRID penalty; keep the one that rejects the most validation negatives at its
    own threshold (ties: the stronger penalty).

    Returns the chosen head (l2, weights, bias, threshold, validation rates) and config.json's `validation` numbers.
    """
    sources = sorted({i.group for i in val_pos})
    best = None
    for l2 in sorted(L2_GRID, reverse=True):
        weights, bias = fit_logistic_regression(x_fit, y_fit, l2)
        pos_scores = p_lesion(x_val_pos, weights, bias)
        by_source = {s: pos_scores[[i.group == s for i in val_pos]] for s in sources}
        threshold = pass_threshold(by_source)
        rejection = float(np.mean(p_lesion(x_val_neg, weights, bias) < threshold))
        log.info("l2 %g: threshold %.4f, val rejection %.4f", l2, threshold, rejection)
        if best is None or rejection > best["val_rejection"]:
            best = {"l2": l2, "weights": weights, "bias": bias, "threshold": threshold, "val_rejection": rejection,
                    "val_pass": {s: round(float(np.mean(v >= threshold)), 4) for s, v in by_source.items()}}
    val = {"pass_rate": best["val_pass"], "rejection_rate": round(best["val_rejection"], 4), "l2": best["l2"]}
    return best, val
