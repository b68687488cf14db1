"""A model package (model.onnx + config.json) loaded into an ONNX Runtime session, from a folder or the Hub.

`ModelPack.load` checks the package against the contract in DESIGN.md before anything runs: the config embedded
in the ONNX file must exist, have a known format_version and equal config.json; the graph must take exactly one
float32 input `image` [N, 3, H, W] at the configured size and give `logits` [N, K] first, K = len(labels). A
package that fails any check is refused with a `PackageError` naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from skin_demo.config import ONNX_METADATA_KEY, ConfigError, PackageConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
README_FILE = "README.md"
DEFAULT_HUB_TIMEOUT_S = 5.0  # per HTTP request: a Hub that does not answer within this is treated as down
DEFAULT_HUB_DEADLINE_S = 60.0  # for a whole package (about 15 MB for the bundled architecture)
MAX_DEFAULT_THREADS = 4


class PackageError(ValueError):
    """A model package is missing a file or breaks the contract; the message names the file and the problem."""


class HubError(PackageError):
    """A package could not be downloaded from the Hub (unreachable, timed out, missing repo/revision/file)."""


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
    """One validated model package and its ONNX Runtime session.

    The session is created once and shared: `InferenceSession.run` is thread-safe, so concurrent requests use
    the same ModelPack without a lock.
    """

    config: PackageConfig
    path: Path
    source: str

    def __init__(self, config: PackageConfig, path: Path, source: str, session: ort.InferenceSession) -> None:
        self.config = config
        self.path = path
        self.source = source
        self._session = session
        self._extra_outputs = tuple(o.name for o in session.get_outputs()[1:])

    def __repr__(self) -> str:
        return f"ModelPack(task={self.config.task!r}, source={self.source!r}, labels={list(self.config.labels)})"

    @classmethod
    def load(cls, folder: Path | str, *, source: str | None = None, threads: int | None = None) -> ModelPack:
        """Load and validate the package in `folder`.

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

        file_raw = _parse_json(config_path.read_text(encoding="utf-8", errors="replace"), config_path)
        config = _parse_config(file_raw, config_path)

        try:
            session = ort.InferenceSession(
                str(model_path), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail, ...)
            raise PackageError(
                f"{model_path}: ONNX Runtime cannot load it ({_short(exc)}); the file may be truncated, corrupt "
                "or not a valid ONNX model"
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
        _check_signature(session, config, model_path)
        pack = cls(config, folder, source or f"local {folder}", session)
        pack._check_runs(model_path)
        return pack

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
        (logits,) = self._session.run(["logits"], {"image": np.ascontiguousarray(batch)})
        return np.asarray(logits, dtype=np.float32)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """softmax(logits / temperature) [N, K], each row summing to 1, in label order."""
        return softmax(self.logits(batch) / np.float32(self.config.temperature))

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """`logits` and every extra output named in config.extra_outputs, by name."""
        names = ["logits", *self._extra_outputs]
        values = self._session.run(names, {"image": np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(names, values, strict=True))

    def describe(self) -> dict[str, Any]:
        """What the UI and the API report about this package: task, source, architecture, labels, metrics."""
        return {
            "task": self.config.task,
            "source": self.source,
            "architecture": self.config.architecture,
            "labels": list(self.config.labels),
            "metrics": dict(self.config.metrics),
        }

    def _check_runs(self, model_path: Path) -> None:
        """Run a batch of two blank images once: proves the batch axis is dynamic and pays ORT's first-run cost
        at startup rather than on the first visitor's request."""
        height, width = self.config.preprocess.size
        try:
            values = self.outputs(np.zeros((2, 3, height, width), dtype=np.float32))
        except Exception as exc:  # an ORT error on a valid-looking graph
            raise PackageError(f"{model_path}: running the model on a test batch failed ({_short(exc)})") from None
        shape = values["logits"].shape
        if shape != (2, len(self.config.labels)):
            raise PackageError(
                f"{model_path}: output 'logits' has shape {list(shape)} for a batch of 2, "
                f"expected [2, {len(self.config.labels)}] (one logit per label)"
            )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float64))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def load_from_hub(
    repo_id: str,
    revision: str,
    *,
    threads: int | None = None,
    endpoint: str | None = None,
    cache_dir: Path | str | None = None,
    timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
    token: str | bool | None = None,
) -> ModelPack:
    """Download a package (config.json, model.onnx, README.md if any) at a pinned revision and load it.

    revision: a commit sha (best: never changes) or a tag; the source string names the resolved commit.
    Files go to the Hugging Face cache (HF_HUB_CACHE / HF_HOME, read when called), so a second load of a commit
    sha is served from disk without any request. HF_HUB_OFFLINE=1 uses the cache only. endpoint defaults to
    HF_ENDPOINT.
    Fails fast: one request with `timeout_s` and no retries checks that the Hub answers before anything is
    downloaded (huggingface_hub alone would retry a silent Hub with 60 s timeouts for minutes); if it does not,
    a copy of the same revision already in the cache is used, else HubError. `deadline_s` bounds the whole
    download. Raises HubError if the Hub cannot be reached or lacks the files, PackageError if the package is
    invalid.
    """
    if not repo_id or not revision:
        raise HubError(f"hub {repo_id or '?'}@{revision or '?'}: a Hub package needs a repo id and a pinned revision")
    label = f"{repo_id}@{revision}"
    # huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; read them per call instead
    # so that a settings change (and each test's isolated HF_HOME) is honoured.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    cache_dir = cache_dir or _hub_cache_dir()
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}

    def download() -> tuple[Path, str]:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError

        # Privacy: with telemetry on, huggingface_hub's first request also fetches an agent-detection list from
        # huggingface.co. It reads this flag at call time; the environment variable only at import.
        constants.HF_HUB_DISABLE_TELEMETRY = True

        def fetch(filename: str, local_only: bool) -> Path:
            return Path(
                hf_hub_download(
                    repo_id=repo_id, filename=filename, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                    etag_timeout=timeout_s, local_files_only=local_only, token=token,
                )
            )  # fmt: skip

        def fetch_all(local_only: bool) -> Path:
            # config.json first: it is small, and a repo without one fails before the model download.
            config_file, model_file = fetch(CONFIG_FILE, local_only), fetch(MODEL_FILE, local_only)
            try:
                fetch(README_FILE, local_only)
            except EntryNotFoundError:
                pass  # the card is optional for serving
            if config_file.parent != model_file.parent:  # both must come from the same commit's snapshot
                raise HubError(f"hub {label}: {CONFIG_FILE} and {MODEL_FILE} resolved to different commits")
            return model_file.parent

        if offline:
            return fetch_all(local_only=True), ""
        if _is_commit_sha(revision):
            try:
                return fetch_all(local_only=True), ""  # an immutable commit already cached: no request at all
            except EntryNotFoundError:
                pass
        try:
            url = hf_hub_url(repo_id, CONFIG_FILE, revision=revision, endpoint=endpoint)
            get_hf_file_metadata(url, timeout=timeout_s, token=token)  # one HEAD, no retries
        except Exception as exc:
            if _is_http_answer(exc):
                raise  # the Hub answered (no such repo, revision or file): the cache cannot help
            try:
                return fetch_all(local_only=True), f"from the cache; the Hub did not answer: {_describe_hub_error(exc)}"
            except EntryNotFoundError:
                raise exc from None
        return fetch_all(local_only=False), ""

    try:
        snapshot, note = _with_deadline(download, deadline_s, f"hub {label}")
    except PackageError:
        raise
    except Exception as exc:
        raise HubError(f"hub {label}: download failed ({_describe_hub_error(exc)})") from None
    commit = snapshot.name
    source = f"hub {repo_id}@{commit}" if revision == commit else f"hub {repo_id}@{commit} (revision {revision})"
    if note:
        log.warning("%s: %s", source, note)
        source = f"{source} ({note})"
    try:
        return ModelPack.load(snapshot, source=source, threads=threads)
    except PackageError as exc:
        raise PackageError(f"hub {label}: {exc}") from None


def _is_commit_sha(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _is_http_answer(exc: BaseException) -> bool:
    """True when the Hub answered with a client error (4xx: no such repo/revision/file, no access)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status is not None and 400 <= status < 500


def _hub_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None  # huggingface_hub's default


def _with_deadline(fn, deadline_s: float, what: str):
    """Run fn in a daemon thread and give up after deadline_s (the HTTP timeouts bound each read, not a whole
    slow download; a thread that overruns finishes or fails on its own and only ever writes to the cache)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name="hub-download", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        raise HubError(f"{what}: download did not finish within {deadline_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _describe_hub_error(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ not in text:
        text = f"{text} [{type(cause).__name__}: {_short(cause)}]" if text else f"{type(cause).__name__}: {_short(cause)}"
    return f"{name}: {text}"[:300]


def _parse_json(text: str, path: Path, what: str = "config") -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise PackageError(f"{path}: {what} is not a JSON object")
    return raw


def _parse_config(raw: dict[str, Any], path: Path, what: str = "config") -> PackageConfig:
    try:
        return PackageConfig.from_dict(raw)
    except ConfigError as exc:
        prefix = "" if what == "config" else f"{what}: "
        raise PackageError(f"{path}: {prefix}{exc}") from None


def _differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def _check_signature(session: ort.InferenceSession, config: PackageConfig, model_path: Path) -> None:
    height, width = config.preprocess.size
    inputs = session.get_inputs()
    if [i.name for i in inputs] != ["image"]:
        raise PackageError(
            f"{model_path}: expected exactly one input named 'image', found {[i.name for i in inputs]}"
        )
    (image,) = inputs
    if image.type != "tensor(float)":
        raise PackageError(f"{model_path}: input 'image' must be float32, found {image.type}")
    shape = list(image.shape)
    if len(shape) != 4 or shape[1] != 3 or shape[2:] != [height, width]:
        raise PackageError(
            f"{model_path}: input 'image' has shape {shape}, expected [N, 3, {height}, {width}] "
            f"(preprocess.size in {CONFIG_FILE} is {[height, width]})"
        )
    if isinstance(shape[0], int) and shape[0] > 0:
        raise PackageError(f"{model_path}: input 'image' has a fixed batch size {shape[0]}; the batch axis must be dynamic")

    outputs = session.get_outputs()
    if not outputs or outputs[0].name != "logits":
        raise PackageError(
            f"{model_path}: the first output must be named 'logits', found {[o.name for o in outputs]}"
        )
    logits = outputs[0]
    if logits.type != "tensor(float)":
        raise PackageError(f"{model_path}: output 'logits' must be float32, found {logits.type}")
    k = len(config.labels)
    out_shape = list(logits.shape)
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != k):
        raise PackageError(
            f"{model_path}: output 'logits' has shape {out_shape}, expected [N, {k}] "
            f"(one logit per label; {CONFIG_FILE} lists {k} labels)"
        )
    extra = [o.name for o in outputs[1:]]
    if sorted(extra) != sorted(config.extra_outputs):
        raise PackageError(
            f"{model_path}: extra outputs {extra} do not match extra_outputs {list(config.extra_outputs)} "
            f"in {CONFIG_FILE}; every output besides 'logits' must be named there"
        )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
