"""The fields of /predict's answer as typed dicts: Gradio derives the endpoint's documented types from them
(`view_api()`, the page's "Use via API"), and the README's API section describes the same fields.

`Predictor.predict(...).to_json()` gives everything but `models`, `notices` and `disclaimer`, which the app adds.
Fields are only ever added, never renamed or dropped.
"""

from __future__ import annotations

from typing import Any, TypedDict


class MalignancyFlagJSON(TypedDict):
    flagged: bool  # the score reached the threshold of the image's domain
    threshold: float
    domain: str  # "dermoscopy" or "clinical": whose threshold and score were used
    score_from: str  # "binary_head" or "lesion_type_sum"


class LesionCheckJSON(TypedDict):
    passed: bool
    score: float
    threshold: float
    message: str


class ImageDomainJSON(TypedDict):
    label: str  # "dermoscopy", "clinical" or "not_lesion"
    probabilities: dict[str, float]


class RankedLabelJSON(TypedDict):
    label: str
    name: str
    probability: float


class AttentionMapJSON(TypedDict):
    task: str  # the package whose map it is
    labels: list[str]  # the answer it is evidence for
    grid: list[list[float]]  # rows from the top, values in [0, 1]
    box: list[float]  # left, top, right, bottom of the square the model saw, in the uploaded photo's pixels


class PredictionJSON(TypedDict):
    malignancy: dict[str, float]
    lesion_type: dict[str, float]
    malignancy_probability: float
    malignancy_flag: MalignancyFlagJSON
    lesion_check: LesionCheckJSON | None
    image_domain: ImageDomainJSON | None
    lesion_type_malignant_probability: float
    lesion_type_top: list[RankedLabelJSON]
    timings_ms: dict[str, float]
    attention: dict[str, AttentionMapJSON] | None  # "malignancy" and "lesion_type"; None for packages without maps
    models: dict[str, dict[str, Any]]
    notices: dict[str, str]
    disclaimer: str
