"""The one post-processing rule: package probabilities -> what is shown and returned.

1. The lesion check finds the image domain: `dermoscopy`, `clinical` (an ordinary camera close-up) or `not_lesion`.
2. The malignancy call is made per domain: on the score that domain's decision uses (`decision_scores`: the
   malignancy package's P(malignant), or the lesion-type package's malignant sum), at that domain's validated
   threshold (`decision_thresholds`).

Serving (`predictor`), training's evaluation and the benchmarks all call these functions; the on-device page
(static/engine.js) is their twin and receives the thresholds from the packages and the messages from the server
(never its own copy), so every front end makes the same call for the same numbers.

Two forms of lesion-check package are read:
- labels ["dermoscopy", "clinical", "not_lesion"]: passes when P(dermoscopy) + P(clinical) >= its threshold; the
  domain is then the larger of the two.
- labels ["lesion", "not_lesion"] (packages made before the clinical domain existed): passes when P(lesion) >= its
  threshold; the only domain it knew is dermoscopy, so a passed image is `dermoscopy` and the domain's
  probabilities are reported as {"dermoscopy": P(lesion), "not_lesion": P(not_lesion)} (no `clinical` key: that
  package cannot tell).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skin_demo.config import DECISION_SCORES, DOMAINS, PackageConfig

DEFAULT_THRESHOLD = 0.5  # a package without a validated decision_threshold is called at even odds
DERMOSCOPY, CLINICAL = DOMAINS
NOT_LESION = "not_lesion"
DOMAIN_LABELS = (DERMOSCOPY, CLINICAL, NOT_LESION)  # the lesion-check package's labels
LESION_LABEL = "lesion"  # the positive label of the older two-label lesion-check package
BINARY_HEAD, LESION_TYPE_SUM = DECISION_SCORES
# Whose malignant-label sum each decision score is, by package task.
SCORE_TASKS = {BINARY_HEAD: "malignancy", LESION_TYPE_SUM: "lesion_type"}

LESION_CHECK_PASSED_MESSAGE = "This looks like a close-up of a skin lesion, like the images the models were trained on."
LESION_CHECK_CLINICAL_MESSAGE = (
    "This looks like an ordinary photo of a skin lesion, not a dermoscopy image like the ones the models were "
    "trained on."
)
LESION_CHECK_FAILED_MESSAGE = (
    "This does not look like a close-up of a single skin lesion, so the models' answer would mean nothing. "
    "They learned from close-ups of one lesion each; try a sharp, well-lit close-up of one spot."
)
LESION_CHECK_MESSAGES = {
    DERMOSCOPY: LESION_CHECK_PASSED_MESSAGE,
    CLINICAL: LESION_CHECK_CLINICAL_MESSAGE,
    NOT_LESION: LESION_CHECK_FAILED_MESSAGE,
}


@dataclass(frozen=True)
class MalignancyFlag:
    """The malignancy call: flagged when the score reaches the threshold of the domain the call was made for.

    score_from: what the score was (DECISION_SCORES): the malignancy package's own P(malignant), or the lesion-type
    package's malignant sum.
    """

    flagged: bool
    threshold: float
    domain: str = DERMOSCOPY
    score_from: str = BINARY_HEAD

    def to_json(self) -> dict:
        return {"flagged": self.flagged, "threshold": self.threshold, "domain": self.domain,
                "score_from": self.score_from}  # fmt: skip


@dataclass(frozen=True)
class LesionCheck:
    """Whether the image looks like a skin-lesion close-up (dermoscopy or an ordinary photo)."""

    passed: bool
    score: float  # P(dermoscopy) + P(clinical), or P(lesion) from an older two-label package
    threshold: float
    message: str

    def to_json(self) -> dict:
        return {"passed": self.passed, "score": self.score, "threshold": self.threshold, "message": self.message}


@dataclass(frozen=True)
class ImageDomain:
    """What kind of image the lesion check saw: `label` is one of DOMAIN_LABELS; `probabilities` are the check's,
    by domain label (see the module docstring for an older two-label package)."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"label": self.label, "probabilities": dict(self.probabilities)}


def reaches(score: float, threshold: float) -> bool:
    """The one comparison every call makes (malignancy flag, lesion check, training's reports): a score at or above
    its threshold."""
    return bool(score >= threshold)


def decision_threshold(config: PackageConfig) -> float:
    """The package's validated decision threshold, or DEFAULT_THRESHOLD where it records none."""
    return DEFAULT_THRESHOLD if config.decision_threshold is None else float(config.decision_threshold)


def domain_threshold(config: PackageConfig, domain: str) -> float:
    """The threshold a malignancy call for `domain` uses: decision_thresholds[domain], else decision_threshold,
    else DEFAULT_THRESHOLD."""
    threshold = config.decision_thresholds.get(domain)
    return decision_threshold(config) if threshold is None else float(threshold)


def score_from(config: PackageConfig, domain: str) -> str:
    """What the malignancy call for `domain` is made on (a DECISION_SCORES name); "binary_head" by default."""
    return config.decision_scores.get(domain, BINARY_HEAD)


def positive_probability(probabilities: dict[str, float], config: PackageConfig) -> float:
    """P(malignant): the package's probabilities summed over its `malignant_labels`, clipped to [0, 1]."""
    total = sum(probabilities[label] for label in config.malignant_labels)
    return _clip(total)


def answer_labels(flag: MalignancyFlag, scored_config: PackageConfig) -> tuple[str, ...]:
    """The labels of the answer the malignancy call gave, in the package whose score it was made on (`scored_config`,
    SCORE_TASKS[flag.score_from]): its malignant labels when flagged, the others when not. The page's "where the
    model looked" shows the evidence for these."""
    malignant = scored_config.malignant_labels
    return malignant if flag.flagged else tuple(label for label in scored_config.labels if label not in malignant)


def is_lesion_check(config: PackageConfig) -> bool:
    """Whether a package has the labels of a lesion check, in either form (see the module docstring)."""
    labels = set(config.labels)
    return set(DOMAIN_LABELS) <= labels or {LESION_LABEL, NOT_LESION} <= labels


def image_domain(check_probabilities: dict[str, float], check_config: PackageConfig) -> ImageDomain:
    """The image domain from the lesion-check package's probabilities (by label) and its config.

    Passed (the lesion score reaches the check's threshold): the larger of P(dermoscopy) and P(clinical), dermoscopy
    on a tie; otherwise `not_lesion`. Raises KeyError when the probabilities lack the package's labels.
    """
    if LESION_LABEL in check_config.labels:  # the older two-label form: it knew one domain
        probabilities = {DERMOSCOPY: _clip(check_probabilities[LESION_LABEL]),
                         NOT_LESION: _clip(check_probabilities[NOT_LESION])}  # fmt: skip
    else:
        probabilities = {label: _clip(check_probabilities[label]) for label in DOMAIN_LABELS}
    if not reaches(_lesion_score(check_probabilities, check_config), decision_threshold(check_config)):
        return ImageDomain(NOT_LESION, probabilities)
    return ImageDomain(_likelier_domain(probabilities), probabilities)


def lesion_check(probabilities: dict[str, float], config: PackageConfig) -> LesionCheck:
    """Pass the image when its lesion score (P(dermoscopy) + P(clinical), or P(lesion)) reaches the check's
    threshold; the message says which domain it found, or why the answer would mean nothing."""
    score = _lesion_score(probabilities, config)
    domain = image_domain(probabilities, config)
    return LesionCheck(
        passed=domain.label != NOT_LESION,
        score=score,
        threshold=decision_threshold(config),
        message=LESION_CHECK_MESSAGES[domain.label],
    )


def decision_domain(domain: ImageDomain) -> str:
    """The domain whose decision applies: the image's own, or for a `not_lesion` image (whose numbers a visitor may
    still ask to see) the likelier of dermoscopy and clinical."""
    return domain.label if domain.label in DOMAINS else _likelier_domain(domain.probabilities)


def malignancy_score(
    domain: str,
    malignancy_probs: dict[str, float],
    malignancy_config: PackageConfig,
    lesion_type_probs: dict[str, float] | None,
    lesion_type_config: PackageConfig | None,
) -> float:
    """The score the malignancy call for `domain` is made on, as the malignancy package's `decision_scores` say:
    its own P(malignant), or the lesion-type package's probabilities summed over its malignant_labels.

    Raises ValueError when the lesion-type sum is asked for without the lesion-type probabilities and config.
    """
    if score_from(malignancy_config, domain) == BINARY_HEAD:
        return positive_probability(malignancy_probs, malignancy_config)
    if lesion_type_probs is None or lesion_type_config is None:
        raise ValueError(f"the {domain} decision is made on the lesion-type sum: pass the lesion-type probabilities")
    return positive_probability(lesion_type_probs, lesion_type_config)


def malignancy_flag(score: float, config: PackageConfig, domain: str = DERMOSCOPY) -> MalignancyFlag:
    """Flag the image when `score` (see malignancy_score) >= the malignancy package's threshold for `domain`."""
    threshold = domain_threshold(config, domain)
    return MalignancyFlag(flagged=reaches(score, threshold), threshold=threshold, domain=domain,
                          score_from=score_from(config, domain))  # fmt: skip


def _lesion_score(probabilities: dict[str, float], config: PackageConfig) -> float:
    if LESION_LABEL in config.labels:
        return _clip(probabilities[LESION_LABEL])
    return _clip(probabilities[DERMOSCOPY] + probabilities[CLINICAL])


def _likelier_domain(probabilities: dict[str, float]) -> str:
    return DERMOSCOPY if probabilities.get(DERMOSCOPY, 0.0) >= probabilities.get(CLINICAL, 0.0) else CLINICAL


def _clip(value: float) -> float:
    return min(1.0, max(0.0, float(value)))
