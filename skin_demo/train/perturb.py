"""Test images as another camera might deliver them: what `evaluate --perturb` puts each image through before the
serving path's preprocessing, to measure how much a package's figures depend on clean, atlas-like photos.

No test set of phone photos exists here. These stand in for some of what sets phone photos apart, and no more:

- `camera`: the lesion check's nuisances (`lesion_check.augment.nuisance`): colour casts, squashed aspect,
  rotation, zoomed-in crops, dark vignettes and frames, low resolution, JPEG.
- `phone_look`: the training-time phone look (`phone_look.PhoneLook`) on every image (each of its steps still fires
  at its own probability): vignette filled, zoomed out onto skin, relit, blurred, noisy, JPEG. A package trained
  with `--phone-look` has seen these on dermoscopy, so this favours it by construction: read it as what a package
  loses without that training, not as a phone-photo test.

Each image is first brought to the scale training sees it at (`dataset.resized_to_shorter_side`), for which the
perturbations' pixel sizes were chosen. Its draw is seeded by the seed and its image id, so every package
evaluated with one seed sees the same perturbed image.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from skin_demo.train.dataset import resized_to_shorter_side
from skin_demo.train.lesion_check.augment import nuisance
from skin_demo.train.phone_look import PhoneLook

PERTURBATIONS = ("camera", "phone_look")


@dataclass(frozen=True)
class Perturbation:
    """One of PERTURBATIONS with its seed, applied per image."""

    name: str
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {self.name!r}; choose one of {PERTURBATIONS}")

    def __call__(self, image: Image.Image, image_id: str, shorter_side: int) -> Image.Image:
        image = resized_to_shorter_side(image, shorter_side)
        key = zlib.crc32(image_id.encode())
        if self.name == "camera":
            return nuisance(image, np.random.default_rng([self.seed, key]))
        look = PhoneLook(p=1.0, seed=self.seed * 2**32 + key)
        pixels = look(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        return Image.fromarray(pixels.permute(1, 2, 0).numpy())

    def describe(self) -> str:
        """How a report names it, after the split."""
        return f"through the {self.name} perturbation (seed {self.seed})"
