"""Write a package's files: model.onnx with its config embedded, config.json beside it, and the model card.
onnx only, no torch, so evaluate and quantize can update a finished package without loading torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import onnx

from skin_demo.config import CONFIG_FILE, HEADS_FORMAT_VERSION, MODEL_FILE, ONNX_METADATA_KEY, PackageConfig
from skin_demo.config import README_FILE as CARD_FILE

EVAL_DIR = "eval"  # a package's held-out evaluation: metrics.json, EVAL.md and the plots


def embed_config(proto: onnx.ModelProto, config: PackageConfig | str) -> onnx.ModelProto:
    """`proto` with `config` (or a config's JSON text) in its metadata, replacing an older copy; other metadata is
    kept."""
    text = config if isinstance(config, str) else config.to_json()
    kept = {p.key: p.value for p in proto.metadata_props if p.key != ONNX_METADATA_KEY}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**kept, ONNX_METADATA_KEY: text})
    proto.producer_name = "skin_demo.train"
    return proto


def heads_config_json(heads: Sequence[PackageConfig]) -> str:
    """config.json of a package with a head per task (config.package_heads reads it back)."""
    raw = {"format_version": HEADS_FORMAT_VERSION, "heads": [config.to_dict() for config in heads]}
    return json.dumps(raw, indent=2, allow_nan=False) + "\n"


def write_package(package_dir: Path, proto: onnx.ModelProto, config: PackageConfig | str, card: str) -> Path:
    """Write model.onnx (with `config`, or a config's JSON text, embedded), config.json and README.md into
    `package_dir`; returns it."""
    package_dir = Path(package_dir)
    package_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(embed_config(proto, config), str(package_dir / MODEL_FILE))
    (package_dir / CONFIG_FILE).write_text(config if isinstance(config, str) else config.to_json())
    (package_dir / CARD_FILE).write_text(card)
    return package_dir


def write_package_config(package_dir: Path, config: PackageConfig | str) -> None:
    """Replace a finished package's config (or its JSON text: heads_config_json): config.json and the copy
    embedded in model.onnx stay equal."""
    text = config if isinstance(config, str) else config.to_json()
    model_path = Path(package_dir) / MODEL_FILE
    onnx.save(embed_config(onnx.load(str(model_path)), text), str(model_path))
    (Path(package_dir) / CONFIG_FILE).write_text(text)
