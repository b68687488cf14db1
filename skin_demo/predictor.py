"""One image in, both models' answers out: decode once, preprocess once per distinct config, run both sessions."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skin_demo.config import PreprocessConfig
from skin_demo.imaging import ImageSource, load_image, preprocess
from skin_demo.modelpack import ModelPack
from skin_demo.taxonomy import display_name

TOP_K = 3


@dataclass(frozen=True)
class RankedLabel:
    """One label of a model's output with its display name and probability."""

    label: str
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """Both models' probabilities for one image, plus how long each step took.

    malignancy / lesion_type: probability per label, in each package's label order (dicts keep order).
    malignancy_probability: the malignancy model's probability summed over its malignant_labels.
    lesion_type_malignant_probability: the same sum over the lesion-type model's malignant labels (a second
      opinion from the other model; the two are trained separately and need not agree).
    lesion_type_top: the top-k lesion types, most probable first.
    timings_ms: decode, preprocess, inference and total, in milliseconds.
    """

    malignancy: dict[str, float]
    lesion_type: dict[str, float]
    malignancy_probability: float
    lesion_type_malignant_probability: float
    lesion_type_top: tuple[RankedLabel, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (the API's answer, without model descriptions)."""
        return {
            "malignancy": dict(self.malignancy),
            "lesion_type": dict(self.lesion_type),
            "malignancy_probability": self.malignancy_probability,
            "lesion_type_malignant_probability": self.lesion_type_malignant_probability,
            "lesion_type_top": [
                {"label": r.label, "name": r.name, "probability": r.probability} for r in self.lesion_type_top
            ],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


class Predictor:
    """Runs the malignancy and lesion-type packages on an image. Thread-safe: keeps no per-request state."""

    def __init__(self, malignancy: ModelPack, lesion_type: ModelPack, *, top_k: int = TOP_K) -> None:
        self.malignancy = malignancy
        self.lesion_type = lesion_type
        self.top_k = top_k
        # Decode JPEGs only at the detail the largest model input needs: the shorter side that preprocess
        # resizes to before cropping.
        self._draft_size = max(
            math.floor(min(p.config.preprocess.size) / p.config.preprocess.crop_pct) for p in (malignancy, lesion_type)
        )

    @property
    def packs(self) -> tuple[ModelPack, ModelPack]:
        return self.malignancy, self.lesion_type

    def predict(self, image: ImageSource) -> Prediction:
        """Analyse one image (a path, bytes, a file object or a PIL image).

        Raises imaging.ImageError for input that is not a usable image.
        """
        start = time.perf_counter()
        rgb = load_image(image, draft_size=self._draft_size)
        decoded = time.perf_counter()
        # Models that share a preprocessing config share one tensor.
        tensors: dict[PreprocessConfig, np.ndarray] = {}
        for pack in self.packs:
            cfg = pack.config.preprocess
            if cfg not in tensors:
                tensors[cfg] = preprocess(rgb, cfg)[np.newaxis]
        preprocessed = time.perf_counter()
        malignancy = self.malignancy.probabilities(tensors[self.malignancy.config.preprocess])[0]
        lesion_type = self.lesion_type.probabilities(tensors[self.lesion_type.config.preprocess])[0]
        inferred = time.perf_counter()

        mal_probs = _by_label(self.malignancy, malignancy)
        lesion_probs = _by_label(self.lesion_type, lesion_type)
        order = np.argsort(-lesion_type, kind="stable")[: self.top_k]
        labels = self.lesion_type.config.labels
        top = tuple(RankedLabel(labels[i], display_name(labels[i]), float(lesion_type[i])) for i in order)
        timings = {
            "decode": 1000 * (decoded - start),
            "preprocess": 1000 * (preprocessed - decoded),
            "inference": 1000 * (inferred - preprocessed),
        }
        timings["total"] = 1000 * (time.perf_counter() - start)
        return Prediction(
            malignancy=mal_probs,
            lesion_type=lesion_probs,
            malignancy_probability=_sum_of(mal_probs, self.malignancy.config.malignant_labels),
            lesion_type_malignant_probability=_sum_of(lesion_probs, self.lesion_type.config.malignant_labels),
            lesion_type_top=top,
            timings_ms=timings,
        )


def _by_label(pack: ModelPack, probabilities: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(pack.config.labels, probabilities, strict=True)}


def _sum_of(probabilities: dict[str, float], labels: tuple[str, ...]) -> float:
    return min(1.0, max(0.0, float(sum(probabilities[label] for label in labels))))
