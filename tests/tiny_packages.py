"""Tiny but real model packages, built to the contract in DESIGN.md, for tests that must not need trained weights.

The graph averages each colour channel of the normalised input over the whole image and over its top half
(`GlobalAveragePool`, `Slice`, `Concat`) and maps those six means to K logits with fixed weights (`Gemm`). The
output is deterministic and depends on the image's colours and on which way up it is, so a red and a blue image
get different labels, a rotated image gets a different answer (EXIF tests), and ONNX Runtime runs the same code
paths it runs for the real EfficientNet packages. Variants build the broken packages serving must refuse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from skin_demo.config import ATTENTION_OUTPUT, FORMAT_VERSION, ONNX_METADATA_KEY
from skin_demo.taxonomy import LESION_CODES, MALIGNANCY_LABELS, MALIGNANT_CODES
from skin_demo.train.combine import combine_packages

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime this project supports

_UNSET: Any = object()
TASK_LABELS = {"malignancy": MALIGNANCY_LABELS, "lesion_type": LESION_CODES, "lesion_check": ("lesion", "not_lesion")}
# The lesion check that tells the image domains apart (the older one above knows only "lesion").
DOMAIN_CHECK_LABELS = ("dermoscopy", "clinical", "not_lesion")
# The tiny lesion check runs at the highest temperature a package may have, so its P(lesion) stays within
# about 0.35-0.65 for any image: these thresholds pass, or fail, every image.
LESION_CHECK_TEMPERATURE = 20.0
PASSING_LESION_THRESHOLD = 0.2
FAILING_LESION_THRESHOLD = 0.8


# A malignancy package's held-out figures per domain, as training records them (metrics.per_domain).
PER_DOMAIN_METRICS = {
    "dermoscopy": {"sensitivity": 0.95, "specificity": 0.6, "roc_auc": 0.9, "n_malignant": 40, "n_benign": 160,
                   "split": "tests:synthetic"},
    "clinical": {"sensitivity": 0.87, "specificity": 0.31, "roc_auc": 0.66, "n_malignant": 80, "n_benign": 40,
                 "split": "tests:synthetic"},
}  # fmt: skip
CLINICAL_THRESHOLD = 0.45


def per_domain_overrides(dermoscopy: float | None, clinical: float = CLINICAL_THRESHOLD, *,
                         clinical_score: str = "lesion_type_sum", per_domain: dict | None = PER_DOMAIN_METRICS) -> dict:
    """Config overrides for a malignancy package with a decision per image domain: `decision_thresholds` (dermoscopy
    too unless None, then also as `decision_threshold`), `decision_scores` (clinical on `clinical_score`) and the
    test figures per domain in `metrics.per_domain` (None: none recorded)."""
    thresholds = {"clinical": clinical} if dermoscopy is None else {"dermoscopy": dermoscopy, "clinical": clinical}
    metrics = {"split": "tests:synthetic", "balanced_accuracy": 0.5, "accuracy": 0.5}
    if per_domain is not None:
        metrics["per_domain"] = per_domain
    scores = {"dermoscopy": "binary_head", "clinical": clinical_score}
    return {"decision_threshold": dermoscopy, "decision_thresholds": thresholds, "decision_scores": scores,
            "metrics": metrics}  # fmt: skip


def tiny_config(
    task: str,
    labels: tuple[str, ...] | list[str],
    malignant_labels: tuple[str, ...] | list[str],
    size: tuple[int, int] = (32, 32),
    **overrides: Any,
) -> dict[str, Any]:
    """The config.json dict of a tiny package (the same fields a trained package has)."""
    config: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "task": task,
        "labels": list(labels),
        "malignant_labels": list(malignant_labels),
        "preprocess": {
            "size": list(size),
            "resize": "shorter_side_then_center_crop",
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "temperature": 1.0,
        "architecture": "tiny_test_gemm",
        "metrics": {"split": "tests:synthetic", "balanced_accuracy": 0.5, "accuracy": 0.5},
        "provenance": {"data": "none (test package)", "code_commit": "test", "trained_at": "never"},
    }
    config.update(overrides)
    return config


def tiny_weights(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed Gemm weights [6, K] and bias [K]: class k prefers a different mix of the six channel means
    (whole image RGB, then top half RGB)."""
    angles = np.linspace(0.0, 2.0 * np.pi, num=k, endpoint=False)
    whole = np.stack([np.cos(angles), np.sin(angles), np.cos(2 * angles + 0.5)]) * 3.0
    top = np.stack([np.sin(angles + 1.0), np.cos(3 * angles), np.sin(2 * angles)]) * 1.5
    bias = np.linspace(-0.2, 0.2, num=k)
    return np.concatenate([whole, top]).astype(np.float32), bias.astype(np.float32)


def tiny_features(batch: np.ndarray) -> np.ndarray:
    """The six channel means the tiny graph feeds to its Gemm: whole image, then top half. [N, 6]"""
    half = batch.shape[2] // 2
    return np.concatenate([batch.mean(axis=(2, 3)), batch[:, :, :half].mean(axis=(2, 3))], axis=1)


def tiny_logits(batch: np.ndarray, k: int) -> np.ndarray:
    """What the tiny graph computes, in numpy (for checking ONNX Runtime's output)."""
    weights, bias = tiny_weights(k)
    return (tiny_features(batch) @ weights + bias).astype(np.float32)


def make_model(
    config: dict[str, Any],
    *,
    metadata: Any = _UNSET,
    input_name: str = "image",
    input_shape: list[Any] | None = None,
    input_type: int = TensorProto.FLOAT,
    output_name: str = "logits",
    num_outputs: int | None = None,
    extra_outputs: tuple[str, ...] = (),
) -> onnx.ModelProto:
    """The tiny ONNX graph for `config`; the keyword arguments make it deliberately wrong for tests.

    metadata: what to store under the `skin_demo.config` key: default the config's JSON, None for no entry, a
    dict for a different config, a str for raw text.
    """
    height, width = config["preprocess"]["size"]
    k = num_outputs if num_outputs is not None else len(config["labels"])
    weights, bias = tiny_weights(k)
    shape = input_shape if input_shape is not None else ["N", 3, height, width]
    inputs = [helper.make_tensor_value_info(input_name, input_type, shape)]
    cast_nodes = []
    pooled_input = input_name
    if input_type != TensorProto.FLOAT:
        cast_nodes.append(helper.make_node("Cast", [input_name], ["image_f"], to=TensorProto.FLOAT))
        pooled_input = "image_f"
    nodes = [
        *cast_nodes,
        helper.make_node("GlobalAveragePool", [pooled_input], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["whole"], axis=1),
        helper.make_node("Shape", [pooled_input], ["in_shape"]),
        helper.make_node("Gather", ["in_shape", "h_axis"], ["height"]),
        helper.make_node("Div", ["height", "two"], ["half"]),  # integer division, as tiny_features does
        helper.make_node("Slice", [pooled_input, "zero", "half", "h_axis_1d"], ["top"]),
        helper.make_node("GlobalAveragePool", ["top"], ["top_pooled"]),
        helper.make_node("Flatten", ["top_pooled"], ["top_means"], axis=1),
        helper.make_node("Concat", ["whole", "top_means"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "W", "B"], [output_name]),
    ]
    outputs = [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", k])]
    extra_weights = []
    for name in extra_outputs:
        if name == ATTENTION_OUTPUT:
            # A class-activation map as packages export it, [N, K, 4, 4]: the whole-image-mean part of each logit,
            # per pixel (a 1x1 convolution with those weights), averaged over 4x4 blocks.
            kernel = weights[:3].T.reshape(k, 3, 1, 1).astype(np.float32)
            extra_weights.append(numpy_helper.from_array(kernel, "cam_kernel"))
            nodes += [helper.make_node("Conv", [pooled_input, "cam_kernel"], ["cam_full"], name=f"{name}/conv"),
                      helper.make_node("AveragePool", ["cam_full"], [name], kernel_shape=[height // 4, width // 4],
                                       strides=[height // 4, width // 4], name=f"{name}/pool")]  # fmt: skip
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", k, 4, 4]))
            continue
        nodes.append(helper.make_node("Identity", ["features"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 6]))
    constants = {
        "h_axis": np.array([2], dtype=np.int64),
        "h_axis_1d": np.array([2], dtype=np.int64),
        "two": np.array([2], dtype=np.int64),
        "zero": np.array([0], dtype=np.int64),
    }
    graph = helper.make_graph(
        nodes,
        "tiny_" + str(config.get("task", "model")),
        inputs,
        outputs,
        initializer=[
            numpy_helper.from_array(weights, "W"),
            numpy_helper.from_array(bias, "B"),
            *(numpy_helper.from_array(v, name) for name, v in constants.items()),
            *extra_weights,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests")
    model.ir_version = IR_VERSION
    if metadata is _UNSET:
        metadata = config
    if metadata is not None:
        text = metadata if isinstance(metadata, str) else json.dumps(metadata)
        entry = model.metadata_props.add()
        entry.key, entry.value = ONNX_METADATA_KEY, text
    onnx.checker.check_model(model)
    return model


def make_package(
    folder: Path | str,
    task: str = "lesion_type",
    labels: tuple[str, ...] | list[str] | None = None,
    malignant_labels: tuple[str, ...] | list[str] | None = None,
    size: tuple[int, int] = (32, 32),
    *,
    config_overrides: dict[str, Any] | None = None,
    config_json: Any = _UNSET,
    truncate: int | None = None,
    readme: bool = True,
    **model_kwargs: Any,
) -> Path:
    """Write a tiny model package (model.onnx, config.json, README.md) into `folder` and return the folder.

    Defaults give a valid package for `task` with the HAM10000 labels (lesion_type), benign/malignant
    (malignancy) or lesion/not_lesion (lesion_check; pass labels=DOMAIN_CHECK_LABELS for the check that tells
    dermoscopy from ordinary photos). Breakage for tests:
      config_json: what to write as config.json instead (dict, or str written verbatim, or None for no file);
      truncate: keep only this many bytes of model.onnx;
      model_kwargs: passed to make_model (metadata=..., input_name=..., input_shape=..., num_outputs=...,
        extra_outputs=...).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if labels is None:
        labels = TASK_LABELS.get(task, LESION_CODES)
    if malignant_labels is None:
        malignant_labels = ("malignant",) if task == "malignancy" else tuple(c for c in labels if c in MALIGNANT_CODES)
    config = tiny_config(task, labels, malignant_labels, size, **(config_overrides or {}))
    if "extra_outputs" in model_kwargs and "outputs" not in config:
        config["outputs"] = {name: "a test output" for name in model_kwargs["extra_outputs"]}
    model_bytes = make_model(config, **model_kwargs).SerializeToString()
    if truncate is not None:
        model_bytes = model_bytes[:truncate]
    (folder / "model.onnx").write_bytes(model_bytes)
    if config_json is _UNSET:
        config_json = config
    if config_json is not None:
        text = config_json if isinstance(config_json, str) else json.dumps(config_json, indent=2) + "\n"
        (folder / "config.json").write_text(text)
    if readme:
        (folder / "README.md").write_text(
            f"---\nlicense: cc-by-nc-4.0\ntags: [test]\n---\n# Tiny {task} test package\n\nNot a diagnosis.\n"
        )
    return folder


def make_models_dir(
    root: Path | str,
    size: tuple[int, int] = (32, 32),
    *,
    lesion_threshold: float = PASSING_LESION_THRESHOLD,
    malignancy_threshold: float | None = None,
    domains: bool = False,
    attention: bool = True,
) -> Path:
    """A models/ folder with the three tiny packages the app expects: `malignancy`, `lesion_type`, `lesion_check`.

    lesion_threshold: the lesion check's decision_threshold (the minimum P(lesion) to pass). The tiny graph's
      P(lesion) stays near 0.5, so the default passes every image and FAILING_LESION_THRESHOLD fails every one.
    malignancy_threshold: the malignancy package's decision_threshold (None: the package records none, 0.5 applies).
      When set, the package also runs at LESION_CHECK_TEMPERATURE, so that P(malignant) too stays near 0.5 and a
      threshold of PASSING_LESION_THRESHOLD flags every image.
    domains: the lesion check tells the image domains apart (DOMAIN_CHECK_LABELS; at LESION_CHECK_TEMPERATURE its
      P(dermoscopy) + P(clinical) stays within about 0.55-0.8, so the thresholds above pass or fail every image), and
      the malignancy package decides per domain (per_domain_overrides: clinical photos on the lesion-type sum).
    attention: the two classifiers give the class-activation map output (ATTENTION_OUTPUT), as packages now do.
    """
    root = Path(root)
    maps = {"extra_outputs": (ATTENTION_OUTPUT,)} if attention else {}
    malignancy: dict[str, Any] = {}
    if malignancy_threshold is not None:
        malignancy = {"decision_threshold": malignancy_threshold, "temperature": LESION_CHECK_TEMPERATURE}
    if domains:
        malignancy.update(per_domain_overrides(malignancy_threshold))
    make_package(root / "malignancy", "malignancy", size=size, config_overrides=malignancy, **maps)
    make_package(root / "lesion_type", "lesion_type", size=size, **maps)
    check = {"decision_threshold": lesion_threshold, "temperature": LESION_CHECK_TEMPERATURE}
    labels = DOMAIN_CHECK_LABELS if domains else None
    make_package(root / "lesion_check", "lesion_check", labels=labels, size=size, config_overrides=check)
    return root


def save_graph_package(folder: Path, model: onnx.ModelProto, config: dict[str, Any]) -> Path:
    """Write `model` with `config` embedded, and config.json, into the new folder `folder`; returns the folder."""
    text = json.dumps(config)
    helper.set_model_props(model, {ONNX_METADATA_KEY: text})
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "config.json").write_text(text)
    return folder


def package_files(folder: Path | str) -> dict[str, bytes]:
    """The files of a package folder as {name: bytes} (for uploading to a Hub stand-in)."""
    folder = Path(folder)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def combine_classifiers(models_dir: Path | str, name: str = "classifiers") -> Path:
    """Make the tiny malignancy and lesion-type packages of `models_dir` one package with a head each (`combine`:
    their feature nodes are the same), in `models_dir`/`name`, and remove the two; returns the new folder."""
    models_dir = Path(models_dir)
    parts = [models_dir / "malignancy", models_dir / "lesion_type"]
    combined = combine_packages(parts, models_dir / name)
    for part in parts:
        shutil.rmtree(part)
    return combined
