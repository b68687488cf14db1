"""Training augmentation and the evaluation transform, both derived from the package's PreprocessConfig.

The evaluation transform is timm's own eval pipeline built from the same config that ships in the package;
tests/test_parity.py checks that `skin_demo.imaging.preprocess` reproduces it exactly.
"""

from __future__ import annotations

import timm.data
import torch
from torchvision import transforms as v1
from torchvision.transforms import InterpolationMode, v2

from skin_demo.config import PreprocessConfig
from skin_demo.imaging import shades_of_gray


class ColorConstancy:
    """The package's colour constancy on a float tensor [3, H, W] in [0, 1], through serving's own function."""

    def __init__(self, config: PreprocessConfig):
        self.power = config.color_constancy_power

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(shades_of_gray(pixels.numpy(), self.power))


def eval_transform(config: PreprocessConfig):
    """timm's eval transform (PIL image -> normalised float tensor [3, H, W]) for this config.

    With colour constancy, timm's pipeline stops at [0, 1] pixels (mean 0, std 1) and the constancy step and the
    real normalisation follow, in serving's order.
    """
    constancy = config.color_constancy != "none"
    timm_part = timm.data.create_transform(
        input_size=(3, *config.size),
        is_training=False,
        interpolation=config.interpolation,
        mean=(0.0, 0.0, 0.0) if constancy else config.mean,
        std=(1.0, 1.0, 1.0) if constancy else config.std,
        crop_pct=config.crop_pct,
        crop_mode="center",
    )
    if not constancy:
        return timm_part
    return v1.Compose([timm_part, ColorConstancy(config), v1.Normalize(mean=config.mean, std=config.std)])


def train_transform(config: PreprocessConfig, size: tuple[int, int] | None = None) -> v2.Compose:
    """Augmentation fit for dermoscopy (uint8 tensor [3, h, w] -> normalised float tensor [3, *size]).

    `size` defaults to the package's input size; progressive resizing trains early epochs smaller.

    Lesions have no canonical orientation, so flips and full rotations are label-preserving; zoom, shift and
    shear mimic framing differences; colour jitter mimics different dermatoscopes and lighting.
    """
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomAffine(
                degrees=180, translate=(0.05, 0.05), scale=(0.9, 1.15), shear=8,
                interpolation=InterpolationMode.BILINEAR,
            ),
            v2.RandomResizedCrop(size or config.size, scale=(0.45, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.04),
            v2.ToDtype(torch.float32, scale=True),
            *([ColorConstancy(config)] if config.color_constancy != "none" else []),
            v2.Normalize(mean=list(config.mean), std=list(config.std)),
        ]
    )
