"""Images decoded once into memory, so a CPU epoch spends its time in the network, not in JPEG decoding."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from skin_demo.imaging import ImageError, load_image
from skin_demo.train.data import DataError, Sample, label_index

log = logging.getLogger(__name__)


def decode_all(samples: list[Sample], shorter_side: int | None = None) -> list[np.ndarray]:
    """Decode every sample through the serving side's `load_image` into uint8 HWC arrays; with `shorter_side`,
    resized (up or down, bicubic) so that the shorter side has that length, as serving's preprocess does.

    Raises DataError naming every image that could not be read (none is dropped silently).
    """
    arrays, unreadable = [], []
    for sample in samples:
        try:
            image = load_image(sample.path)
            if shorter_side is not None:
                image = resized_to_shorter_side(image, shorter_side)
            arrays.append(np.asarray(image))
        except ImageError as exc:
            unreadable.append(f"{sample.image_id} ({exc})")
    if unreadable:
        raise DataError(f"{len(unreadable)} unreadable images: " + "; ".join(unreadable[:20]))
    return arrays


def resized_to_shorter_side(image: Image.Image, shorter_side: int) -> Image.Image:
    """`image` resized (up or down, bicubic) so that its shorter side is `shorter_side`: the scale training sees
    images at, that of serving's preprocess before its crop."""
    scale = shorter_side / min(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def decode_cached(samples: list[Sample], cache: Path | None, shorter_side: int | None = None) -> list[np.ndarray]:
    """`decode_all`, kept in `cache` (one .npz per distinct list of images and size) when a cache folder is given.

    The cache is what a run carries to another machine instead of the JPEGs; its key covers the image ids, the
    paths' file sizes and `shorter_side`, so a changed list never reads a stale cache.
    """
    if cache is None:
        return decode_all(samples, shorter_side)
    listing = "\n".join(f"{s.image_id}:{s.path.stat().st_size}" for s in samples)
    if shorter_side is not None:
        listing += f"\nshorter_side={shorter_side}"
    key = hashlib.sha256(listing.encode()).hexdigest()
    path = Path(cache) / f"decoded-{key[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return [stored[f"arr_{i}"] for i in range(len(samples))]
    arrays = decode_all(samples, shorter_side)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, *arrays)
    partial.replace(path)
    log.info("cached %d decoded images in %s", len(arrays), path)
    return arrays


class CachedImages(Dataset):
    """(transformed image, labels per task) pairs over images decoded once.

    The labels tensor has one entry per task in `tasks` order; IGNORE_LABEL marks a missing label. `phone_look`,
    when given, runs on dermoscopy images before `transform` (see `phone_look.PhoneLook`).
    """

    def __init__(self, samples: list[Sample], images: list[np.ndarray], tasks: tuple[str, ...], transform,
                 phone_look=None):
        if len(samples) != len(images):
            raise ValueError("samples and images differ in length")
        self.samples = samples
        self.images = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in images]
        self.labels = torch.tensor([[label_index(s, t) for t in tasks] for s in samples], dtype=torch.long)
        self.transform = transform
        self.phone_look = phone_look
        self.dermoscopy = [s.domain == "dermoscopy" for s in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.phone_look is not None and self.dermoscopy[index]:
            image = self.phone_look(image)
        return self.transform(image), self.labels[index]
