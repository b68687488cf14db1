"""What the on-device page loads: its static files, the runtime, the model files and manifest.json.

The manifest carries everything the page must not hard-code and the Python side already knows (one source of
truth): which packages are in use and where to fetch them, the names the post-processing rule works with (image
domains, the older lesion check's positive label, the decision scores and whose sums they are, the default decision
threshold), the lesion-check messages, the words for each domain's malignancy call (written from the malignancy
package's own test figures), the image limits, display names and colours, and the disclaimer. What is specific to a
model (sizes, normalisation, labels, its thresholds) the page reads from the config embedded in the ONNX file itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skin_demo import imaging, postprocess
from skin_demo.attention import GRID_DECIMALS, OVERLAY_COLOUR, OVERLAY_MAX_ALPHA
from skin_demo.config import ATTENTION_OUTPUT, FORMAT_VERSION, HEADS_FORMAT_VERSION, ONNX_METADATA_KEY, PackageConfig
from skin_demo.modelpack import MODEL_FILE, ModelPack
from skin_demo.predictor import TOP_K
from skin_demo.taxonomy import BENIGN_COLOUR, MALIGNANT_COLOUR, OTHER_COLOUR, colour, display_name, short_name
from skin_demo.texts import DISCLAIMER, DISCLAIMER_SHORT, MAP_CAPTION, MAP_SWITCHES, all_flag_words

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
RUNTIME_MODULE = "ort.wasm.min.mjs"
RUNTIME_WASM = "ort-wasm-simd-threaded.wasm"
SERVICE_WORKER = "sw.js"
# In the repository the wasm is stored gzip-compressed (see scripts/vendor_onnxruntime_web.sh).
COMPRESSED_SUFFIX = ".gz"
NOT_CACHED = {"SHA256SUMS", "LICENSE"}  # notices about the vendored files, not part of the page


class WebError(RuntimeError):
    """The on-device page cannot be served or built (a vendored file or a model file is missing)."""


@dataclass(frozen=True)
class ModelFile:
    """One package's model.onnx as the page fetches it, with the tasks in use it answers (several where the package
    has a head per task); the URL names them and carries the content hash (cache-safe forever)."""

    tasks: tuple[str, ...]
    path: Path
    sha256: str
    size: int
    source: str
    labels: tuple[str, ...]  # every label of its tasks in use

    @property
    def name(self) -> str:
        """The tasks, as the URL names them: `malignancy+lesion_type` for a file that answers both."""
        return "+".join(self.tasks)

    @property
    def url(self) -> str:
        return f"models/{self.name}/{self.sha256[:16]}/{MODEL_FILE}"


def runtime_dir() -> Path:
    """The vendored onnxruntime-web folder (vendor/onnxruntime-web-<version>)."""
    found = sorted(VENDOR_DIR.glob("onnxruntime-web-*"))
    if len(found) != 1:
        raise WebError(
            f"{VENDOR_DIR}: expected one onnxruntime-web-<version> folder, found {len(found)}; "
            "run scripts/vendor_onnxruntime_web.sh"
        )
    return found[0]


def compressed_wasm() -> Path:
    path = runtime_dir() / (RUNTIME_WASM + COMPRESSED_SUFFIX)
    if not path.is_file():
        raise WebError(f"{path}: missing; run scripts/vendor_onnxruntime_web.sh")
    return path


def wasm_size() -> int:
    """Bytes of the uncompressed wasm: a gzip file ends with them (ISIZE, little-endian, mod 2**32)."""
    with compressed_wasm().open("rb") as f:
        f.seek(-4, 2)
        return int.from_bytes(f.read(4), "little")


def static_url(path: Path) -> str:
    """The URL of a file under static/, relative to the page."""
    return path.relative_to(STATIC_DIR).as_posix()


def shell_files() -> list[str]:
    """The page and its scripts (cached by the service worker at install), relative to the page: everything in
    static/ except the service worker itself, the wasm (the page caches it as it downloads it) and notices."""
    files = ["./"]
    for path in sorted(STATIC_DIR.rglob("*")):
        if not path.is_file() or path.name in NOT_CACHED or path.name == SERVICE_WORKER:
            continue
        if path.name.endswith(COMPRESSED_SUFFIX) or path.name == "index.html":
            continue
        files.append(static_url(path))
    return files


def model_files(packs: Iterable[ModelPack]) -> list[ModelFile]:
    """The model files of the packages in use, each once with the tasks it answers (the heads of one package share
    its file), in the order their first task comes in `packs`."""
    heads: dict[Path, list[ModelPack]] = {}
    for pack in packs:
        heads.setdefault((Path(pack.path) / MODEL_FILE).resolve(), []).append(pack)
    return [_model_file(path, packs_of_file) for path, packs_of_file in heads.items()]


def _model_file(path: Path, packs: list[ModelPack]) -> ModelFile:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return ModelFile(tuple(p.config.task for p in packs), path, digest.hexdigest(), path.stat().st_size,
                     packs[0].source, tuple(label for p in packs for label in p.config.labels))  # fmt: skip


def page_texts() -> dict[str, str]:
    """The Gradio page's own warnings (skin_demo.texts), so both pages say the same."""
    return {"disclaimer": DISCLAIMER, "disclaimer_short": DISCLAIMER_SHORT}


def malignancy_config(packs: Iterable[ModelPack]) -> PackageConfig:
    """The config of the malignancy package among `packs` (its thresholds and figures decide the page's words).
    Raises WebError when there is none."""
    for pack in packs:
        if pack.config.task == "malignancy":
            return pack.config
    raise WebError("no malignancy package among the models to serve")


def build_manifest(
    models: Iterable[ModelFile],
    *,
    malignancy: PackageConfig,
    texts: Mapping[str, str],
    wasm_bytes: int,
    wasm_transfer_bytes: int,
    model_transfer_bytes: Mapping[str, int] | None = None,
    notices: Mapping[str, str] | None = None,
    server_page: str | None = None,
) -> dict[str, Any]:
    """manifest.json: what the page loads and the app's own texts and limits (see the module docstring).

    malignancy: the malignancy package's config, which the words for each domain's call quote.
    texts: the warnings, as page_texts() gives them.
    wasm_transfer_bytes: what a first visit downloads for the runtime (the compressed size where the server sends it
    gzip-encoded); model_transfer_bytes: the same per model file, by its URL (default: the file's size).
    server_page: a URL of the server's own page, relative to the on-device page, or None.

    `models` lists each model file once with the tasks it answers, rather than an entry per task: a file with a head
    per task is then downloaded once, counted once in the first-load bytes and opened as one session, without the page
    or anyone summing the manifest having to notice that two entries are one file.
    """
    runtime = runtime_dir()
    models = list(models)
    labels = list(dict.fromkeys([*(label for file in models for label in file.labels),
                                 *postprocess.DOMAIN_LABELS]))  # fmt: skip
    return {
        "format_version": FORMAT_VERSION,
        "heads_format_version": HEADS_FORMAT_VERSION,
        "metadata_key": ONNX_METADATA_KEY,
        "runtime": {
            "module": static_url(runtime / RUNTIME_MODULE),
            "wasm_paths": static_url(runtime) + "/",
            "wasm": {
                "url": static_url(runtime / RUNTIME_WASM),
                "bytes": wasm_bytes,
                "transfer_bytes": wasm_transfer_bytes,
            },
        },
        "models": [
            {"url": f.url, "tasks": list(f.tasks), "bytes": f.size,
             "transfer_bytes": (model_transfer_bytes or {}).get(f.url, f.size), "sha256": f.sha256, "source": f.source}
            for f in models
        ],
        "shell": shell_files(),
        "default_threshold": postprocess.DEFAULT_THRESHOLD,
        "lesion_label": postprocess.LESION_LABEL,
        "domains": list(postprocess.DOMAINS),
        "not_lesion_label": postprocess.NOT_LESION,
        "default_score": postprocess.BINARY_HEAD,
        "score_tasks": dict(postprocess.SCORE_TASKS),
        "top_k": TOP_K,
        "attention": {"output": ATTENTION_OUTPUT, "decimals": GRID_DECIMALS, "colour": list(OVERLAY_COLOUR),
                      "max_alpha": OVERLAY_MAX_ALPHA, "switches": dict(MAP_SWITCHES), "caption": MAP_CAPTION},
        "messages": {"not_an_image": _not_an_image_message(), **texts},
        "lesion_check_messages": dict(postprocess.LESION_CHECK_MESSAGES),
        "flag_words": all_flag_words(malignancy),
        "formats": list(imaging.FORMATS),
        "limits": {
            "max_file_bytes": imaging.MAX_FILE_BYTES,
            "max_pixels": imaging.MAX_PIXELS,
            "min_side": imaging.MIN_SIDE,
            "max_aspect_ratio": imaging.MAX_ASPECT_RATIO,
        },
        "names": {label: display_name(label) for label in labels},
        "short_names": {label: short_name(label) for label in labels},
        "label_colours": {label: colour(label) for label in labels},
        "colours": {"malignant": MALIGNANT_COLOUR, "benign": BENIGN_COLOUR, "other": OTHER_COLOUR},
        "notices": dict(notices or {}),
        "server_page": server_page,
    }


def _not_an_image_message() -> str:
    """What imaging.load_image says about a file that is not an image, taken from load_image itself."""
    try:
        imaging.load_image(b"this is not an image")
    except imaging.ImageError as exc:
        return str(exc)
    raise AssertionError("load_image accepted text as an image")
