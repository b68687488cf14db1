"""Tiny packages for the on-device page's tests: the three tasks the page runs, built with tests/tiny_packages.py.

The lesion check tells the image domains apart (labels dermoscopy / clinical / not_lesion, or in its older form
lesion / not_lesion) and has a decision_threshold; the malignancy package decides per domain (clinical photos on the
lesion-type sum, at their own threshold). Malignancy and lesion_type use bicubic resizing (as the trained packages do)
and the lesion check bilinear, so the page has to handle two preprocessing configs in one analysis. The same
malignancy and lesion_type packages also come as one package with a head per task (make_combined_packages).
"""

from __future__ import annotations

from pathlib import Path

from skin_demo.config import ATTENTION_OUTPUT

from tests.tiny_packages import DOMAIN_CHECK_LABELS, combine_classifiers, make_package, per_domain_overrides

LESION_CHECK_THRESHOLD = 0.5
SIZE = (32, 32)
# What the tiny three-way check (temperature 1, threshold 0.5) makes of plain colours, far from its threshold.
SKIN = (217, 165, 143)  # dermoscopy
GREEN = (30, 200, 30)  # clinical
DARK = (20, 20, 20)  # not_lesion


def preprocess_section(interpolation: str, size: tuple[int, int] = SIZE, crop_pct: float = 1.0) -> dict:
    return {
        "size": list(size),
        "resize": "shorter_side_then_center_crop",
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.6, 0.7, 0.8],
    }


def make_lesion_check_package(folder: Path | str, threshold: float = LESION_CHECK_THRESHOLD, *,
                              domains: bool = True) -> Path:  # fmt: skip
    """A tiny valid `lesion_check` package: three-way (P(dermoscopy) + P(clinical) >= threshold passes), or with
    domains=False the older two-label form (P(lesion) >= threshold passes)."""
    return make_package(
        folder,
        "lesion_check",
        labels=DOMAIN_CHECK_LABELS if domains else ("lesion", "not_lesion"),
        malignant_labels=(),
        config_overrides={"decision_threshold": threshold, "preprocess": preprocess_section("bilinear")},
    )


def make_three_packages(root: Path | str, *, domains: bool = True) -> Path:
    """A models/ folder with tiny malignancy, lesion_type and lesion_check packages; domains=False: the older
    two-label check, a malignancy package with one threshold, and no attention maps."""
    root = Path(root)
    malignancy = {"preprocess": preprocess_section("bicubic"), "decision_threshold": 0.3}
    if domains:
        malignancy.update(per_domain_overrides(0.3))
    # The newer packages give the attention map, the older ones (domains=False) do not.
    attention = {"extra_outputs": (ATTENTION_OUTPUT,)} if domains else {}
    make_package(root / "malignancy", "malignancy", config_overrides=malignancy, **attention)
    make_package(root / "lesion_type", "lesion_type", config_overrides={"preprocess": preprocess_section("bicubic")},
                 **attention)
    make_lesion_check_package(root / "lesion_check", domains=domains)
    return root


def make_combined_packages(root: Path | str) -> Path:
    """A models/ folder in `root` with make_three_packages' packages, malignancy and lesion_type combined into one
    package with a head per task (`classifiers`, by skin_demo.train.combine; the two share their feature nodes)."""
    models = make_three_packages(Path(root) / "models")
    combine_classifiers(models)
    return models
