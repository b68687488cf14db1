"""ONNX export of a trained network with its config embedded, and the torch-vs-ONNX Runtime parity check.

Both work in memory: `fit` checks parity on the exported bytes first and only then writes the package, once.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import onnx
import onnxruntime as ort
import torch

from skin_demo.config import INPUT_NAME, OUTPUT_NAME, PackageConfig
from skin_demo.modelpack import softmax
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


def with_float16_weights(proto: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """A copy of `proto` whose large float32 weights are stored as float16, each followed by a Cast to float32.

    Halves the file (what a browser downloads) while every operator still computes in float32: ONNX Runtime folds
    the Casts into float32 constants when it creates the session. The rounding changes outputs slightly, so the
    caller measures the change on real images and evaluation measures the file that ships.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT or np.prod(tensor.dims) < min_elements:
            kept.append(tensor)
            continue
        values = onnx.numpy_helper.to_array(tensor).astype(np.float16)
        kept.append(onnx.numpy_helper.from_array(values, name=f"{tensor.name}__float16"))
        casts.append(onnx.helper.make_node("Cast", [f"{tensor.name}__float16"], [tensor.name], to=onnx.TensorProto.FLOAT,
                                           name=f"{tensor.name}__to_float32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(out, full_check=True)
    return out


def max_probability_change(reference: onnx.ModelProto, candidate: onnx.ModelProto, batch: np.ndarray,
                           temperature: float) -> float:
    """Largest |softmax difference| between two ONNX graphs of one package over `batch`, at its temperature."""
    def probabilities(proto: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return softmax(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0] / temperature)

    return float(np.max(np.abs(probabilities(reference) - probabilities(candidate))))
