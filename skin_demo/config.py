"""The model-package config: the one description of labels and preprocessing that travels with the weights.

Training builds a `PackageConfig` once from the trained model and writes it both to `config.json` and into
`model.onnx` (metadata key `skin_demo.config`); serving reads it back. See DESIGN.md, "The model package".
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
ONNX_METADATA_KEY = "skin_demo.config"
RESIZE_MODES = ("shorter_side_then_center_crop",)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


class ConfigError(ValueError):
    """A package config is missing a field, has a wrong value, or an unknown format version."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How an RGB image becomes the model's input tensor (mirrors timm's resolved data config)."""

    size: tuple[int, int] = (224, 224)  # (height, width)
    resize: str = "shorter_side_then_center_crop"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 8:
            raise ConfigError(f"preprocess.size must be [height, width] of at least 8 px, got {self.size!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"preprocess.resize {self.resize!r} is not one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess.interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"preprocess.crop_pct must be in (0, 1], got {self.crop_pct!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocess.mean and preprocess.std need 3 values each, std > 0")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PreprocessConfig:
        try:
            return cls(
                size=tuple(int(v) for v in raw["size"]),
                resize=str(raw.get("resize", "shorter_side_then_center_crop")),
                crop_pct=float(raw.get("crop_pct", 1.0)),
                interpolation=str(raw["interpolation"]),
                mean=tuple(float(v) for v in raw["mean"]),
                std=tuple(float(v) for v in raw["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad preprocess section: {exc!r}") from exc


@dataclass(frozen=True)
class PackageConfig:
    """Everything serving needs to know about one model package besides its weights."""

    task: str
    labels: tuple[str, ...]
    malignant_labels: tuple[str, ...]
    preprocess: PreprocessConfig
    architecture: str
    temperature: float = 1.0
    # Probability of malignancy at or above which the package calls an image "malignant" (malignancy task).
    decision_threshold: float | None = None
    # Further ONNX outputs beyond `logits`, by name (none for the bundled models).
    extra_outputs: tuple[str, ...] = ()
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"unknown format_version {self.format_version!r} (this code reads {FORMAT_VERSION})")
        if not self.labels:
            raise ConfigError("labels is empty")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels are not unique: {list(self.labels)}")
        unknown = set(self.malignant_labels) - set(self.labels)
        if unknown:
            raise ConfigError(f"malignant_labels {sorted(unknown)} are not in labels")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["preprocess"]["size"] = list(self.preprocess.size)
        # Put format_version first so a reader sees it before anything else.
        return {"format_version": out.pop("format_version"), **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PackageConfig:
        if not isinstance(raw, dict):
            raise ConfigError("config is not a JSON object")
        if raw.get("format_version") != FORMAT_VERSION:
            raise ConfigError(
                f"unknown format_version {raw.get('format_version')!r} (this code reads {FORMAT_VERSION})"
            )
        try:
            threshold = raw.get("decision_threshold")
            return cls(
                format_version=int(raw["format_version"]),
                task=str(raw["task"]),
                labels=tuple(str(v) for v in raw["labels"]),
                malignant_labels=tuple(str(v) for v in raw.get("malignant_labels", ())),
                preprocess=PreprocessConfig.from_dict(raw["preprocess"]),
                architecture=str(raw.get("architecture", "")),
                temperature=float(raw.get("temperature", 1.0)),
                decision_threshold=None if threshold is None else float(threshold),
                extra_outputs=tuple(str(v) for v in raw.get("extra_outputs", ())),
                metrics=dict(raw.get("metrics", {})),
                provenance=dict(raw.get("provenance", {})),
            )
        except KeyError as exc:
            raise ConfigError(f"config has no {exc.args[0]!r} field") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"bad config value: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> PackageConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON: {exc}") from exc
        return cls.from_dict(raw)
