"""The three answers to class imbalance we offer: a balanced sampler, a class-weighted loss, a focal loss.

All use weights proportional to count ** -power; power 1 balances fully, 0.5 (the default) only halfway,
which oversamples a 80-image class like df far less and overfits it less.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import WeightedRandomSampler

from skin_demo.train.data import IGNORE_LABEL, Sample

STRATEGIES = ("none", "sampler", "weighted_loss", "focal")  # sampler: `domain_class_weights`


def class_weights(labels: torch.Tensor, n_classes: int, power: float) -> torch.Tensor:
    """Per-class weights ~ count ** -power, normalised to mean 1 over the classes present."""
    counts = torch.bincount(labels[labels != IGNORE_LABEL], minlength=n_classes).float()
    weights = torch.where(counts > 0, counts.clamp(min=1) ** -power, torch.zeros_like(counts))
    return weights * (counts > 0).sum() / weights.sum()


def domain_class_weights(samples: list[Sample], power: float) -> torch.Tensor:
    """Sampling weights that leave no image domain's class prior to learn.

    Drawn top down: a domain with share ~ (its images) ** power; within it, malignant and benign with equal
    shares (so "clinical" does not mean "63 % malignant" to the network); within those, each (source, class)
    group with share ~ (its images) ** power; within a group, every image alike. The weights sum to 1.
    """
    domains = Counter(s.domain for s in samples)
    domain_share = {d: n ** power for d, n in domains.items()}
    total = sum(domain_share.values())
    groups = Counter((s.domain, s.malignant, f"{s.source}:{s.class_key}") for s in samples)
    sides = {(d, m) for d, m, _ in groups}
    group_share = {key: n ** power for key, n in groups.items()}
    side_total = Counter()
    for (domain, malignant, _), share in group_share.items():
        side_total[domain, malignant] += share
    weights = []
    for s in samples:
        key = (s.domain, s.malignant, f"{s.source}:{s.class_key}")
        sides_in_domain = sum(1 for d, _ in sides if d == s.domain)
        weights.append(domain_share[s.domain] / total / sides_in_domain
                       * group_share[key] / side_total[s.domain, s.malignant] / groups[key])
    return torch.tensor(weights, dtype=torch.double)


def weighted_sampler(weights: torch.Tensor, seed: int, num_samples: int) -> WeightedRandomSampler:
    """`num_samples` draws with replacement, with probability proportional to `weights`, repeatable by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples=num_samples, replacement=True, generator=generator)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true) ** gamma, optionally class-weighted."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        keep = target != IGNORE_LABEL
        if not keep.any():
            return logits.sum() * 0.0
        logits, target = logits[keep], target[keep]
        log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is not None:
            w = self.weight[target]
            return (loss * w).sum() / w.sum()
        return loss.mean()


def make_loss(strategy: str, labels: torch.Tensor, n_classes: int, power: float) -> nn.Module:
    """The loss for one task under `strategy` (class weights are computed from the training labels)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown imbalance strategy {strategy!r}; choose one of {STRATEGIES}")
    if strategy == "weighted_loss":
        return nn.CrossEntropyLoss(weight=class_weights(labels, n_classes, power), ignore_index=IGNORE_LABEL)
    if strategy == "focal":
        return FocalLoss(gamma=2.0, weight=class_weights(labels, n_classes, power))
    return nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL)
