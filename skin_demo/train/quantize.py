"""Static int8 quantization of a model package with ONNX Runtime.

`python -m skin_demo.train quantize PACKAGE --ham <HAM10000> --split models/ham10000_split.csv
[--isic2017 <ISIC 2017>] --out DIR [--calibration-images 200] [--evaluate]`

QDQ format with per-channel weights, calibrated on TRAINING-split images of every source (never the test split the
package is reported on) that go through `imaging.load_image` + `imaging.preprocess` exactly as in serving. The
result is a complete package in DIR: model.onnx with the same config embedded (labels, preprocessing, temperature,
threshold), provenance saying how it was quantized, empty metrics (the fp32 numbers do not carry over),
config.json and a card. `--evaluate` runs fp32 and int8 on the same test images of each source and prints what
quantization cost, per source.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from skin_demo.config import PackageConfig
from skin_demo.modelpack import MODEL_FILE, ModelPack, PackageError
from skin_demo.train.card import write_model_card
from skin_demo.train.results import EvalReport
from skin_demo.train.data import Sample

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 8
DEFAULT_CALIBRATION_IMAGES = 200


class QuantizeError(RuntimeError):
    """Quantization could not produce a valid package; the message says why."""


def quantize_package(
    package_dir: Path | str,
    out_dir: Path | str,
    calibration: Sequence[np.ndarray],
    *,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = True,
    calibration_note: str | None = None,
) -> PackageConfig:
    """Quantize the package in `package_dir` to int8 and write the new package to `out_dir`.

    calibration: preprocessed float32 images [3, H, W] (or batches [B, 3, H, W]) from the training split; their
    activation ranges fix the int8 scales. method: "minmax", "entropy" or "percentile" (ORT calibrators).
    reduce_range: quantize weights to 7 bits. ONNX Runtime's x86 kernels on CPUs without VNNI (plain AVX2) add
    pairs of u8*s8 products in 16 bits, which overflows with full-range weights and can move logits by several
    units; 7-bit weights cannot overflow, at a small cost on VNNI machines. Keep it on unless the serving CPU is
    known to have VNNI (measure with --evaluate there).
    calibration_note: how the images were chosen, for the provenance.
    Returns the new package's config. Raises PackageError for a broken input package, QuantizeError when the
    output would overwrite the input or fails the package checks.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from skin_demo.train.package_files import write_package_config

    package_dir, out_dir = Path(package_dir), Path(out_dir)
    if out_dir.resolve() == package_dir.resolve():
        raise QuantizeError(f"--out {out_dir} is the input package: write the int8 package to its own folder")
    if method not in CALIBRATION_METHODS:
        raise QuantizeError(f"unknown calibration method {method!r}; choose one of {CALIBRATION_METHODS}")
    source = ModelPack.load(package_dir, threads=1)
    batches = _as_batches(calibration, source.config)
    if not batches:
        raise QuantizeError("no calibration images: quantization needs training-split images to set its ranges")
    n_images = sum(len(b) for b in batches)

    with tempfile.TemporaryDirectory(prefix="skin_demo_quantize_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "int8.onnx"
        # Shape inference and graph optimisation first (ORT's advice): folds e.g. BatchNorm into Conv so the
        # quantizer sees the graph ONNX Runtime will actually run.
        with _quiet_root_logger():
            quant_pre_process(str(package_dir / MODEL_FILE), str(prepared))
        excluded = _name_nodes_and_find_shape_nodes(prepared)
        with _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(quantized),
                _Reader(batches),
                nodes_to_exclude=excluded,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method={
                    "minmax": CalibrationMethod.MinMax,
                    "entropy": CalibrationMethod.Entropy,
                    "percentile": CalibrationMethod.Percentile,
                }[method],
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(quantized, out_dir / MODEL_FILE)

    quantization = {
        "description": (
            f"static int8 (ONNX Runtime {ort.__version__}, QDQ, {'per-channel' if per_channel else 'per-tensor'} "
            f"int8 weights{' (7-bit range)' if reduce_range else ''}, int8 activations), calibrated ({method}) "
            f"on {n_images} training-split images"
        ),
        "format": "QDQ",
        "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
        "activations": "int8",
        "reduce_range": reduce_range,
        "calibration_method": method,
        "calibration_images": n_images,
        "onnxruntime": ort.__version__,
        "not_quantized": "shape/padding computation subgraphs (see quantize.shape_computation_nodes)",
        "source_architecture": source.config.architecture,
        "source_model_bytes": (package_dir / MODEL_FILE).stat().st_size,
    }
    if calibration_note:
        quantization["calibration_data"] = calibration_note
    config = dataclasses.replace(
        source.config,
        # The fp32 package's numbers are not this model's: it gets its own evaluation (or none).
        metrics={},
        provenance={**source.config.provenance, "quantization": quantization},
    )
    write_package_config(out_dir, config)
    try:
        config = ModelPack.load(out_dir, threads=1).config
    except PackageError as exc:
        raise QuantizeError(f"the quantized model fails the package checks: {exc}") from None
    write_model_card(out_dir, config, None)
    return config


def calibration_samples(train: Sequence[Sample], n: int, *, seed: int = 0) -> list[Sample]:
    """Up to `n` of the TRAINING-split samples `train`, drawn in turn from each (source, class) group so rare
    classes and every source are represented. Seeded, so the same call gives the same images."""
    by_group: dict[str, list[Sample]] = defaultdict(list)
    for sample in sorted(train, key=lambda s: s.image_id):
        by_group[f"{sample.source}:{sample.dx or ('malignant' if sample.malignant else 'benign')}"].append(sample)
    rng = np.random.default_rng(seed)
    queues = {key: [group[i] for i in rng.permutation(len(group))] for key, group in sorted(by_group.items())}
    chosen: list[Sample] = []
    while len(chosen) < n and any(queues.values()):
        for key in sorted(queues):
            if queues[key] and len(chosen) < n:
                chosen.append(queues[key].pop())
    return sorted(chosen, key=lambda s: s.image_id)


def compare(
    fp32: EvalReport, int8: EvalReport, p_fp32: np.ndarray, p_int8: np.ndarray, seconds: Sequence[float]
) -> dict[str, Any]:
    """What int8 changed: headline metrics before/after, label agreement, the largest probability change, speed."""
    rows = {}
    for key in ("balanced_accuracy", "accuracy", "macro_f1", "roc_auc", "sensitivity", "specificity"):
        a, b = fp32.headline().get(key), int8.headline().get(key)
        if a is None and b is None:
            continue
        rows[key] = {"fp32": a, "int8": b, "change": None if a is None or b is None else round(b - a, 4)}
    n = len(p_fp32)
    return {
        "split": int8.split,
        "n": n,
        "metrics": rows,
        "same_label": round(float(np.mean(p_fp32.argmax(1) == p_int8.argmax(1))), 4),
        "max_abs_probability_change": round(float(np.max(np.abs(p_fp32 - p_int8))), 4),
        "ms_per_image": {"fp32": round(1000 * seconds[0] / n, 2), "int8": round(1000 * seconds[1] / n, 2)},
    }


def shape_computation_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute shapes or paddings from tensor sizes rather than image content.

    timm's TF-"same" convolutions (tf_efficientnet_*) export their padding as a small float subgraph:
    Shape -> Gather -> Cast -> Div -> Ceil -> ... -> Concat -> Cast -> Pad. Left to the quantizer, its Concat and
    Reshape get int8 QDQ pairs, the padding rounds to the wrong number of pixels and every later layer is garbage.
    A node belongs to such a subgraph when it is a Shape/Size node, or when each of its inputs is either derived
    from one (tainted) or a constant, with at least one tainted. A node that also takes real activations (the Pad,
    a Reshape of a feature map) is where the subgraph ends: it is quantized as usual.
    """
    constants = {init.name for init in model.graph.initializer}
    tainted: set[str] = set()
    excluded: list[str] = []
    for node in model.graph.node:  # ONNX graphs are stored in topological order
        if node.op_type == "Constant":
            constants.update(node.output)
            continue
        inputs = [name for name in node.input if name]
        is_source = node.op_type in ("Shape", "Size")
        if is_source or (
            any(name in tainted for name in inputs) and all(name in tainted or name in constants for name in inputs)
        ):
            tainted.update(node.output)
            excluded.append(node.name)
    return excluded


def _name_nodes_and_find_shape_nodes(path: Path) -> list[str]:
    """Give every node of the model at `path` a name (exclusion works by name), save it, and return
    `shape_computation_nodes` of it."""
    model = onnx.load(str(path))
    used = {node.name for node in model.graph.node if node.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)
    onnx.save(model, str(path))
    return shape_computation_nodes(model)


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs progress and a line per adjusted bias scale (hundreds) to the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over preprocessed batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._batches = batches
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._batches):
            return None
        batch = self._batches[self._next]
        self._next += 1
        return {"image": batch}

    def rewind(self) -> None:
        self._next = 0


def _as_batches(calibration: Sequence[np.ndarray], config: PackageConfig) -> list[np.ndarray]:
    """Group single images [3, H, W] into batches; pass batches [B, 3, H, W] through. Checks the shape."""
    height, width = config.preprocess.size
    singles, batches = [], []
    for array in calibration:
        array = np.asarray(array, dtype=np.float32)
        if array.shape[-3:] != (3, height, width) or array.ndim not in (3, 4):
            raise QuantizeError(
                f"calibration arrays must be [3, {height}, {width}] or batches of them, got {array.shape}"
            )
        if array.ndim == 3:
            singles.append(array)
        else:
            batches.append(array)
    for start in range(0, len(singles), CALIBRATION_BATCH):
        batches.append(np.stack(singles[start:start + CALIBRATION_BATCH]))
    return [np.ascontiguousarray(b) for b in batches if len(b)]
