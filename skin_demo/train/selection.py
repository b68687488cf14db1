"""What one task's package exports, chosen on validation: the best epoch's network narrowed to that task, with
flip test-time augmentation in the graph where it lifts the validation metric by MIN_GAIN, and, for lesion type,
post-hoc logit adjustment where it lifts balanced accuracy on the validation rows kept out of epoch selection by
MIN_GAIN (so the epoch and the adjustment are never chosen on the same numbers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from skin_demo.train.model import MultiTaskNet
from skin_demo.train.task_nets import FlipAveraged, LogitAdjusted, SingleTaskNet
from skin_demo.train.training_loop import Validation

MIN_GAIN = 0.01  # flip TTA and logit adjustment ship only if they lift the validation metric by a point
TAUS = (0.25, 0.5, 0.75, 1.0)  # logit-adjustment strengths tried (0: none)


@dataclass(frozen=True)
class TaskChoice:
    """Which weights a package exports, whether flip TTA and logit adjustment are in, and the validation numbers
    behind each."""

    best_epoch: int
    weights: str  # "raw" or "ema"
    val_without_flip: float
    val_with_flip: float
    flip_tta: bool
    logit_adjustment_tau: float = 0.0
    tuning_by_tau: dict[str, float] = field(default_factory=dict)  # mean tuning-rows balanced accuracy per tau

    def to_json(self) -> dict:
        return asdict(self)


def choose_task_module(net: MultiTaskNet, task: str, best: dict, val: Validation, device: torch.device,
                       log_prior: torch.Tensor | None = None) -> tuple[torch.nn.Module, TaskChoice]:
    """`net` (holding `best`'s weights) narrowed to `task`, with flip TTA if it earns its place on validation and,
    given the log of the class prior training drew from (`log_prior`, lesion type), logit adjustment if it earns
    its place on the tuning rows."""
    without = val.metrics(net, device)[task]["selection"]
    with_flip = val.metrics(net, device, flip=True)[task]["selection"]
    flip = with_flip - without >= MIN_GAIN
    tau, by_tau = 0.0, {}
    if task == "lesion_type" and log_prior is not None:
        tau, by_tau = choose_logit_adjustment(val.logits(net, device, flip=flip)[task], val, log_prior)
    module: torch.nn.Module = SingleTaskNet(net, task)
    if flip:
        module = FlipAveraged(module)
    if tau:
        module = LogitAdjusted(module, tau * log_prior)
    choice = TaskChoice(best_epoch=best["epoch"], weights=best["weights"], val_without_flip=without,
                        val_with_flip=with_flip, flip_tta=flip, logit_adjustment_tau=tau, tuning_by_tau=by_tau)
    return module.cpu().eval(), choice


def choose_logit_adjustment(logits: torch.Tensor, val: Validation, log_prior: torch.Tensor
                            ) -> tuple[float, dict[str, float]]:
    """The tau in TAUS whose adjusted logits (logits - tau x log_prior) give the best mean balanced accuracy on the
    tuning rows, or 0 where none beats no adjustment by MIN_GAIN; with every tau's score."""
    by_tau = {str(tau): val.lesion_type_accuracy(logits - tau * log_prior, tuning=True)["selection"]
              for tau in (0.0, *TAUS)}
    best = max(TAUS, key=lambda tau: by_tau[str(tau)])
    return (best if by_tau[str(best)] - by_tau["0.0"] >= MIN_GAIN else 0.0), by_tau


def class_log_prior(labels: np.ndarray, weights: np.ndarray, n_classes: int) -> torch.Tensor:
    """log P(class) under the training sampler: each labelled sample's draw weight summed per class (samples
    without a label for the task, IGNORE_LABEL, do not count)."""
    labelled = labels >= 0
    mass = np.bincount(labels[labelled], weights=weights[labelled], minlength=n_classes)
    return torch.from_numpy(np.log(np.maximum(mass / mass.sum(), 1e-8))).float()
