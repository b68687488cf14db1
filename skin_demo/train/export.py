"""Write a model package: ONNX export, the config embedded and beside it, checks, and torch-vs-ORT parity."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import onnx
import torch

from skin_demo.config import PackageConfig
from skin_demo.train.package_files import save_with_config

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_package(model: torch.nn.Module, config: PackageConfig, package_dir: Path) -> Path:
    """Export `model` (image [N,3,H,W] -> logits [N,K]) to `package_dir/model.onnx` with `config` embedded.

    The batch axis is dynamic; the file passes onnx.checker's full check. Returns the model path.
    """
    package_dir = Path(package_dir)
    package_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = torch.zeros(1, 3, *config.preprocess.size)
    buffer = io.BytesIO()
    # The TorchScript exporter gives a single self-contained file with plain, ORT-friendly ops.
    torch.onnx.export(
        model,
        (example,),
        buffer,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    model_path = package_dir / "model.onnx"
    save_with_config(proto, config, model_path)
    onnx.checker.check_model(str(model_path), full_check=True)
    return model_path


def max_logit_difference(model: torch.nn.Module, package_dir: Path, batch: np.ndarray) -> float:
    """Largest |torch logit - ONNX Runtime logit| over `batch` (float32 [N,3,H,W]), through the serving loader."""
    from skin_demo.modelpack import ModelPack

    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    actual = ModelPack.load(Path(package_dir)).logits(batch)
    return float(np.max(np.abs(expected - actual)))
