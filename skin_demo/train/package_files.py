"""Write a package's files: model.onnx with its config embedded, config.json beside it, and the model card.
onnx only, no torch, so evaluate and quantize can update a finished package without loading torch."""

from __future__ import annotations

from pathlib import Path

import onnx

from skin_demo.config import CONFIG_FILE, MODEL_FILE, ONNX_METADATA_KEY, PackageConfig
from skin_demo.config import README_FILE as CARD_FILE

EVAL_DIR = "eval"  # a package's held-out evaluation: metrics.json, EVAL.md and the plots


def embed_config(proto: onnx.ModelProto, config: PackageConfig) -> onnx.ModelProto:
    """`proto` with `config` in its metadata (replacing an older copy); other metadata is kept."""
    kept = {p.key: p.value for p in proto.metadata_props if p.key != ONNX_METADATA_KEY}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**kept, ONNX_METADATA_KEY: config.to_json()})
    proto.producer_name = "skin_demo.train"
    return proto


def write_package(package_dir: Path, proto: onnx.ModelProto, config: PackageConfig, card: str) -> Path:
    """Write model.onnx (with `config` embedded), config.json and README.md into `package_dir`; returns it."""
    package_dir = Path(package_dir)
    package_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(embed_config(proto, config), str(package_dir / MODEL_FILE))
    (package_dir / CONFIG_FILE).write_text(config.to_json())
    (package_dir / CARD_FILE).write_text(card)
    return package_dir


def write_package_config(package_dir: Path, config: PackageConfig) -> None:
    """Replace a finished package's config: config.json and the copy embedded in model.onnx stay equal."""
    model_path = Path(package_dir) / MODEL_FILE
    onnx.save(embed_config(onnx.load(str(model_path)), config), str(model_path))
    (Path(package_dir) / CONFIG_FILE).write_text(config.to_json())
