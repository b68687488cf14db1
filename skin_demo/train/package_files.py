"""Write a package's config into both of its homes: config.json and model.onnx's metadata. onnx only, no torch,
so evaluate and quantize can update a finished package without loading torch."""

from __future__ import annotations

from pathlib import Path

import onnx

from skin_demo.config import ONNX_METADATA_KEY, PackageConfig


def write_package_config(package_dir: Path, config: PackageConfig) -> None:
    """Replace a finished package's config: config.json and the copy embedded in model.onnx stay equal."""
    model_path = Path(package_dir) / "model.onnx"
    save_with_config(onnx.load(str(model_path)), config, model_path)


def save_with_config(proto: onnx.ModelProto, config: PackageConfig, model_path: Path) -> None:
    """Save `proto` to `model_path` with `config` embedded, and write config.json beside it."""
    kept = {p.key: p.value for p in proto.metadata_props if p.key != ONNX_METADATA_KEY}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**kept, ONNX_METADATA_KEY: config.to_json()})
    proto.producer_name = "skin_demo.train"
    onnx.save(proto, str(model_path))
    (Path(model_path).parent / "config.json").write_text(config.to_json())
