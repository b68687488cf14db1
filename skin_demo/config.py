"""The model-package contract in one place: file and tensor names, the config that travels with the weights.

Training builds a `PackageConfig` once from the trained model and writes it both to `config.json` and into
`model.onnx` (metadata key `skin_demo.config`); serving reads it back and refuses any value it could not use
safely. See DESIGN.md, "The model package".
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
# A package whose one graph has several heads (one network trained for several tasks): its config.json holds
# {"format_version": 2, "heads": [a format-1 config per task]}, and the graph names each head's outputs
# `<task>/<name>` (head_output). The backbone runs once for every head.
HEADS_FORMAT_VERSION = 2
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
PACKAGE_FILES = (CONFIG_FILE, MODEL_FILE, README_FILE)  # README.md (the model card) is optional for serving
ONNX_METADATA_KEY = "skin_demo.config"
INPUT_NAME = "image"  # float32 [N, 3, H, W]
OUTPUT_NAME = "logits"  # float32 [N, K], first output, in label order
# Optional output: the class-activation map float32 [N, K, h, w], computed in the graph from the last feature map
# and the classifier weights (each location's contribution to each logit, the bias left out).
ATTENTION_OUTPUT = "cam"
ATTENTION_DESCRIPTION = (
    "class-activation map [N, K, h, w]: each feature-map location's contribution to each logit (the last feature "
    "map times the classifier weights, bias left out); its mean over h and w is the logit minus the bias"
)

RESIZE_MODES = ("shorter_side_then_center_crop",)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
COLOR_CONSTANCY = ("none", "shades_of_gray")
# What serving accepts. Outside these a package is wrong or dangerous, not merely unusual: a crop_pct of 0.005
# makes preprocess resize every image to 6400 px (seconds and gigabytes per request), a temperature of 1e-30
# turns every answer into exactly 1.0 / 0.0.
SIZE_RANGE = (32, 1024)  # px, each side of the model input
CROP_PCT_RANGE = (0.5, 1.0)
TEMPERATURE_RANGE = (0.05, 20.0)
MEAN_RANGE = (0.0, 1.0)  # in units of the [0, 1] pixel scale preprocess works in
STD_RANGE = (0.01, 1.0)
COLOR_CONSTANCY_POWER_RANGE = (1.0, 16.0)
# The image domains a malignancy package may hold a decision for (the lesion check tells them apart), and what a
# domain's call may be made on: the package's own P(malignant) ("binary_head"), or the lesion-type package's
# probabilities summed over its malignant_labels ("lesion_type_sum").
DOMAINS = ("dermoscopy", "clinical")
DECISION_SCORES = ("binary_head", "lesion_type_sum")


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
    # Shades of Gray (Finlayson & Trezzi 2004) evens out the colour cast of different dermatoscopes and lights:
    # applied to the [0, 1] crop just before mean/std, in training, serving and the browser alike.
    color_constancy: str = "none"
    color_constancy_power: float = 6.0  # the Minkowski norm p; 6 is the usual choice for dermoscopy

    def __post_init__(self) -> None:
        low, high = SIZE_RANGE
        if len(self.size) != 2 or not all(low <= side <= high for side in self.size):
            raise ConfigError(f"preprocess.size must be [height, width], each {low}-{high} px, got {list(self.size)}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"preprocess.resize {self.resize!r} is not one of {RESIZE_MODES}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"preprocess.interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")
        _check_range("preprocess.crop_pct", self.crop_pct, CROP_PCT_RANGE)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("preprocess.mean and preprocess.std need 3 values each (R, G, B)")
        for value in self.mean:
            _check_range("preprocess.mean", value, MEAN_RANGE)
        for value in self.std:
            _check_range("preprocess.std", value, STD_RANGE)
        if self.color_constancy not in COLOR_CONSTANCY:
            raise ConfigError(
                f"preprocess.color_constancy {self.color_constancy!r} is not one of {COLOR_CONSTANCY}"
            )
        _check_range("preprocess.color_constancy_power", self.color_constancy_power, COLOR_CONSTANCY_POWER_RANGE)

    @property
    def resize_shorter_side(self) -> int:
        """The length preprocess resizes an image's shorter side to before the centre crop: timm's
        floor(size / crop_pct)."""
        return math.floor(min(self.size) / self.crop_pct)

    @classmethod
    def from_dict(cls, raw: Any) -> PreprocessConfig:
        if not isinstance(raw, dict):
            raise ConfigError("preprocess must be a JSON object")
        return cls(
            size=tuple(_number_list(raw, "size", "preprocess.size", integer=True)),
            resize=_string(raw, "resize", "preprocess.resize", default="shorter_side_then_center_crop"),
            crop_pct=_number(raw, "crop_pct", "preprocess.crop_pct", default=1.0),
            interpolation=_string(raw, "interpolation", "preprocess.interpolation"),
            mean=tuple(_number_list(raw, "mean", "preprocess.mean")),
            std=tuple(_number_list(raw, "std", "preprocess.std")),
            color_constancy=_string(raw, "color_constancy", "preprocess.color_constancy", default="none"),
            color_constancy_power=_number(
                raw, "color_constancy_power", "preprocess.color_constancy_power", default=6.0
            ),
        )


@dataclass(frozen=True)
class PackageConfig:
    """Everything serving needs to know about one model package besides its weights."""

    task: str
    labels: tuple[str, ...]
    malignant_labels: tuple[str, ...]
    preprocess: PreprocessConfig
    architecture: str
    temperature: float = 1.0
    # Probability of malignancy at or above which the package calls an image "malignant" (malignancy task): the
    # dermoscopy threshold, kept for readers that know no domains.
    decision_threshold: float | None = None
    # Per image domain (DOMAINS): the validated threshold, and what the call is made on (DECISION_SCORES; a domain
    # missing here uses decision_threshold and "binary_head").
    decision_thresholds: dict[str, float] = field(default_factory=dict)
    decision_scores: dict[str, str] = field(default_factory=dict)
    # Further ONNX outputs beyond `logits`: name -> what it holds (ATTENTION_OUTPUT: the class-activation map).
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"unknown format_version {self.format_version!r} (this code reads {FORMAT_VERSION})")
        if not self.task:
            raise ConfigError("task is empty")
        if not self.labels:
            raise ConfigError("labels is empty")
        if not all(self.labels):
            raise ConfigError(f"labels contains an empty name: {list(self.labels)}")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"labels are not unique: {list(self.labels)}")
        unknown = set(self.malignant_labels) - set(self.labels)
        if unknown:
            raise ConfigError(f"malignant_labels {sorted(unknown)} are not in labels")
        _check_range("temperature", self.temperature, TEMPERATURE_RANGE)
        if self.decision_threshold is not None:
            _check_threshold("decision_threshold", self.decision_threshold)
        _check_domains("decision_thresholds", self.decision_thresholds)
        for domain, threshold in self.decision_thresholds.items():
            _check_threshold(f"decision_thresholds.{domain}", threshold)
        dermoscopy = self.decision_thresholds.get("dermoscopy")
        if dermoscopy is not None and self.decision_threshold is not None and dermoscopy != self.decision_threshold:
            raise ConfigError(
                f"decision_thresholds.dermoscopy ({dermoscopy!r}) differs from decision_threshold "
                f"({self.decision_threshold!r}); decision_threshold is the dermoscopy one, for older readers"
            )
        _check_domains("decision_scores", self.decision_scores)
        for domain, score in self.decision_scores.items():
            if score not in DECISION_SCORES:
                raise ConfigError(f"decision_scores.{domain} {score!r} is not one of {DECISION_SCORES}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["preprocess"]["size"] = list(self.preprocess.size)
        # Put format_version first so a reader sees it before anything else.
        return {"format_version": out.pop("format_version"), **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, raw: Any) -> PackageConfig:
        """Build and validate a config from parsed JSON. Raises ConfigError saying which field is wrong."""
        if not isinstance(raw, dict):
            raise ConfigError("config is not a JSON object")
        version = raw.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise ConfigError(f"unknown format_version {version!r} (this code reads {FORMAT_VERSION})")
        _check_all_finite(raw)
        if "preprocess" not in raw:
            raise ConfigError("config has no 'preprocess' field")
        threshold = raw.get("decision_threshold")
        return cls(
            format_version=version,
            task=_string(raw, "task", "task"),
            labels=tuple(_string_list(raw, "labels")),
            malignant_labels=tuple(_string_list(raw, "malignant_labels", default=[])),
            preprocess=PreprocessConfig.from_dict(raw["preprocess"]),
            architecture=_string(raw, "architecture", "architecture", default=""),
            temperature=_number(raw, "temperature", "temperature", default=1.0),
            decision_threshold=None if threshold is None else _number(raw, "decision_threshold", "decision_threshold"),
            decision_thresholds=_number_map(raw, "decision_thresholds"),
            decision_scores=_string_map(raw, "decision_scores"),
            outputs=_outputs(raw),
            metrics=_object(raw, "metrics"),
            provenance=_object(raw, "provenance"),
        )

    @classmethod
    def from_json(cls, text: str) -> PackageConfig:
        return cls.from_dict(parse_json(text))


def head_output(task: str, name: str) -> str:
    """The graph's name for output `name` of the `task` head in a package with several heads."""
    return f"{task}/{name}"


def package_heads(raw: Any) -> dict[str, PackageConfig]:
    """The config of each task a package answers, by task, from its parsed config.json: format 1 holds one,
    format 2 one per entry of `heads`. The heads of one graph share its one input, so their preprocessing must be
    the same. Raises ConfigError saying which field is wrong."""
    if not isinstance(raw, dict):
        raise ConfigError("config is not a JSON object")
    version = raw.get("format_version")
    if type(version) is not int or version not in (FORMAT_VERSION, HEADS_FORMAT_VERSION):
        raise ConfigError(f"unknown format_version {version!r} (this code reads {FORMAT_VERSION} and "
                          f"{HEADS_FORMAT_VERSION})")  # fmt: skip
    if version == FORMAT_VERSION:
        config = PackageConfig.from_dict(raw)
        return {config.task: config}
    unknown = sorted(set(raw) - {"format_version", "heads"})
    if unknown:
        raise ConfigError(f"a package with several heads has only format_version and heads; found {unknown}")
    heads = raw.get("heads")
    if not isinstance(heads, list) or not heads:
        raise ConfigError(f"heads must be a non-empty list of package configs, got {_excerpt(heads)}")
    configs: dict[str, PackageConfig] = {}
    for i, head in enumerate(heads):
        try:
            config = PackageConfig.from_dict(head)
        except ConfigError as exc:
            raise ConfigError(f"heads[{i}]: {exc}") from None
        if config.task in configs:
            raise ConfigError(f"heads[{i}]: a second head for task {config.task!r}")
        first = next(iter(configs.values()), config)
        if config.preprocess != first.preprocess:
            raise ConfigError(f"heads[{i}] ({config.task}): its preprocess differs from {first.task}'s; the heads "
                              "of one graph share its input")  # fmt: skip
        configs[config.task] = config
    return configs


def parse_json(text: str) -> Any:
    """json.loads, with every way a hostile document can fail turned into ConfigError: bad syntax, the tokens
    NaN / Infinity (not JSON, though Python's parser takes them), and nesting deep enough to exhaust the stack."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc})") from None
    except RecursionError:
        raise ConfigError("not a usable JSON document (nested too deeply)") from None


def _refuse_constant(name: str) -> Any:
    raise ConfigError(f"not valid JSON ({name} is not a JSON number; every number in a package config must be finite)")


def _check_all_finite(raw: Any) -> None:
    """Refuse NaN and infinities anywhere (metrics and provenance too: the page shows them). Walks the document
    with an explicit stack, so a deeply nested document cannot exhaust Python's."""
    stack = [("", raw)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where or 'config'} is {value!r}; every number in a package config must be finite")
        if isinstance(value, dict):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if not (isinstance(value, (int, float)) and low <= value <= high):  # also False for NaN
        raise ConfigError(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def _check_threshold(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be strictly between 0 and 1, got {value!r}")


def _check_domains(name: str, mapping: dict[str, Any]) -> None:
    unknown = sorted(set(mapping) - set(DOMAINS))
    if unknown:
        raise ConfigError(f"{name} has unknown domains {unknown}; the domains are {list(DOMAINS)}")


def _field(raw: dict[str, Any], key: str, default: Any) -> Any:
    if key in raw:
        return raw[key]
    if default is _REQUIRED:
        raise ConfigError(f"config has no {key!r} field")
    return default


_REQUIRED: Any = object()


def _string(raw: dict[str, Any], key: str, name: str, default: Any = _REQUIRED) -> str:
    value = _field(raw, key, default)
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {_type_name(value)}")
    return value


def _number(raw: dict[str, Any], key: str, name: str, default: Any = _REQUIRED) -> float:
    value = _field(raw, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {_type_name(value)}")
    return float(value)


def _number_list(raw: dict[str, Any], key: str, name: str, *, integer: bool = False) -> list[Any]:
    value = _field(raw, key, _REQUIRED)
    kind = (int,) if integer else (int, float)
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        what = "whole numbers" if integer else "numbers"
        raise ConfigError(f"{name} must be a list of {what}, got {_type_name(value)} {_excerpt(value)}")
    return value if integer else [float(v) for v in value]


def _string_list(raw: dict[str, Any], key: str, default: Any = _REQUIRED) -> list[str]:
    value = _field(raw, key, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings, got {_type_name(value)} {_excerpt(value)}")
    return value


def _outputs(raw: dict[str, Any]) -> dict[str, str]:
    """`outputs` (name -> description); packages made before it existed list bare names in `extra_outputs`."""
    if "outputs" in raw:
        return _string_map(raw, "outputs")
    return dict.fromkeys(_string_list(raw, "extra_outputs", default=[]), "")


def _number_map(raw: dict[str, Any], key: str) -> dict[str, float]:
    value = _object(raw, key)
    for name, item in value.items():
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ConfigError(f"{key}.{name} must be a number, got {_type_name(item)}")
    return {name: float(item) for name, item in value.items()}


def _string_map(raw: dict[str, Any], key: str) -> dict[str, str]:
    value = _object(raw, key)
    for name, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"{key}.{name} must be a string, got {_type_name(item)}")
    return value


def _object(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a JSON object, got {_type_name(value)}")
    return dict(value)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _excerpt(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except RecursionError:
        return "(nested too deeply)"
    return text if len(text) <= 60 else text[:57] + "..."
