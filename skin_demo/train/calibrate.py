"""Temperature scaling (Guo et al. 2017), fitted on validation logits, stored in the package config."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from skin_demo.config import TEMPERATURE_RANGE


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out (validation) data, kept inside the
    range a package may carry (an uninformative model's fit runs off towards infinity)."""
    log_t = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    low, high = TEMPERATURE_RANGE
    return min(high, max(low, float(log_t.exp().item())))
