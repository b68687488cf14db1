"""The words both pages show (the Gradio page in `ui`, the on-device page through manifest.json from `web.site`).

Below both page modules, so neither has to import the other for its texts. The words about a malignancy call depend
on the image domain: for dermoscopy they are the page's usual headline; for an ordinary photo they say plainly that
such photos are much harder, quote the malignancy package's measured figures for them (`metrics.per_domain`), and
never let a result below the threshold read as an all-clear.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from skin_demo.config import DOMAINS, PackageConfig
from skin_demo.postprocess import CLINICAL, LESION_TYPE_SUM, domain_threshold, score_from
from skin_demo.taxonomy import display_name

DISCLAIMER_SHORT = "Research demo, not a diagnosis. If a spot on your skin worries you, see a doctor."
DISCLAIMER = (
    "Research demo, not a diagnosis. These models learned mostly from dermoscopy images, make mistakes (more "
    "on phone photos) and are not clinically validated. Do not use them to decide whether to see a "
    "doctor: if a spot on your skin worries you, changes, bleeds or itches, see a doctor or dermatologist."
)
FLAGGED = "Above the model's alert threshold"
NOT_FLAGGED = "Below the model's alert threshold"
CLINICAL_NOT_FLAGGED = "Below the model's alert threshold, but a photo cannot rule anything out"
CLINICAL_HARDER = "Ordinary photos are much harder for the model than dermoscopy images."
CLINICAL_UNVALIDATED = "It was not validated on ordinary photos, so its answer may mean little."
# Its clinical test photos are dermatology-atlas pictures; on the same photos disturbed as a camera might
# (README: "How much these figures depend on clean photos") every figure but sensitivity fell.
CLINICAL_ATLAS = "Those test photos came from dermatology atlases; a phone photo may fare worse."
# What the threshold means, in the words of the tests behind it (the one place a page shows the threshold).
THRESHOLD_LINE = "The model raises an alert from {threshold} malignant."
MEASURED = (
    "At that level, in tests on {photos} it never saw, it caught {caught} of 10 cancers and raised false alarms on "
    "{alarms} of 10 harmless spots."
)
NOT_MEASURED = "It has no test figures for {photos}."
PHOTOS = {"dermoscopy": "dermoscopy images", CLINICAL: "ordinary photos"}
CLINICAL_SEE_A_DOCTOR = {
    True: "Show this spot to a doctor.",
    False: "If a spot worries you, changes or bleeds, see a doctor.",
}
# "Where the model looked" (skin_demo.attention): the switch's labels, by map, and what a map is and is not.
MAP_SWITCHES = {"malignancy": "malignancy answer", "lesion_type": "lesion type"}
MAP_CAPTION = "Shaded: where the model's evidence for its answer came from. Not a diagnosis, not the lesion's border."
SCORE_NAMES = {  # who gives the number the call was made on (postprocess.score_from)
    "binary_head": "the malignancy model",
    LESION_TYPE_SUM: "the lesion-type model (its malignant types together)",
}


@dataclass(frozen=True)
class FlagWords:
    """What a page says about one malignancy call.

    domain_name: the image domain as shown ("Dermoscopy image", "Ordinary photo").
    headline: above or below the alert threshold (never reassurance).
    threshold_line: the threshold and what it caught and missed in tests on this domain's photos, in plain words.
    caveat: the domain's plain warning, shown above the charts; empty for dermoscopy.
    score_name: who gave the number the call was made on, e.g. "the malignancy model".
    """

    domain_name: str
    headline: str
    threshold_line: str
    caveat: str
    score_name: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def flag_words(flagged: bool, domain: str, malignancy_config: PackageConfig) -> FlagWords:
    """The words for a malignancy call in `domain` (postprocess.MalignancyFlag's `flagged` and `domain`)."""
    score_name = SCORE_NAMES[score_from(malignancy_config, domain)]
    figures = _measured(malignancy_config.metrics, domain)
    photos = PHOTOS.get(domain, display_name(domain))
    threshold_line = " ".join((
        THRESHOLD_LINE.format(threshold=percentage(domain_threshold(malignancy_config, domain))),
        NOT_MEASURED.format(photos=photos) if figures is None else MEASURED.format(photos=photos, **figures),
    ))
    if domain != CLINICAL:
        return FlagWords(display_name(domain), FLAGGED if flagged else NOT_FLAGGED, threshold_line, "", score_name)
    caveat = " ".join((CLINICAL_HARDER, CLINICAL_UNVALIDATED if figures is None else CLINICAL_ATLAS,
                       CLINICAL_SEE_A_DOCTOR[flagged]))  # fmt: skip
    return FlagWords(display_name(domain), FLAGGED if flagged else CLINICAL_NOT_FLAGGED, threshold_line, caveat,
                     score_name)  # fmt: skip


def percentage(p: float) -> str:
    """A probability as pages show it: two significant digits ("7.8 %", "0.13 %", "18 %")."""
    return f"{float(f'{100 * p:.2g}'):g} %"


def all_flag_words(malignancy_config: PackageConfig) -> dict[str, dict[str, dict[str, str]]]:
    """flag_words for every domain and outcome, as {domain: {"flagged" | "not_flagged": FlagWords as JSON}}: what
    the on-device page looks its words up in."""
    return {
        domain: {key: flag_words(flagged, domain, malignancy_config).to_json()
                 for key, flagged in (("flagged", True), ("not_flagged", False))}
        for domain in DOMAINS
    }  # fmt: skip


def _tenths(rate: float) -> float:
    """A rate as a number of 10, rid of float noise (0.7 * 10 is 7.000000000000001) before it is rounded."""
    return round(10 * rate, 6)


def _measured(metrics: dict[str, Any], domain: str) -> dict[str, int] | None:
    """How many of 10 cancers the package caught and of 10 harmless spots it flagged on `domain`'s test photos, or
    None where it records no such test. Rounded so as never to flatter it: cancers caught down, false alarms up
    (a sensitivity of 0.85 is "8 of 10", not 9: the test does not support 9)."""
    figures = metrics.get("per_domain", {})
    figures = figures.get(domain) if isinstance(figures, dict) else None
    if not isinstance(figures, dict):
        return None
    sensitivity, specificity = figures.get("sensitivity"), figures.get("specificity")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
               for v in (sensitivity, specificity)):  # fmt: skip
        return None
    return {"caught": math.floor(_tenths(sensitivity)), "alarms": math.ceil(_tenths(1 - specificity))}
