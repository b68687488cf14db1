"""ONNX export of a trained network with its config embedded, and the torch-vs-ONNX Runtime parity check.

Both work in memory: `fit` checks parity on the exported bytes first and only then writes the package, once. How
the weights are stored in the file is `weight_storage`'s job.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import onnx
import onnxruntime as ort
import torch

from skin_demo.config import INPUT_NAME, OUTPUT_NAME, PackageConfig
from skin_demo.train.package_files import embed_config

log = logging.getLogger(__name__)

OPSET = 18


def to_onnx(model: torch.nn.Module, config: PackageConfig) -> onnx.ModelProto:
    """Export `model` (image [N,3,H,W] -> logits [N,K]) with `config` embedded; the batch axis is dynamic.

    The result passes onnx.checker's full check.
    """
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
    proto = embed_config(onnx.load_from_string(buffer.getvalue()), config)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def max_logit_difference(model: torch.nn.Module, proto: onnx.ModelProto, batch: np.ndarray) -> float:
    """Largest |torch logit - ONNX Runtime logit| over `batch` (float32 [N,3,H,W])."""
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return float(np.max(np.abs(expected - actual)))
