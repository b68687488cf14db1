"""The class-activation map (CAM, Zhou et al. 2016) as a second output of a package's ONNX graph.

A classifier that ends in global average pooling and a linear layer (logits = W . mean_hw(F) + b) has, at each
feature-map location, the contribution W . F[:, y, x] to every logit: that map is CAM. It is added to the exported
graph as a 1x1 convolution of the last feature map with the classifier's own weight tensor, so ONNX Runtime and
ONNX Runtime Web compute it in the same run as the logits, without gradients. The logits are untouched: the new
nodes only read tensors the graph already computes.

onnx only, no torch: it applies to a freshly exported graph (`package_build`) and to a finished package alike
(`python -m skin_demo.train add-attention`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper

from skin_demo.config import ATTENTION_DESCRIPTION, ATTENTION_OUTPUT, OUTPUT_NAME, PackageConfig


class AttentionExportError(ValueError):
    """The graph does not end in global average pooling and a linear classifier, so CAM is not defined for it."""


def with_attention_output(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `proto` with the output ATTENTION_OUTPUT float32 [N, K, h, w] after `logits`.

    The graph must pool its last feature map once (GlobalAveragePool -> Flatten -> Gemm); flip test-time
    augmentation is exported as a flip-averaged feature map for this reason (`task_nets.FlipAveraged`).
    Raises AttentionExportError otherwise, or when the graph already has the output.
    """
    if any(output.name == ATTENTION_OUTPUT for output in proto.graph.output):
        raise AttentionExportError(f"the graph already has an output named {ATTENTION_OUTPUT!r}")
    feature_map, weight, transposed = _pooled_classifier(proto.graph)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    kernel = f"{ATTENTION_OUTPUT}__kernel"
    nodes = []
    if not transposed:  # Gemm computes features @ W with W [C, K]: the kernel wants [K, C]
        nodes.append(helper.make_node("Transpose", [weight], [f"{kernel}__kc"], perm=[1, 0]))
        weight = f"{kernel}__kc"
    axes = f"{kernel}__axes"
    graph.initializer.append(onnx.numpy_helper.from_array(np.asarray([2, 3], dtype=np.int64), axes))
    nodes += [
        helper.make_node("Unsqueeze", [weight, axes], [kernel], name=f"{ATTENTION_OUTPUT}/kernel"),
        helper.make_node("Conv", [feature_map, kernel], [ATTENTION_OUTPUT], name=f"{ATTENTION_OUTPUT}/conv"),
    ]
    graph.node.extend(nodes)
    dims = _map_dims(proto, feature_map)
    graph.output.append(helper.make_tensor_value_info(ATTENTION_OUTPUT, TensorProto.FLOAT, dims))
    onnx.checker.check_model(out, full_check=True)
    return out


def with_attention_config(config: PackageConfig) -> PackageConfig:
    """`config` naming and describing the attention output (`outputs`), as the package contract asks."""
    return dataclasses.replace(config, outputs={**config.outputs, ATTENTION_OUTPUT: ATTENTION_DESCRIPTION})


def _pooled_classifier(graph: onnx.GraphProto) -> tuple[str, str, bool]:
    """(last feature map, classifier weight, whether Gemm transposes it) of the one pooled linear classifier."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for pool in (n for n in graph.node if n.op_type == "GlobalAveragePool"):
        flatten = _only(consumers.get(pool.output[0], []), "Flatten")
        gemm = flatten and _only(consumers.get(flatten.output[0], []), "Gemm")
        if gemm and gemm.input[0] == flatten.output[0]:
            attributes = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
            if attributes.get("transA", 0) == 0 and attributes.get("alpha", 1.0) == 1.0:
                found.append((pool.input[0], gemm.input[1], bool(attributes.get("transB", 0))))
    if len(found) != 1:
        raise AttentionExportError(
            f"CAM needs exactly one GlobalAveragePool -> Flatten -> Gemm classifier before {OUTPUT_NAME!r}; "
            f"this graph has {len(found)}"
        )
    return found[0]


def _only(nodes: list[onnx.NodeProto], op_type: str) -> onnx.NodeProto | None:
    return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op_type else None


def _map_dims(proto: onnx.ModelProto, feature_map: str) -> list:
    """[batch, K, h, w] as far as shape inference knows them (the batch axis named as the logits' one)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes = {v.name: v.type.tensor_type.shape for v in [*inferred.graph.value_info, *inferred.graph.output]}
    logits = [d.dim_param or d.dim_value for d in shapes[OUTPUT_NAME].dim]
    spatial = [d.dim_value or None for d in shapes[feature_map].dim[2:]] if feature_map in shapes else [None, None]
    return [logits[0], logits[1], *spatial]

