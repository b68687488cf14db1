"""The one post-processing rule: package probabilities -> what is shown and returned.

Serving (`predictor`), training's evaluation and the benchmarks all call these functions; the on-device page
receives the same thresholds and messages from the server (never its own copy), so every front end makes the
same call for the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from skin_demo.config import PackageConfig

DEFAULT_THRESHOLD = 0.5  # a package without a validated decision_threshold is called at even odds
LESION_LABEL = "lesion"  # the lesion-check package's positive label; its labels are ["lesion", "not_lesion"]

LESION_CHECK_PASSED_MESSAGE = "This looks like a close-up of a skin lesion, like the images the models were trained on."
LESION_CHECK_FAILED_MESSAGE = (
    "This does not look like a close-up of a single skin lesion, so the models' answer would mean nothing. "
    "They were trained on dermoscopy close-ups of one lesion each; try a sharp, well-lit close-up of one spot."
)


@dataclass(frozen=True)
class MalignancyFlag:
    """The malignancy call: flagged when the malignant probability reaches the package's threshold."""

    flagged: bool
    threshold: float

    def to_json(self) -> dict:
        return {"flagged": self.flagged, "threshold": self.threshold}


@dataclass(frozen=True)
class LesionCheck:
    """Whether the image looks like the lesion close-ups the models were trained on."""

    passed: bool
    score: float  # probability of "lesion" from the lesion-check package
    threshold: float
    message: str

    def to_json(self) -> dict:
        return {"passed": self.passed, "score": self.score, "threshold": self.threshold, "message": self.message}


def decision_threshold(config: PackageConfig) -> float:
    """The package's validated decision threshold, or DEFAULT_THRESHOLD where it records none."""
    return DEFAULT_THRESHOLD if config.decision_threshold is None else float(config.decision_threshold)


def positive_probability(probabilities: dict[str, float], config: PackageConfig) -> float:
    """P(malignant): the package's probabilities summed over its `malignant_labels`, clipped to [0, 1]."""
    total = sum(probabilities[label] for label in config.malignant_labels)
    return min(1.0, max(0.0, float(total)))


def malignancy_flag(malignant_probability: float, config: PackageConfig) -> MalignancyFlag:
    """Flag the image when P(malignant) >= the package's threshold."""
    threshold = decision_threshold(config)
    return MalignancyFlag(flagged=bool(malignant_probability >= threshold), threshold=threshold)


def lesion_check(probabilities: dict[str, float], config: PackageConfig) -> LesionCheck:
    """Pass the image when P(lesion) from the lesion-check package >= its threshold."""
    score = min(1.0, max(0.0, float(probabilities[LESION_LABEL])))
    threshold = decision_threshold(config)
    passed = bool(score >= threshold)
    return LesionCheck(
        passed=passed,
        score=score,
        threshold=threshold,
        message=LESION_CHECK_PASSED_MESSAGE if passed else LESION_CHECK_FAILED_MESSAGE,
    )
