"""What one task's package exports, chosen on validation: the best epoch's network narrowed to that task, with
flip test-time augmentation in the graph only where it lifts the validation metric by TTA_MIN_GAIN."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from skin_demo.train.model import MultiTaskNet
from skin_demo.train.task_nets import FlipAveraged, SingleTaskNet
from skin_demo.train.training_loop import Validation

TTA_MIN_GAIN = 0.01  # flip test-time augmentation ships only if it lifts the validation metric by a point


@dataclass(frozen=True)
class TaskChoice:
    """Which weights a package exports and whether flip TTA is in, with the validation numbers behind it."""

    best_epoch: int
    weights: str  # "raw" or "ema"
    val_without_flip: float
    val_with_flip: float
    flip_tta: bool

    def to_json(self) -> dict:
        return asdict(self)


def choose_task_module(net: MultiTaskNet, task: str, best: dict, val: Validation, device: torch.device
                       ) -> tuple[torch.nn.Module, TaskChoice]:
    """`net` (holding `best`'s weights) narrowed to `task`, with flip TTA if it earns its place on validation."""
    without = val.metrics(net, device)[task]["selection"]
    with_flip = val.metrics(net, device, flip=True)[task]["selection"]
    choice = TaskChoice(best_epoch=best["epoch"], weights=best["weights"], val_without_flip=without,
                        val_with_flip=with_flip, flip_tta=with_flip - without >= TTA_MIN_GAIN)
    module: torch.nn.Module = SingleTaskNet(net, task)
    if choice.flip_tta:
        module = FlipAveraged(module)
    return module.cpu().eval(), choice
