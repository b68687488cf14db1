"""The training loop: one epoch of updates, validation per source, and the checkpoint a run resumes from.

`fit.py` orchestrates a whole run with these pieces; nothing here reads the command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from skin_demo.config import PreprocessConfig
from skin_demo.taxonomy import LESION_CODES, MALIGNANT_CODES
from skin_demo.train.data import Sample, label_index
from skin_demo.train.dataset import decode_cached
from skin_demo.train.metrics import balanced_accuracy, roc_auc
from skin_demo.train.transforms import eval_transform

TUNING_SHARE = 1 / 3  # of each source's validation groups, kept out of epoch selection for post-hoc tuning


@dataclass
class TrainState:
    """Where a run stands: epochs done, the validation record of each, the best epoch per task so far."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict[str, dict] = field(default_factory=dict)  # task -> {"epoch", "weights", "metric"}
    train_seconds: float = 0.0
    hardware: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train_one_epoch(model: nn.Module, ema: ModelEmaV3 | None, loader: DataLoader, losses: dict[str, nn.Module],
                    optimiser: torch.optim.Optimizer, schedule, scaler: torch.amp.GradScaler, *,
                    device: torch.device, autocast_dtype: torch.dtype | None, first_update: int) -> float:
    """One pass over `loader`: the summed loss of every task's head, one optimiser step per batch, the schedule
    stepped per update (counting from `first_update`) and the EMA weights updated. Returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    updates = first_update
    tasks = list(losses)
    for images, labels in tqdm(loader, leave=False, mininterval=30):
        images = images.to(device, memory_format=torch.channels_last, non_blocking=True)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = model(images)
            loss = sum(losses[t](outputs[t].float(), labels[:, i]) for i, t in enumerate(tasks))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        updates += 1
        schedule.step_update(updates)
        if ema is not None:
            ema.update(model.module if isinstance(model, DistributedDataParallel) else model)
        total += loss.item() * len(images)
        count += len(images)
    return round(total / max(count, 1), 4)


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 128
            ) -> dict[str, torch.Tensor]:
    """Float32 logits per task for `images` (eval mode, in batches)."""
    net.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device, memory_format=torch.channels_last)
        for task, logits in net(batch).items():
            outputs.setdefault(task, []).append(logits.float().cpu())
    return {task: torch.cat(chunks) for task, chunks in outputs.items()}


class Validation:
    """The validation images through training's eval transform, with labels, sources and domains.

    A fixed share of each source's lesion groups (`tuning`) is kept out of epoch selection, so that what is tuned
    after training (the logit adjustment) is not chosen on the numbers that already chose the epoch.
    """

    def __init__(self, samples: list[Sample], pre: PreprocessConfig, tasks: tuple[str, ...], cache: Path | None):
        transform = eval_transform(pre)
        self.samples = samples
        self.images = torch.stack([transform(Image.fromarray(a)) for a in decode_cached(samples, cache)])
        self.labels = {t: np.array([label_index(s, t) for s in samples]) for t in tasks}
        self.sources = np.array([s.source for s in samples])
        self.domains = np.array([s.domain for s in samples])
        self.malignant = np.array([s.malignant for s in samples])
        self.tuning = np.array([_in_tuning_share(s.lesion_id or s.image_id) for s in samples])
        self.tasks = tasks

    def logits(self, net: nn.Module, device: torch.device, *, flip: bool = False) -> dict[str, torch.Tensor]:
        """Logits per task; with `flip`, the mean of the image's and its mirror image's logits."""
        outputs = predict(net, self.images, device)
        if flip:
            mirrored = predict(net, self.images.flip(3), device)
            outputs = {t: (outputs[t] + mirrored[t]) / 2 for t in outputs}
        return outputs

    def metrics(self, net: nn.Module, device: torch.device, *, flip: bool = False) -> dict[str, dict]:
        """Per task and source, on the selection rows: balanced accuracy (lesion type), ROC AUC (malignancy, and
        from the lesion head's malignant sum); `selection` is the mean over sources, so every source counts
        the same."""
        logits = self.logits(net, device, flip=flip)
        out = {}
        if "lesion_type" in logits:
            probs = torch.softmax(logits["lesion_type"], 1).numpy()
            out["lesion_type"] = self.lesion_type_accuracy(logits["lesion_type"])
            out["lesion_sum_malignancy"] = self._per_source(
                lambda m: roc_auc(self.malignant[m], malignant_sum(probs[m])))
        if "malignancy" in logits:
            p = torch.softmax(logits["malignancy"], 1)[:, 1].numpy()
            out["malignancy"] = self._per_source(lambda m: roc_auc(self.malignant[m], p[m]))
        return out

    def lesion_type_accuracy(self, lesion_logits: torch.Tensor, *, tuning: bool = False) -> dict:
        """Balanced accuracy per source of these lesion-type logits (and their mean, `selection`), on the selection
        rows, or with `tuning` on the rows kept out of epoch selection."""
        predicted = lesion_logits.argmax(1).numpy()
        labels = self.labels["lesion_type"]
        return self._per_source(lambda m: balanced_accuracy(labels[m], predicted[m]), labelled=labels >= 0,
                                tuning=tuning)

    def _per_source(self, metric, labelled: np.ndarray | None = None, *, tuning: bool = False) -> dict:
        """`metric(rows)` per source on the selection rows (with `tuning`, the tuning rows); an undefined value
        (None) counts as NaN, which the mean skips."""
        rows = self.tuning if tuning else ~self.tuning
        if labelled is not None:
            rows = rows & labelled
        values = {}
        for src in np.unique(self.sources):
            value = metric(rows & (self.sources == src))
            values[src] = float("nan") if value is None else round(float(value), 4)
        return {**values, "selection": round(float(np.nanmean(list(values.values()))), 4)}


def malignant_sum(lesion_probs: np.ndarray) -> np.ndarray:
    """P(malignant) from lesion-type probabilities [N, 7]: the sum over the malignant codes."""
    columns = [i for i, code in enumerate(LESION_CODES) if code in MALIGNANT_CODES]
    return lesion_probs[:, columns].sum(1)


def save_checkpoint(path: Path, net: nn.Module, ema: ModelEmaV3 | None, optimiser: torch.optim.Optimizer,
                    state: TrainState, args: dict[str, Any]) -> None:
    """Everything a run resumes from, with the arguments that made it (written to a temporary file first, so an
    interruption never leaves a half-written checkpoint)."""
    partial = path.with_suffix(".partial")
    torch.save({"model": net.state_dict(), "ema": ema.state_dict() if ema else None,
                "optimiser": optimiser.state_dict(), "state": state.to_dict(), "args": args}, partial)
    partial.replace(path)


def load_checkpoint(path: Path, net: nn.Module, ema: ModelEmaV3 | None, optimiser: torch.optim.Optimizer,
                    device: torch.device) -> TrainState:
    """Restore `save_checkpoint`'s weights and optimiser in place; returns the run's state."""
    checkpoint = torch.load(path, map_location=device, weights_only=False)
    net.load_state_dict(checkpoint["model"])
    if ema is not None:
        ema.load_state_dict(checkpoint["ema"])
    optimiser.load_state_dict(checkpoint["optimiser"])
    return TrainState(**checkpoint["state"])


def _in_tuning_share(group_id: str) -> bool:
    """A stable, machine-independent draw per lesion group (sha256, not Python's salted hash)."""
    digest = int(hashlib.sha256(group_id.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < TUNING_SHARE
