"""Where the model looked: a package's class-activation map (`cam` output) made into what the page and the API show.

For the labels of the answer shown (a set S: the malignancy call's answer, or the top lesion type), the map is the
class-activation map of each label in S weighted by its share of P(S), rescaled so that its weakest location is 0
and its strongest 1, as Zhou et al. (2016) show CAM. It says where the evidence for the answer was strongest
relative to the rest of the picture, not how strong it was. (Weighting each label by d log P(S) / d logit
instead, which subtracts the other labels' maps, put the malignancy map's maximum inside a lesion pasted on plain
skin for 25 of 40 HAM10000 test lesions, this rule for 38.) The map covers only the square the model saw
(`view_box`), in the pixel coordinates of the photo as uploaded (upright).

static/engine.js computes the same numbers in the browser (tests/test_on_device.py pins the two together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skin_demo.config import PackageConfig, PreprocessConfig
from skin_demo.imaging import crop_geometry

GRID_DECIMALS = 4  # enough for a picture, small enough for the JSON
# How the pages draw a map over the photo: this colour, more opaque where the evidence is stronger.
OVERLAY_COLOUR = (215, 48, 39)
OVERLAY_MAX_ALPHA = 0.75


@dataclass(frozen=True)
class AttentionMap:
    """The evidence for `labels` of package `task` over the part of the photo the model saw.

    grid: [h][w] values in [0, 1], row by row from the top; box: (left, top, right, bottom) of that square in the
    uploaded photo's pixels.
    """

    task: str
    labels: tuple[str, ...]
    grid: tuple[tuple[float, ...], ...]
    box: tuple[float, float, float, float]

    def to_json(self) -> dict:
        return {"task": self.task, "labels": list(self.labels), "grid": [list(row) for row in self.grid],
                "box": list(self.box)}  # fmt: skip


def evidence_map(cam: np.ndarray, probabilities: np.ndarray, labels: Sequence[str],
                 answer: Sequence[str]) -> np.ndarray:
    """float64 [h, w] in [0, 1]: the evidence for the labels in `answer`, from one image's `cam` [K, h, w] and its
    probabilities [K] (label order). All zeros when the map is flat."""
    p = np.asarray(probabilities, dtype=np.float64)
    in_answer = np.isin(np.asarray(labels), list(answer))
    weights = np.where(in_answer, p, 0.0) / max(float(p[in_answer].sum()), np.finfo(np.float64).tiny)
    evidence = np.tensordot(weights, np.asarray(cam, dtype=np.float64), axes=1)
    evidence = evidence - evidence.min()
    peak = float(evidence.max())
    return evidence / peak if peak > 0 else evidence


def view_box(decoded_size: tuple[int, int], source_size: tuple[int, int],
             config: PreprocessConfig) -> tuple[float, float, float, float]:
    """The square `imaging.preprocess` crops from an image decoded at `decoded_size`, in the pixels of the photo
    as uploaded (`source_size`, upright; larger when the decoder reduced it)."""
    (resized_w, resized_h), (left, top, right, bottom) = crop_geometry(decoded_size, config)
    scale_x, scale_y = source_size[0] / resized_w, source_size[1] / resized_h
    return (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)


def attention_map(cam: np.ndarray, probabilities: np.ndarray, config: PackageConfig, answer: Sequence[str],
                  decoded_size: tuple[int, int], source_size: tuple[int, int]) -> AttentionMap:
    """The AttentionMap of one package's output for one image (`cam` [K, h, w], `probabilities` [K])."""
    grid = np.round(evidence_map(cam, probabilities, config.labels, answer), GRID_DECIMALS)
    return AttentionMap(task=config.task, labels=tuple(answer), grid=tuple(tuple(map(float, row)) for row in grid),
                        box=view_box(decoded_size, source_size, config.preprocess))


def overlay_rgba(grid: Sequence[Sequence[float]]) -> np.ndarray:
    """uint8 [h, w, 4]: the map as the pages draw it (OVERLAY_COLOUR, alpha up to OVERLAY_MAX_ALPHA); the browser
    stretches it smoothly over the box. static/app.js draws the on-device page's from the same two constants."""
    values = np.asarray(grid, dtype=np.float64)
    rgba = np.empty((*values.shape, 4), dtype=np.uint8)
    rgba[..., :3] = OVERLAY_COLOUR
    rgba[..., 3] = np.round(255 * OVERLAY_MAX_ALPHA * np.clip(values, 0, 1))
    return rgba
