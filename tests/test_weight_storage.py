"""Weight storage (skin_demo.train.weight_storage): int8 and float16 in the file, float32 in every computation."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from skin_demo.train import weight_storage
from skin_demo.train.weight_storage import (
    FLOAT16,
    FLOAT32,
    INT8,
    compact_weights,
    with_float16_weights,
    with_int8_weights,
)

SIZE, CHANNELS, FEATURES, K = 16, 64, 256, 2
MIN_ELEMENTS = CHANNELS * 9  # the depthwise weight's size: the last Gemm's weight (F x K) is smaller


def conv_gemm_graph() -> onnx.ModelProto:
    """Conv(3->C, 3x3) -> Relu -> depthwise Conv(C, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(C->F, transB)
    -> Relu -> Gemm(F->K): float32 weights, biases included, the shapes an EfficientNet has."""
    rng = np.random.default_rng(0)
    weights = {
        "conv_w": rng.normal(size=(CHANNELS, 3, 3, 3)) * np.linspace(0.05, 0.5, CHANNELS)[:, None, None, None],
        "conv_b": rng.normal(size=CHANNELS) * 0.1,
        "dw_w": rng.normal(size=(CHANNELS, 1, 3, 3)) * 0.3,
        "dw_b": rng.normal(size=CHANNELS) * 0.1,
        "fc_w": rng.normal(size=(FEATURES, CHANNELS)) * 0.5,
        "fc_b": rng.normal(size=FEATURES) * 0.1,
        "out_w": rng.normal(size=(FEATURES, K)) * 0.2,
        "out_b": np.zeros(K),
    }
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["a1"]),
            helper.make_node("Conv", ["a1", "dw_w", "dw_b"], ["c2"], pads=[1, 1, 1, 1], group=CHANNELS),
            helper.make_node("Relu", ["c2"], ["a2"]),
            helper.make_node("GlobalAveragePool", ["a2"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "fc_w", "fc_b"], ["hidden"], transB=1),
            helper.make_node("Relu", ["hidden"], ["a3"]),
            helper.make_node("Gemm", ["a3", "out_w", "out_b"], ["logits"]),
        ],
        "conv_gemm",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", K])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), name) for name, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def numpy_logits(x: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The graph above in numpy (float64), for weights `w`."""
    def windows(a):  # [N, C, H, W] -> [N, C, H, W, 3, 3], padded by 1
        return sliding_window_view(np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))

    a1 = np.maximum(np.einsum("nchwij,ocij->nohw", windows(x), w["conv_w"]) + w["conv_b"][:, None, None], 0)
    a2 = np.maximum(np.einsum("nchwij,cij->nchw", windows(a1), w["dw_w"][:, 0]) + w["dw_b"][:, None, None], 0)
    hidden = np.maximum(a2.mean(axis=(2, 3)) @ w["fc_w"].T + w["fc_b"], 0)
    return hidden @ w["out_w"] + w["out_b"]


def stored(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def run(proto: onnx.ModelProto, x: np.ndarray, **options) -> np.ndarray:
    opts = ort.SessionOptions()
    for key, value in options.items():
        setattr(opts, key, value)
    session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": x})[0]


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(4, 3, SIZE, SIZE)).astype(np.float32)


def test_int8_graph_computes_the_dequantized_weights_in_float32(batch):
    full = conv_gemm_graph()
    int8 = with_int8_weights(full, min_elements=MIN_ELEMENTS)
    values = stored(int8)
    # Conv, depthwise Conv and Gemm weights became int8 with one scale per output channel (axis 0); biases and
    # the small Gemm stay float32.
    for name, shape in (("conv_w", (CHANNELS, 3, 3, 3)), ("dw_w", (CHANNELS, 1, 3, 3)), ("fc_w", (FEATURES, CHANNELS))):
        assert values[f"{name}__int8"].dtype == np.int8 and values[f"{name}__int8"].shape == shape
        assert values[f"{name}__scale"].shape == (shape[0],) + (1,) * (len(shape) - 1)
        assert name not in values
    assert {"conv_b", "dw_b", "fc_b", "out_w", "out_b"} <= set(values)
    assert all(values[n].dtype == np.float32 for n in ("conv_b", "dw_b", "fc_b", "out_w", "out_b"))

    dequantized = {**stored(full), **{n: values[f"{n}__int8"] * values[f"{n}__scale"] for n in ("conv_w", "dw_w",
                                                                                                 "fc_w")}}
    got = run(int8, batch)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_logits(batch, dequantized), rtol=1e-4, atol=1e-5)
    # Within int8's rounding of the float original: the weights move by under a percent (RMS)...
    for name in ("conv_w", "dw_w", "fc_w"):
        error = np.abs(dequantized[name] - stored(full)[name])
        assert np.sqrt(np.mean(error ** 2)) < 0.01 * np.sqrt(np.mean(stored(full)[name] ** 2))
    # ... and the logits by well under a percent of their range.
    original = numpy_logits(batch, stored(full))
    np.testing.assert_allclose(run(full, batch), original, rtol=1e-4, atol=1e-5)
    assert np.max(np.abs(got - original)) < 0.01 * np.ptp(original)


def test_int8_weights_are_a_quarter_of_float32_and_half_of_float16():
    full = conv_gemm_graph()
    size = lambda proto: len(proto.SerializeToString())  # noqa: E731
    weight_bytes = 4 * (CHANNELS * 27 + CHANNELS * 9 + FEATURES * CHANNELS)
    int8 = with_int8_weights(full, min_elements=MIN_ELEMENTS)
    saved = size(full) - size(int8)
    assert 0.68 * weight_bytes < saved < 0.75 * weight_bytes  # 3 of every 4 bytes, less a scale per channel
    assert size(int8) < 0.6 * size(with_float16_weights(full, min_elements=MIN_ELEMENTS))


def test_float16_stored_weights_convert_too(batch):
    """Today's packages store weights as float16 behind a Cast: those become int8 as if they were float32."""
    full = conv_gemm_graph()
    half = with_float16_weights(full, min_elements=MIN_ELEMENTS)
    int8 = with_int8_weights(half, min_elements=MIN_ELEMENTS)
    assert not any(t.data_type == TensorProto.FLOAT16 for t in int8.graph.initializer)
    assert not any(n.op_type == "Cast" and n.input[0].endswith("__float16") for n in int8.graph.node)
    assert len(int8.SerializeToString()) < 0.6 * len(half.SerializeToString())
    np.testing.assert_allclose(run(int8, batch), run(with_int8_weights(full, min_elements=MIN_ELEMENTS), batch),
                               rtol=1e-3, atol=1e-3)


def test_onnx_runtime_folds_the_int8_weights_into_float32_constants(batch, tmp_path):
    """The reason for Cast + Mul rather than DequantizeLinear: nothing is dequantized per run."""
    optimized = tmp_path / "optimized.onnx"
    run(with_int8_weights(conv_gemm_graph(), min_elements=MIN_ELEMENTS), batch, optimized_model_filepath=str(optimized))
    graph = onnx.load(str(optimized)).graph
    assert not [n.op_type for n in graph.node if n.op_type in ("Cast", "Mul", "DequantizeLinear")]
    assert not [t.name for t in graph.initializer if t.data_type == TensorProto.INT8]


def test_bias_correction_keeps_the_mean_output_of_images_it_never_saw(batch):
    """Rounding shifts each output channel's mean a little, and the shifts add up layer by layer; the biases absorb
    the shift measured on calibration images, and it stays small on other images of the same kind."""
    rng = np.random.default_rng(2)
    calibration, unseen = ((rng.normal(size=(16, 3, SIZE, SIZE)) + 0.5).astype(np.float32) for _ in range(2))
    full = conv_gemm_graph()
    reference = run(full, unseen)
    plain = run(with_int8_weights(full, min_elements=MIN_ELEMENTS), unseen) - reference
    corrected = run(with_int8_weights(full, min_elements=MIN_ELEMENTS, calibration=calibration), unseen) - reference
    assert np.abs(corrected.mean(axis=0)).max() < 0.2 * np.abs(plain.mean(axis=0)).max()
    assert np.abs(corrected).max() < np.abs(plain).max()


def test_bias_correction_subtracts_the_rounding_applied_to_the_mean_input():
    """The first convolution reads the image itself: its new bias is the old one minus (rounded weight - weight)
    applied to each input channel's mean over the calibration images; the last Gemm (not rounded) keeps its bias."""
    calibration = (np.random.default_rng(3).normal(size=(8, 3, SIZE, SIZE)) + [[[0.2]], [[-0.4]], [[0.9]]])
    calibration = calibration.astype(np.float32)
    full = conv_gemm_graph()
    values = stored(with_int8_weights(full, min_elements=MIN_ELEMENTS, calibration=calibration))
    original = stored(full)
    rounding = values["conv_w__int8"] * values["conv_w__scale"] - original["conv_w"]
    expected = original["conv_b"] - np.einsum("ocij,c->o", rounding, calibration.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(values["conv_b"], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(values["conv_b"], original["conv_b"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(values["out_b"], original["out_b"])


def test_compact_weights_takes_the_smallest_storage_within_the_limit(batch, monkeypatch):
    full = conv_gemm_graph()
    proto, checks = compact_weights(full, batch, temperature=1.0)
    assert checks["weights"] == INT8 and checks["int8_max_probability_change"] <= 1e-2
    assert any(t.data_type == TensorProto.INT8 for t in proto.graph.initializer)
    # A limit nothing meets leaves the float32 graph, with what each storage would have moved.
    monkeypatch.setattr(weight_storage, "MAX_PROBABILITY_CHANGE", -1.0)
    proto, checks = compact_weights(full, batch, temperature=1.0)
    assert proto is full and checks["weights"] == FLOAT32
    assert set(checks) == {"weights", "int8_max_probability_change", "float16_max_probability_change"}
    assert FLOAT16 != INT8 != FLOAT32


def test_describe_says_how_the_file_stores_its_weights_and_what_int8_cost():
    assert weight_storage.describe({"weights": FLOAT16}) == FLOAT16
    assert weight_storage.describe({}) is None
    compacted = {
        "weights": INT8, "int8_converted_from": FLOAT16, "int8_bias_correction": "48 images: 16 (seeded) of ...",
        "int8_validation_change": {"limit": 0.005, "per_source": {
            "ham10000": {"metrics": {"pass_rate": {"change": 0.0}, "domain_rate": {"change": 0.0013}}},
            "not_lesion": {"metrics": {"rejection_rate": {"change": -0.0018}}},
            "clinical": {"metrics": {"domain_rate": {"change": None}}}}},
    }
    text = weight_storage.describe(compacted)
    assert text.startswith(f"{INT8}; converted from a file with {FLOAT16}; biases corrected on 48 images")
    assert "largest drop of a validation metric 0.0018 over 3 sources (limit 0.005)" in text
