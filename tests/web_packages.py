"""Tiny packages for the on-device page's tests: the three tasks the page runs, built with tests/tiny_packages.py.

The lesion-check package has the contract's labels ["lesion", "not_lesion"], no malignant labels and a
decision_threshold; malignancy and lesion_type use bicubic resizing (as the trained packages do) and the lesion check
bilinear, so the page has to handle two preprocessing configs in one analysis.
"""

from __future__ import annotations

from pathlib import Path

from tests.tiny_packages import make_package

LESION_CHECK_THRESHOLD = 0.5
SIZE = (32, 32)


def preprocess_section(interpolation: str, size: tuple[int, int] = SIZE, crop_pct: float = 1.0) -> dict:
    return {
        "size": list(size),
        "resize": "shorter_side_then_center_crop",
        "crop_pct": crop_pct,
        "interpolation": interpolation,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.6, 0.7, 0.8],
    }


def make_lesion_check_package(folder: Path | str, threshold: float = LESION_CHECK_THRESHOLD) -> Path:
    """A tiny valid `lesion_check` package (P(lesion) >= threshold passes)."""
    return make_package(
        folder,
        "lesion_check",
        labels=("lesion", "not_lesion"),
        malignant_labels=(),
        config_overrides={"decision_threshold": threshold, "preprocess": preprocess_section("bilinear")},
    )


def make_three_packages(root: Path | str) -> Path:
    """A models/ folder with tiny malignancy, lesion_type and lesion_check packages."""
    root = Path(root)
    bicubic = {"preprocess": preprocess_section("bicubic"), "decision_threshold": 0.3}
    make_package(root / "malignancy", "malignancy", config_overrides=bicubic)
    make_package(root / "lesion_type", "lesion_type", config_overrides={"preprocess": preprocess_section("bicubic")})
    make_lesion_check_package(root / "lesion_check")
    return root
