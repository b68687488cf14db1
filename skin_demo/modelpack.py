"""A model package (model.onnx + config.json) in a folder, validated and loaded into an ONNX Runtime session.

`ModelPack.load` checks the package against the contract in DESIGN.md before anything runs: the config embedded
in the ONNX file must exist, have a known format_version and equal config.json; the graph must take exactly one
float32 input `image` [N, 3, H, W] at the configured size and give `logits` [N, K] first, K = len(labels). A
package that fails any check is refused with a `PackageError` naming the file and the problem. Where a package
comes from (bundled folder or the Hub) is skin_demo.hub's job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from skin_demo.config import (
    ATTENTION_OUTPUT,
    CONFIG_FILE,
    INPUT_NAME,
    MODEL_FILE,
    ONNX_METADATA_KEY,
    OUTPUT_NAME,
    README_FILE,
    HEADS_FORMAT_VERSION,
    ConfigError,
    PackageConfig,
    head_output,
    package_heads,
    parse_json,
)

log = logging.getLogger(__name__)

MAX_DEFAULT_THREADS = 4
MAX_CONFIG_BYTES = 1024 * 1024  # a real config.json is a few kB; anything this large is not one
# A real config nests about 5 levels (metrics per source per domain). Its metrics travel in every /predict answer
# a few levels further down, and the response encoder (orjson) gives up at 255: a config that parsed fine at 900
# levels broke every request.
MAX_CONFIG_DEPTH = 32


class PackageError(ValueError):
    """A model package is missing a file or breaks the contract; the message names the file and the problem."""


def available_cpus() -> int:
    """CPU cores this process may run on (the affinity mask, which containers set, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """ONNX Runtime intra-op threads per session: all available cores, at most 4.

    One request at a time then uses every core, which gives the lowest latency for a demo that mostly serves one
    person at a time; past about 4 threads a model this small (EfficientNet-Lite0) gets no faster.
    """
    return min(MAX_DEFAULT_THREADS, available_cpus())


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The ONNX Runtime options every package session uses (see default_threads for the thread count)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    # The graphs are a plain chain of layers: parallelism between operators buys nothing, so keep one
    # inter-op thread and sequential execution; all parallelism is inside operators.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle ORT threads spin by default, burning CPU between runs. Two sessions, image decoding and chart
    # rendering share few cores here, so threads should sleep instead (costs well under a millisecond).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers would only fill logs
    return opts


class ModelPack:
    """One task of a validated model package: its config and its outputs of the package's ONNX Runtime session
    (the whole graph for a single-task package, one head of it for a package with several heads).

    The session is created once and shared: `InferenceSession.run` is thread-safe, so concurrent requests use
    the same ModelPack without a lock.
    """

    config: PackageConfig
    path: Path
    source: str

    def __init__(self, config: PackageConfig, path: Path, source: str, session: ort.InferenceSession,
                 output_names: Mapping[str, str]) -> None:  # fmt: skip
        """output_names: this task's outputs (`logits` and those in config.outputs) -> their names in the graph."""
        self.config = config
        self.path = path
        self.source = source
        self._session = session
        self._output_names = dict(output_names)

    def __repr__(self) -> str:
        return f"ModelPack(task={self.config.task!r}, source={self.source!r}, labels={list(self.config.labels)})"

    @classmethod
    def load(cls, folder: Path | str, *, source: str | None = None, threads: int | None = None) -> ModelPack:
        """Load and validate the single-task package in `folder` (`load_package` loads one with several heads).

        Raises PackageError naming the file and the problem.
        """
        packs = load_package(folder, source=source, threads=threads)
        if len(packs) != 1:
            raise PackageError(f"{Path(folder) / CONFIG_FILE}: the package has heads for {sorted(packs)}; load it "
                               "with load_package")  # fmt: skip
        return next(iter(packs.values()))

    @property
    def readme(self) -> Path | None:
        """The package's model card, if it has one."""
        path = self.path / README_FILE
        return path if path.is_file() else None

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits [N, K] (float32, in label order) for a float32 batch [N, 3, H, W] made by imaging.preprocess."""
        height, width = self.config.preprocess.size
        batch = np.asarray(batch)
        if batch.dtype != np.float32 or batch.ndim != 4 or batch.shape[1:] != (3, height, width):
            raise ValueError(
                f"{self.config.task}: expected a float32 batch [N, 3, {height}, {width}], "
                f"got {batch.dtype} {list(batch.shape)}"
            )
        (logits,) = self._session.run([self._output_names[OUTPUT_NAME]], {INPUT_NAME: np.ascontiguousarray(batch)})
        return np.asarray(logits, dtype=np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) [N, K], each row summing to 1, in label order."""
        return self.calibrated(self.logits(batch))

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) of this package's logits [N, K]."""
        return softmax(np.asarray(logits, dtype=np.float32) / np.float32(self.config.temperature))

    @property
    def has_attention(self) -> bool:
        """Whether the graph gives the class-activation map (ATTENTION_OUTPUT) besides the logits."""
        return ATTENTION_OUTPUT in self._output_names

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """`logits` and every further output named in config.outputs, by name."""
        names = list(self._output_names.values())
        values = self._session.run(names, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return self.own_outputs(dict(zip(names, values, strict=True)))

    @property
    def graph(self) -> ort.InferenceSession:
        """The session this task's outputs come from; the heads of one package share it (and its input)."""
        return self._session

    def graph_outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph, by its name in the graph: one run serves every head of the package."""
        names = [o.name for o in self._session.get_outputs()]
        values = self._session.run(names, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(names, values, strict=True))

    def own_outputs(self, graph_outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This task's outputs among `graph_outputs` (a run of its graph), by their names in config.outputs."""
        return {name: graph_outputs[in_graph] for name, in_graph in self._output_names.items()}

    def output_name(self, name: str) -> str:
        """The graph's name for this task's output `name` (`logits` or one in config.outputs)."""
        return self._output_names[name]

    def describe(self) -> dict[str, Any]:
        """What the UI and the API report about this package: task, source, architecture, labels, metrics."""
        return {
            "task": self.config.task,
            "source": self.source,
            "architecture": self.config.architecture,
            "labels": list(self.config.labels),
            "metrics": dict(self.config.metrics),
        }


def load_package(folder: Path | str, *, source: str | None = None, threads: int | None = None) -> dict[str, ModelPack]:
    """Load and validate the package in `folder`: one ModelPack per task it answers (one session for all).

    source: how to describe where it came from (default "local <folder>").
    threads: ONNX Runtime intra-op threads (default: `default_threads()`).
    Raises PackageError naming the file and the problem.
    """
    folder = Path(folder)
    model_path = folder / MODEL_FILE
    config_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise PackageError(f"{folder}: model package folder not found (it needs {MODEL_FILE} and {CONFIG_FILE})")
    for required in (model_path, config_path):
        if not required.is_file():
            raise PackageError(f"{required}: missing; a model package needs {MODEL_FILE} and {CONFIG_FILE}")

    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise PackageError(f"{config_path}: {config_path.stat().st_size} bytes, too large for a package config")
    file_raw = _parse_json(config_path.read_text(encoding="utf-8", errors="replace"), config_path)
    configs = _parse_config(file_raw, config_path)

    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
        raise PackageError(
            f"{model_path}: ONNX Runtime cannot load it; the file may be truncated, corrupt or not a valid "
            f"ONNX model. ONNX Runtime says: {_reason(exc)}"
        ) from None

    metadata = session.get_modelmeta().custom_metadata_map
    if ONNX_METADATA_KEY not in metadata:
        raise PackageError(
            f"{model_path}: has no {ONNX_METADATA_KEY!r} entry in its ONNX metadata_props; re-export it with "
            "skin_demo.train so the config travels inside the model"
        )
    embedded_raw = _parse_json(metadata[ONNX_METADATA_KEY], model_path, what=f"embedded {ONNX_METADATA_KEY}")
    _parse_config(embedded_raw, model_path, what=f"embedded {ONNX_METADATA_KEY}")
    if embedded_raw != file_raw:
        fields = _differing_fields(embedded_raw, file_raw)
        raise PackageError(
            f"{model_path}: the config embedded in the model differs from {config_path} "
            f"(fields: {', '.join(fields)}); the two must be identical"
        )
    several = file_raw.get("format_version") == HEADS_FORMAT_VERSION
    names = {task: _output_names(config, several) for task, config in configs.items()}
    _check_signature(session, configs, names, model_path)
    packs = {task: ModelPack(config, folder, source or f"local {folder}", session, names[task])
             for task, config in configs.items()}  # fmt: skip
    _check_runs(packs, model_path)
    return packs


def _output_names(config: PackageConfig, several: bool) -> dict[str, str]:
    """A task's outputs -> their names in the graph: as they are in a single-task package, `<task>/<name>` in one
    with several heads."""
    return {name: head_output(config.task, name) if several else name for name in (OUTPUT_NAME, *config.outputs)}


def _check_runs(packs: Mapping[str, ModelPack], model_path: Path) -> None:
    """Run a batch of two blank images once: proves the batch axis is dynamic and pays ORT's first-run cost at
    startup rather than on the first visitor's request."""
    first = next(iter(packs.values()))
    height, width = first.config.preprocess.size
    try:
        values = first.graph_outputs(np.zeros((2, 3, height, width), dtype=np.float32))
    except Exception as exc:  # an ORT error on a valid-looking graph
        raise PackageError(
            f"{model_path}: running the model on a test batch failed. ONNX Runtime says: {_reason(exc)}"
        ) from None
    for pack in packs.values():
        name = pack.output_name(OUTPUT_NAME)
        shape = values[name].shape
        if shape != (2, len(pack.config.labels)):
            raise PackageError(
                f"{model_path}: output {name!r} has shape {list(shape)} for a batch of 2, "
                f"expected [2, {len(pack.config.labels)}] (one logit per label)"
            )


@dataclass(frozen=True)
class Models(Mapping[str, ModelPack]):
    """The packages in use, by task (a registry like rembg's sessions: looked up by name, loaded once), and per task
    what a visitor should know about where its package came from (a Hub package not in use, an unpinned revision).

    Build with `skin_demo.hub.load_models`; a Predictor takes it with `Predictor.from_models`."""

    packs: Mapping[str, ModelPack]
    notices: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, task: str) -> ModelPack:
        return self.packs[task]

    def __iter__(self) -> Iterator[str]:
        return iter(self.packs)

    def __len__(self) -> int:
        return len(self.packs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def _parse_json(text: str, path: Path, what: str = "config") -> dict[str, Any]:
    try:
        raw = parse_json(text)
    except ConfigError as exc:
        raise PackageError(f"{path}: {what} is {exc}") from None
    if not isinstance(raw, dict):
        raise PackageError(f"{path}: {what} is not a JSON object")
    if _nested_deeper_than(raw, MAX_CONFIG_DEPTH):
        raise PackageError(f"{path}: {what} nests objects or lists more than {MAX_CONFIG_DEPTH} levels deep; a package "
                           "config needs a handful")  # fmt: skip
    return raw


def _nested_deeper_than(document: Any, limit: int) -> bool:
    """Whether a parsed JSON document nests dicts or lists more than `limit` levels (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def _parse_config(raw: dict[str, Any], path: Path, what: str = "config") -> dict[str, PackageConfig]:
    try:
        return package_heads(raw)
    except ConfigError as exc:
        prefix = "" if what == "config" else f"{what}: "
        raise PackageError(f"{path}: {prefix}{exc}") from None


def _differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def _check_signature(session: ort.InferenceSession, configs: Mapping[str, PackageConfig],
                     names: Mapping[str, Mapping[str, str]], model_path: Path) -> None:  # fmt: skip
    """One float32 input `image` at the heads' size with a dynamic batch axis; a float32 [N, K] logits output per
    head (the first output in a single-task package); no output the config does not name."""
    first = next(iter(configs.values()))
    height, width = first.preprocess.size
    inputs = session.get_inputs()
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise PackageError(
            f"{model_path}: expected exactly one input named {INPUT_NAME!r}, found {[i.name for i in inputs]}"
        )
    (image,) = inputs
    if image.type != "tensor(float)":
        raise PackageError(f"{model_path}: input {INPUT_NAME!r} must be float32, found {image.type}")
    shape = list(image.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[2:] != [height, width]:
        raise PackageError(
            f"{model_path}: input {INPUT_NAME!r} has shape {shape}, expected [N, 3, {height}, {width}] "
            f"(preprocess.size in {CONFIG_FILE} is {[height, width]})"
        )
    if isinstance(shape[0], int) and shape[0] > 0:
        raise PackageError(
            f"{model_path}: input {INPUT_NAME!r} has a fixed batch size {shape[0]}; the batch axis must be dynamic"
        )

    outputs = {o.name: o for o in session.get_outputs()}
    if len(configs) == 1 and [*outputs][:1] != [OUTPUT_NAME]:
        raise PackageError(
            f"{model_path}: the first output must be named {OUTPUT_NAME!r}, found {list(outputs)}"
        )
    for task, config in configs.items():
        name = names[task][OUTPUT_NAME]
        if name not in outputs:
            raise PackageError(f"{model_path}: no output {name!r} for the {task} head, found {list(outputs)}")
        logits = outputs[name]
        if logits.type != "tensor(float)":
            raise PackageError(f"{model_path}: output {name!r} must be float32, found {logits.type}")
        k = len(config.labels)
        out_shape = list(logits.shape)
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != k):
            raise PackageError(
                f"{model_path}: output {name!r} has shape {out_shape}, expected [N, {k}] "
                f"(one logit per label; {CONFIG_FILE} lists {k} labels for {task})"
            )
    expected = {in_graph for task_names in names.values() for in_graph in task_names.values()}
    if extra := sorted(set(outputs) - expected):
        raise PackageError(f"{model_path}: extra outputs {extra} are not named in {CONFIG_FILE}; every output besides "
                           "the logits must be named in the outputs of a config")  # fmt: skip
    if missing := sorted(expected - set(outputs)):
        raise PackageError(f"{model_path}: no outputs {missing}, which {CONFIG_FILE} names")


def _reason(exc: BaseException) -> str:
    """ONNX Runtime's whole message on one line: the cause is often at its end ("external data size mismatch")."""
    return " ".join(str(exc).split()) or type(exc).__name__
