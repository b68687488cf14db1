"""One image in, every model's answer out: decode once, preprocess once per distinct config, run each session,
then apply the one post-processing rule (`skin_demo.postprocess`): the lesion check and image domain, then the
malignancy call for that domain."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from skin_demo import postprocess
from skin_demo.attention import AttentionMap, attention_map
from skin_demo.config import ATTENTION_OUTPUT, OUTPUT_NAME, PackageConfig, PreprocessConfig
from skin_demo.imaging import ImageSource, load_image, preprocess, source_size
from skin_demo.modelpack import ModelPack
from skin_demo.postprocess import (
    DERMOSCOPY,
    DOMAIN_LABELS,
    LESION_LABEL,
    NOT_LESION,
    ImageDomain,
    LesionCheck,
    MalignancyFlag,
)
from skin_demo.taxonomy import display_name

TOP_K = 3


def _malignancy_problem(config: PackageConfig) -> str | None:
    return None if config.malignant_labels else "a malignancy package needs malignant_labels"


def _lesion_check_problem(config: PackageConfig) -> str | None:
    if postprocess.is_lesion_check(config):
        return None
    return (f"a lesion_check package needs the labels {list(DOMAIN_LABELS)} (or, in its older form, "
            f"{[LESION_LABEL, NOT_LESION]}); it has {list(config.labels)}")  # fmt: skip


# The slots a Predictor fills, by task name (as rembg looks its sessions up by model name), each with what a package
# must have to fill it. A package's config names its task; skin_demo.hub loads one package per slot.
TASKS: dict[str, Callable[[PackageConfig], str | None]] = {
    "malignancy": _malignancy_problem,
    "lesion_type": lambda config: None,
    "lesion_check": _lesion_check_problem,
}


def slot_problem(pack: ModelPack, task: str) -> str | None:
    """Why `pack` cannot fill the `task` slot (None when it can): another task, or what the slot needs is missing."""
    if pack.config.task != task:
        return f"task is {pack.config.task!r}, expected {task!r} for this slot"
    return TASKS[task](pack.config)


@dataclass(frozen=True)
class RankedLabel:
    """One label of a model's output with its display name and probability."""

    label: str
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The models' probabilities for one image, what the post-processing rule makes of them, and the timings.

    malignancy / lesion_type: probability per label, in each package's label order (dicts keep order).
    malignancy_probability: the score the malignancy call was made on: the malignancy model's probabilities summed
      over its malignant_labels, or, where the malignancy package's `decision_scores` say so for the image's domain,
      lesion_type_malignant_probability.
    malignancy_flag: whether that score reaches the malignancy package's threshold for the image's domain.
    lesion_check: whether the image looks like a skin-lesion close-up (None when no lesion-check package is used).
    image_domain: dermoscopy, clinical or not_lesion, with the check's probabilities (None without a lesion check,
      and the call is then made as for dermoscopy, the domain the models were validated on).
    lesion_type_malignant_probability: the sum over the lesion-type model's malignant labels (a second
      opinion from the other model; the two are trained separately and need not agree).
    lesion_type_top: the top-k lesion types, most probable first.
    attention: where the model looked (`skin_demo.attention`), for "malignancy" (the call's answer, in the package
      whose score made it) and "lesion_type" (the top type); empty for packages without the attention output.
    timings_ms: decode, preprocess, inference and total, in milliseconds.
    """

    malignancy: dict[str, float]
    lesion_type: dict[str, float]
    malignancy_probability: float
    malignancy_flag: MalignancyFlag
    lesion_check: LesionCheck | None
    lesion_type_malignant_probability: float
    lesion_type_top: tuple[RankedLabel, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    image_domain: ImageDomain | None = None
    attention: dict[str, AttentionMap] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (the API's answer, without model descriptions)."""
        return {
            "malignancy": dict(self.malignancy),
            "lesion_type": dict(self.lesion_type),
            "malignancy_probability": self.malignancy_probability,
            "malignancy_flag": self.malignancy_flag.to_json(),
            "lesion_check": None if self.lesion_check is None else self.lesion_check.to_json(),
            "image_domain": None if self.image_domain is None else self.image_domain.to_json(),
            "lesion_type_malignant_probability": self.lesion_type_malignant_probability,
            "lesion_type_top": [
                {"label": r.label, "name": r.name, "probability": r.probability} for r in self.lesion_type_top
            ],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
            "attention": {shown: a.to_json() for shown, a in self.attention.items()} or None,
        }


class Predictor:
    """Runs the malignancy, lesion-type and (optional) lesion-check packages on an image.

    Thread-safe: keeps no per-request state.
    """

    def __init__(
        self,
        malignancy: ModelPack,
        lesion_type: ModelPack,
        lesion_check: ModelPack | None = None,
        *,
        top_k: int = TOP_K,
    ) -> None:
        self.malignancy = malignancy
        self.lesion_type = lesion_type
        self.lesion_check = lesion_check
        self.top_k = top_k
        self.packs = tuple(p for p in (malignancy, lesion_type, lesion_check) if p is not None)
        # Decode JPEGs only at the detail the largest model input needs: the shorter side that preprocess
        # resizes to before cropping.
        self._draft_size = max(p.config.preprocess.resize_shorter_side for p in self.packs)

    @classmethod
    def from_models(cls, models: Mapping[str, ModelPack], *, top_k: int = TOP_K) -> Predictor:
        """A Predictor for the packages in use, by task (`skin_demo.hub.load_models`); the lesion check is optional."""
        return cls(models["malignancy"], models["lesion_type"], models.get("lesion_check"), top_k=top_k)

    def predict(self, image: ImageSource) -> Prediction:
        """Analyse one image (a path, bytes, a file object or a PIL image).

        Raises imaging.ImageError for input that is not a usable image.
        """
        return self.predict_with_image(image)[0]

    def predict_with_image(self, image: ImageSource) -> tuple[Prediction, Image.Image]:
        """`predict`, and the decoded upright image it analysed (for the page's thumbnail; nothing keeps it)."""
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
        outputs = self.outputs(tensors)
        probs = {pack.config.task: _by_label(pack, pack.calibrated(outputs[pack.config.task][OUTPUT_NAME])[0])
                 for pack in self.packs}  # fmt: skip
        inferred = time.perf_counter()

        mal_config, type_config = self.malignancy.config, self.lesion_type.config
        mal_probs, lesion_probs = probs[mal_config.task], probs[type_config.task]
        check = domain = None
        decide_for = DERMOSCOPY
        if self.lesion_check is not None:
            check_probs, check_config = probs[self.lesion_check.config.task], self.lesion_check.config
            check = postprocess.lesion_check(check_probs, check_config)
            domain = postprocess.image_domain(check_probs, check_config)
            decide_for = postprocess.decision_domain(domain)
        score = postprocess.malignancy_score(decide_for, mal_probs, mal_config, lesion_probs, type_config)
        flag = postprocess.malignancy_flag(score, mal_config, decide_for)
        ranked = sorted(lesion_probs.items(), key=lambda item: -item[1])[: self.top_k]
        attention = self._attention(flag, ranked[0][0], outputs, probs, rgb)
        timings = {
            "decode": 1000 * (decoded - start),
            "preprocess": 1000 * (preprocessed - decoded),
            "inference": 1000 * (inferred - preprocessed),
        }
        timings["total"] = 1000 * (time.perf_counter() - start)
        return Prediction(
            malignancy=mal_probs,
            lesion_type=lesion_probs,
            malignancy_probability=score,
            malignancy_flag=flag,
            lesion_check=check,
            lesion_type_malignant_probability=postprocess.positive_probability(lesion_probs, type_config),
            lesion_type_top=tuple(RankedLabel(label, display_name(label), p) for label, p in ranked),
            timings_ms=timings,
            image_domain=domain,
            attention=attention,
        ), rgb

    def outputs(self, tensors: Mapping[PreprocessConfig, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Each task's outputs for a batch preprocessed per config; the heads of one package share its graph (and
        its input), so one run of it answers them all."""
        runs: dict[object, dict[str, np.ndarray]] = {}
        for pack in self.packs:
            if pack.graph not in runs:
                runs[pack.graph] = pack.graph_outputs(tensors[pack.config.preprocess])
        return {pack.config.task: pack.own_outputs(runs[pack.graph]) for pack in self.packs}

    def _attention(self, flag: MalignancyFlag, top_label: str, outputs: dict[str, dict[str, np.ndarray]],
                   probs: dict[str, dict[str, float]], rgb: Image.Image) -> dict[str, AttentionMap]:
        """Where the model looked, for the malignancy call (in the package its score came from) and the top lesion
        type; a package without the attention output gives no map."""
        scored = {pack.config.task: pack for pack in self.packs}[postprocess.SCORE_TASKS[flag.score_from]]
        answers = {
            "malignancy": (scored, postprocess.answer_labels(flag, scored.config)),
            "lesion_type": (self.lesion_type, (top_label,)),
        }
        return {
            shown: attention_map(outputs[pack.config.task][ATTENTION_OUTPUT][0],
                                 np.array(list(probs[pack.config.task].values())), pack.config, answer,
                                 rgb.size, source_size(rgb))
            for shown, (pack, answer) in answers.items() if pack.has_attention
        }  # fmt: skip


def _by_label(pack: ModelPack, probabilities: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(pack.config.labels, probabilities, strict=True)}
