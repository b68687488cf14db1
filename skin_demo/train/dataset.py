"""Images decoded once into memory, so a CPU epoch spends its time in the network, not in JPEG decoding."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from skin_demo.imaging import ImageError, load_image
from skin_demo.train.data import DataError, Sample, label_index

log = logging.getLogger(__name__)


def decode_all(samples: list[Sample]) -> list[np.ndarray]:
    """Decode every sample through the serving side's `load_image` into uint8 HWC arrays.

    Raises DataError naming every image that could not be read (none is dropped silently).
    """
    arrays, unreadable = [], []
    for sample in samples:
        try:
            arrays.append(np.asarray(load_image(sample.path)))
        except ImageError as exc:
            unreadable.append(f"{sample.image_id} ({exc})")
    if unreadable:
        raise DataError(f"{len(unreadable)} unreadable images: " + "; ".join(unreadable[:20]))
    return arrays


def decode_cached(samples: list[Sample], cache: Path | None) -> list[np.ndarray]:
    """`decode_all`, kept in `cache` (one .npz per distinct list of images) when a cache folder is given.

    The cache is what a run carries to another machine instead of the JPEGs; its key covers the image ids and
    paths' file sizes, so a changed list never reads a stale cache.
    """
    if cache is None:
        return decode_all(samples)
    key = hashlib.sha256("\n".join(f"{s.image_id}:{s.path.stat().st_size}" for s in samples).encode()).hexdigest()
    path = Path(cache) / f"decoded-{key[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return [stored[f"arr_{i}"] for i in range(len(samples))]
    arrays = decode_all(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, *arrays)
    partial.replace(path)
    log.info("cached %d decoded images in %s", len(arrays), path)
    return arrays


class CachedImages(Dataset):
    """(transformed image, labels per task) pairs over images decoded once.

    The labels tensor has one entry per task in `tasks` order; IGNORE_LABEL marks a missing label.
    """

    def __init__(self, samples: list[Sample], images: list[np.ndarray], tasks: tuple[str, ...], transform):
        if len(samples) != len(images):
            raise ValueError("samples and images differ in length")
        self.samples = samples
        self.images = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) for a in images]
        self.labels = torch.tensor([[label_index(s, t) for t in tasks] for s in samples], dtype=torch.long)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]
