"""How a package stores its large weights: int8 or float16 in the file, float32 in every computation.

model.onnx is most of what the on-device page downloads, and the weights are most of model.onnx. Both transforms
keep every tensor the graph computes with: each stored weight is turned back into the float32 tensor the graph
used before by nodes at the top of the graph (a Cast, and for int8 a Mul by its per-channel scale), so serving
and the browser need no change. The rounding moves outputs slightly, so `compact_weights` measures the change on
real images and keeps the smallest storage within MAX_PROBABILITY_CHANGE. onnx and ONNX Runtime only (no torch):
an existing package can be converted without the training stack.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from skin_demo.config import INPUT_NAME, OUTPUT_NAME
from skin_demo.modelpack import softmax

log = logging.getLogger(__name__)

MAX_PROBABILITY_CHANGE = 1e-2  # a smaller storage ships only if no probability moves more than this
INT8 = "int8 storage (per-channel), float32 compute"
FLOAT16 = "float16 storage, float32 compute"
FLOAT32 = "float32"


def with_float16_weights(proto: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """A copy of `proto` whose large float32 weights are stored as float16, each followed by a Cast to float32.

    Halves the file while every operator still computes in float32: ONNX Runtime folds the Casts into float32
    constants when it creates the session.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT or np.prod(tensor.dims) < min_elements:
            kept.append(tensor)
            continue
        values = numpy_helper.to_array(tensor).astype(np.float16)
        kept.append(numpy_helper.from_array(values, name=f"{tensor.name}__float16"))
        casts.append(helper.make_node("Cast", [f"{tensor.name}__float16"], [tensor.name], to=TensorProto.FLOAT,
                                      name=f"{tensor.name}__to_float32"))
    _replace(graph, kept, casts + list(graph.node))
    onnx.checker.check_model(out, full_check=True)
    return out


def with_int8_weights(proto: onnx.ModelProto, min_elements: int = 1024,
                      calibration: np.ndarray | None = None) -> onnx.ModelProto:
    """A copy of `proto` whose large weights are stored as int8 with one symmetric scale per slice of axis 0 (the
    output channel of a Conv weight [O, I/g, kH, kW], depthwise included, and of a Gemm weight with transB), each
    followed by a Cast to float32 and a Mul by its scales that give back the float32 tensor the graph used.

    A quarter of float32, half of float16, and the computation stays float32. Cast + Mul rather than
    DequantizeLinear: ONNX Runtime folds Cast and Mul of constants into float32 constants when it creates the
    session, as it does float16's Cast, but keeps DequantizeLinear nodes (for its int8 kernels) and would rebuild
    every weight on every run (twice the latency of EfficientNet-Lite0 on CPU). Weights are float32 initializers
    or float16 initializers behind a Cast to float32 (what `with_float16_weights` writes, so today's packages
    convert too). Tensors of one dimension (biases, batch-norm parameters) or under `min_elements` are left as they
    are: a scale per element would save nothing.

    With `calibration` (float32 [N, 3, H, W], preprocessed images not used for judging the result), each
    Conv's or Gemm's bias also absorbs the mean shift its rounded weights cause on those images
    (`_bias_corrections`), which keeps the outputs' average where the float32 graph had it.
    """
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    stored = {t.name: t for t in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    # The float32 tensor the graph reads -> (its values, the initializer and the Cast node it came from).
    weights = {name: (numpy_helper.to_array(t), t, None)
               for name, t in stored.items() if t.data_type == TensorProto.FLOAT}
    for node in graph.node:
        source = stored.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if (source is not None and source.data_type == TensorProto.FLOAT16 and consumers[source.name] == 1
                and _cast_target(node) == TensorProto.FLOAT):
            weights[node.output[0]] = (numpy_helper.to_array(source).astype(np.float32), source, node)
    large = {name: w for name, w in weights.items() if w[0].ndim >= 2 and w[0].size >= min_elements}
    rounded = {name: _int8_per_channel(values) for name, (values, _, _) in large.items()}
    biases = {} if calibration is None else _bias_corrections(
        proto, calibration, {name: (codes * scale - large[name][0]) for name, (codes, scale) in rounded.items()},
        {name: values for name, (values, _, _) in weights.items()})
    replaced = [weights[name] for name in biases] + list(large.values())
    dropped_tensors = {id(t) for _, t, _ in replaced}
    dropped_nodes = {id(n) for _, _, n in replaced if n is not None}
    kept = [t for t in graph.initializer if id(t) not in dropped_tensors]
    kept += [numpy_helper.from_array(values, name) for name, values in biases.items()]
    dequantize = []
    for name, (codes, scale) in rounded.items():
        kept += [numpy_helper.from_array(codes, f"{name}__int8"), numpy_helper.from_array(scale, f"{name}__scale")]
        dequantize += [
            helper.make_node("Cast", [f"{name}__int8"], [f"{name}__unscaled"], to=TensorProto.FLOAT,
                             name=f"{name}__to_float32"),
            helper.make_node("Mul", [f"{name}__unscaled", f"{name}__scale"], [name], name=f"{name}__rescale"),
        ]
    _replace(graph, kept, dequantize + [n for n in graph.node if id(n) not in dropped_nodes])
    onnx.checker.check_model(out, full_check=True)
    return out


def _int8_per_channel(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes in [-127, 127] and float32 scales [C, 1, ...] (each channel's largest |value| / 127) with
    codes * scales ~ `values` [C, ...]. (A scale clipped for the smallest squared error moved the bundled packages'
    probabilities no less.)"""
    flat = values.reshape(len(values), -1).astype(np.float32)
    peak = np.abs(flat).max(axis=1, keepdims=True)
    scale = np.where(peak > 0, peak / 127, 1).astype(np.float32)  # an all-zero channel still needs a scale
    codes = np.clip(np.rint(flat / scale), -127, 127).astype(np.int8)
    return codes.reshape(values.shape), scale.reshape(-1, *[1] * (values.ndim - 1))


def _bias_corrections(proto: onnx.ModelProto, calibration: np.ndarray, weight_errors: dict[str, np.ndarray],
                      values: dict[str, np.ndarray], batch_size: int = 8) -> dict[str, np.ndarray]:
    """New float32 values for the bias of each Conv / Gemm whose weight is rounded: bias - (rounded weight - weight)
    applied to the mean of the node's input over `calibration` (per channel; a convolution's zero padding is left
    out), so each output channel's mean over those images stays where the float32 graph had it (the empirical bias
    correction of Nagel et al., "Data-Free Quantization", 2019). Keyed by the tensor name the node reads."""
    nodes = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) == 3
             and n.input[1] in weight_errors and n.input[2] in values and _plain_gemm(n)]
    inputs = sorted({n.input[0] for n in nodes})
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in inputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    sums, counts = dict.fromkeys(inputs, 0.0), dict.fromkeys(inputs, 0)
    for start in range(0, len(calibration), batch_size):
        outputs = session.run(inputs, {INPUT_NAME: calibration[start:start + batch_size]})
        for name, array in zip(inputs, outputs):  # [N, C] or [N, C, H, W]: a mean per channel (axis 1)
            sums[name] = sums[name] + array.sum(axis=tuple(i for i in range(array.ndim) if i != 1), dtype=np.float64)
            counts[name] += array.size // array.shape[1]
    corrected = {}
    for node in nodes:
        error = weight_errors[node.input[1]].astype(np.float64)
        means = sums[node.input[0]] / counts[node.input[0]]
        if node.op_type == "Gemm":
            shift = error @ means if _attribute(node, "transB", 0) else means @ error
        else:  # Conv weight [O, I/groups, kH, kW]: output channel o reads its group's I/groups input channels
            groups = _attribute(node, "group", 1)
            per_group = means.reshape(groups, -1)[np.arange(len(error)) // (len(error) // groups)]
            shift = np.einsum("oihw,oi->o", error, per_group)
        corrected[node.input[2]] = (values[node.input[2]] - shift).astype(np.float32)
    return corrected


def max_probability_change(reference: onnx.ModelProto, candidate: onnx.ModelProto, batch: np.ndarray,
                           temperature: float) -> float:
    """Largest |softmax difference| between two ONNX graphs of one package over `batch`, at its temperature."""
    def probabilities(proto: onnx.ModelProto) -> np.ndarray:
        session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return softmax(session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0] / temperature)

    return float(np.max(np.abs(probabilities(reference) - probabilities(candidate))))


def compact_weights(proto: onnx.ModelProto, batch: np.ndarray, temperature: float,
                    task: str = "") -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The smallest weight storage of the float32 graph `proto` that moves no probability over `batch` (float32
    [N, 3, H, W], preprocessed real images) by more than MAX_PROBABILITY_CHANGE: int8, else float16, else float32.

    Returns the graph and what the package's provenance records: `weights` (which storage) and each tried
    storage's `<storage>_max_probability_change`. The one rule every trainer's package goes through.
    """
    checks: dict[str, Any] = {}
    for name, convert, storage in (("int8", with_int8_weights, INT8), ("float16", with_float16_weights, FLOAT16)):
        candidate = convert(proto)
        change = max_probability_change(proto, candidate, batch, temperature)
        checks[f"{name}_max_probability_change"] = float(f"{change:.3g}")
        if change <= MAX_PROBABILITY_CHANGE:
            return candidate, {"weights": storage, **checks}
        log.warning("%s: %s weights move a probability by %.2e (limit %.0e)", task, name, change,
                    MAX_PROBABILITY_CHANGE)
    return proto, {"weights": FLOAT32, **checks}


def describe(provenance: dict[str, Any]) -> str | None:
    """How a package's file stores its weights, in words for its model card, from its provenance (None if it does
    not say): the storage, and for a `compact` conversion where from, the bias correction and the largest drop of
    a validation metric it was judged on."""
    storage = provenance.get("weights")
    if storage is None or "int8_validation_change" not in provenance:
        return storage
    judged = provenance["int8_validation_change"]
    changes = [row["change"] for c in judged["per_source"].values() for row in c["metrics"].values()
               if row["change"] is not None]
    return (f"{storage}; converted from a file with {provenance.get('int8_converted_from', FLOAT32)}; biases "
            f"corrected on {provenance.get('int8_bias_correction', 'no images')}; largest drop of a validation metric "
            f"{max(0.0, -min(changes, default=0.0)):.4f} over {len(judged['per_source'])} sources (limit "
            f"{judged['limit']})")


def _cast_target(node: onnx.NodeProto) -> int | None:
    return _attribute(node, "to", None)


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _plain_gemm(node: onnx.NodeProto) -> bool:
    """A Conv, or a Gemm that computes x @ W (+ bias) without scaling or a transposed input."""
    return node.op_type != "Gemm" or (_attribute(node, "alpha", 1.0) == 1.0 and _attribute(node, "beta", 1.0) == 1.0
                                      and not _attribute(node, "transA", 0))


def _replace(graph: onnx.GraphProto, initializers: list, nodes: list) -> None:
    """Make `initializers` and `nodes` (in topological order) the graph's own."""
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.node[:]
    graph.node.extend(nodes)
