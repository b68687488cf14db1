"""The frozen feature network (pooled outputs of some EfficientNet stages), the packaged net, and feature extraction
with ONNX Runtime, cached under the run folder."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from skin_demo.config import INPUT_NAME, PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.train.lesion_check.augment import nuisance
from skin_demo.train.lesion_check.data import Item

log = logging.getLogger("skin_demo.train")

CACHE_VERSION = 2  # bump when `nuisance` or `PooledFeatures` changes, so stale cached features are not reused


class PooledFeatures(torch.nn.Module):
    """The globally pooled outputs of the EfficientNet stages in `taps`, side by side; the stages after the last
    tap (and the ImageNet head) are dropped.

    Middle stages describe texture, such as the pigment network and the even, polarised look of dermoscopy,
    which is where a rash photo and a dermoscopy close-up differ; the last stages have learned ImageNet objects.
    For dermoscopy against everything else, stages 3-5 at 128 px were enough. Telling an ordinary photo of one
    lesion from a rash photo needs more: with the same MLP head and the same validation pass rates, stages 3-5 at
    128 px rejected 87.3 % of the validation non-lesions, stages 3-6 at 192 px 95.3 % (the defaults).
    """

    def __init__(self, backbone: torch.nn.Module, taps: tuple[int, ...]):
        super().__init__()
        if not taps or any(not 0 <= t < len(backbone.blocks) for t in taps):
            raise ValueError(f"taps {list(taps)}: choose stages among 0-{len(backbone.blocks) - 1}")
        self.taps = tuple(sorted(set(taps)))
        self.stem = torch.nn.Sequential(backbone.conv_stem, backbone.bn1)
        self.stages = backbone.blocks[: self.taps[-1] + 1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        pooled = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.taps:
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


class LesionCheckNet(torch.nn.Module):
    """What the package holds: the frozen pooled features through one linear layer, logits [N, 2]."""

    def __init__(self, features: PooledFeatures, head: torch.nn.Linear):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


def extract_features(
    session: ort.InferenceSession, items: list[Item], pre: PreprocessConfig, *, copies: int, seed: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Features [len(items) * (1 + copies), D] from the exported feature graph, item-major: each image as it is,
    then `copies` versions through `nuisance`, each seeded by (seed, item index, copy) so a rerun reproduces them.

    ONNX Runtime rather than torch: about ten times faster for this network on a CPU, and the very graph the
    package runs."""
    inputs, chunks = [], []

    def flush() -> None:
        chunks.append(session.run(None, {INPUT_NAME: np.stack(inputs)})[0])
        inputs.clear()

    for index, item in enumerate(items):
        image = load_image(item.path)
        for copy in range(1 + copies):
            shown = image if copy == 0 else nuisance(image, np.random.default_rng([seed, index, copy]))
            inputs.append(preprocess(shown, pre))
            if len(inputs) == batch_size:
                flush()
    if inputs:
        flush()
    return np.concatenate(chunks).astype(np.float32)


def cached_features(
    cache_dir: Path, name: str, session: ort.InferenceSession, items: list[Item], pre: PreprocessConfig, *,
    copies: int, seed: int, key: dict,
) -> tuple[np.ndarray, float | None]:
    """`extract_features`, saved as .npy under `cache_dir` and reused while the images and settings are the same.

    Returns the features and the seconds their extraction took (in this run or the one that cached them; None for
    a cache without that record), so the package's provenance counts the real cost.
    """
    fingerprint = json.dumps(
        {**key, "copies": copies, "seed": seed, "version": CACHE_VERSION, "pre": pre.__dict__,
         "items": [str(item.path) for item in items]},
        sort_keys=True, default=str,
    )
    path = Path(cache_dir) / f"{name}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:16]}.npy"
    timing = path.with_suffix(".json")
    if path.is_file():
        log.info("features %s: cached %s", name, path)
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else None
        return np.load(path), seconds
    started = time.perf_counter()
    features = extract_features(session, items, pre, copies=copies, seed=seed)
    seconds = round(time.perf_counter() - started, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, features)
    timing.write_text(json.dumps({"seconds": seconds, "images": len(items) * (1 + copies)}) + "\n")
    log.info("features %s: %d images x %d in %.0f s -> %s", name, len(items), 1 + copies, seconds, path)
    return features, seconds
