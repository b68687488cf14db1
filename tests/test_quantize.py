"""`python -m skin_demo.train quantize`: static int8 (QDQ, per-channel) on a tiny but real convolutional package."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from skin_demo.config import ONNX_METADATA_KEY
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.train import quantize_cli, sources
from skin_demo.train.data import read_ham10000, read_split
from skin_demo.train.quantize import (
    QuantizeError,
    calibration_samples,
    quantize_package,
    shape_computation_nodes,
)
from skin_demo.train.report import read_evaluation
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import make_fake_isic2017
from tests.tiny_packages import save_graph_package, tiny_config

SIZE = 32
CHANNELS = 8


def make_conv_package(folder, task="lesion_type"):
    """Conv(3->8, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->K): a small CNN with the contract's I/O."""
    labels = ("benign", "malignant") if task == "malignancy" else ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    malignant = ("malignant",) if task == "malignancy" else ("akiec", "bcc", "mel")
    config = tiny_config(task, labels, malignant, size=(SIZE, SIZE), architecture="tiny_test_cnn",
                         decision_threshold=0.4 if task == "malignancy" else None, temperature=1.3)
    rng = np.random.default_rng(0)
    k = len(labels)
    conv_w = rng.normal(size=(CHANNELS, 3, 3, 3)) * np.linspace(0.05, 0.5, CHANNELS)[:, None, None, None]
    conv_b = rng.normal(size=CHANNELS) * 0.1
    fc_w = rng.normal(size=(CHANNELS, k)) * 3.0
    fc_b = rng.normal(size=k) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "cw", "cb"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["act"]),
            helper.make_node("GlobalAveragePool", ["act"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
            helper.make_node("Gemm", ["features", "fw", "fb"], ["logits"]),
        ],
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), name)
                     for name, a in (("cw", conv_w), ("cb", conv_b), ("fw", fc_w), ("fb", fc_b))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return save_graph_package(folder, model, config)


@pytest.fixture
def fake_data(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    return ham, write_fake_split(ham, tmp_path / "split.csv")


@pytest.fixture
def fake_isic(tmp_path):
    return make_fake_isic2017(tmp_path / "isic2017", per_class_and_split=3, size=48)


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    quantize_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["quantize", *map(str, argv)])
    return args.func(args)


def _images(ham, split, subset, pre):
    chosen = [s for s in read_ham10000(ham) if read_split(split)[s.image_id] == subset]
    return np.stack([preprocess(load_image(s.path), pre) for s in chosen])


def test_quantized_package_keeps_the_contract_and_the_predictions(tmp_path, fake_data):
    ham, split = fake_data
    source = make_conv_package(tmp_path / "fp32")
    fp32 = ModelPack.load(source)
    calib = list(_images(ham, split, "train", fp32.config.preprocess))
    config = quantize_package(source, tmp_path / "int8", calib, calibration_note="synthetic")
    int8 = ModelPack.load(tmp_path / "int8")  # validates: embedded config == config.json, I/O names and shapes
    assert config == int8.config
    # Everything serving uses is unchanged; the metrics are reset and the provenance says what was done.
    for field in ("task", "labels", "malignant_labels", "preprocess", "temperature", "decision_threshold"):
        assert getattr(int8.config, field) == getattr(fp32.config, field)
    assert int8.config.metrics == {}
    q = int8.config.provenance["quantization"]
    assert q["format"] == "QDQ" and q["weights"] == "int8 per-channel" and q["calibration_images"] == len(calib)
    assert q["reduce_range"] is True
    assert q["calibration_data"] == "synthetic"
    assert int8.config.provenance["code_commit"] == fp32.config.provenance["code_commit"]
    # Really int8, with one weight scale per output channel of the convolution.
    model = onnx.load(tmp_path / "int8" / "model.onnx")
    assert model_is_quantized(tmp_path / "int8" / "model.onnx") and not model_is_quantized(source / "model.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert any(a.dtype == np.int8 and a.shape == (CHANNELS, 3, 3, 3) for a in inits.values())
    conv_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and inits.get(n.input[0]) is not None and inits[n.input[0]].shape == (CHANNELS, 3, 3, 3))
    assert inits[conv_dq.input[1]].shape == (CHANNELS,)
    # Close to fp32 on held-out images.
    test = _images(ham, split, "test", fp32.config.preprocess)
    l32, l8 = fp32.logits(test), int8.logits(test)
    p32, p8 = fp32.probabilities(test), int8.probabilities(test)
    # (Without reduce_range, on an AVX2 machine without VNNI, this model's logits move by ~2: see quantize.py.)
    assert np.max(np.abs(l32 - l8)) < 0.05 * np.ptp(l32)
    assert np.max(np.abs(p32 - p8)) < 0.1
    assert np.mean(p32.argmax(1) == p8.argmax(1)) >= 0.85
    assert "Quantized: static int8" in (tmp_path / "int8" / "README.md").read_text()


def test_calibration_uses_the_training_split_of_every_source_and_class(fake_data, fake_isic):
    ham, split = fake_data
    train = sources.samples(sources.label_table(ham, split, fake_isic), "train")
    chosen = calibration_samples(train, 10)
    assert len(chosen) == 10 and {s.image_id for s in chosen} <= {s.image_id for s in train}
    # One of each (source, class) group before a second of any: 7 HAM10000 classes, 3 ISIC 2017 ones.
    assert len({(s.source, s.dx) for s in chosen}) == 10
    assert chosen == calibration_samples(train, 10)  # seeded
    assert len(calibration_samples(train, 10_000)) == len(train)


def test_refusals(tmp_path, fake_data):
    source = make_conv_package(tmp_path / "fp32")
    calib = [np.zeros((3, SIZE, SIZE), np.float32)]
    with pytest.raises(QuantizeError, match="is the input package"):
        quantize_package(source, source, calib)
    with pytest.raises(QuantizeError, match="no calibration images"):
        quantize_package(source, tmp_path / "out", [])
    with pytest.raises(QuantizeError, match="must be"):
        quantize_package(source, tmp_path / "out", [np.zeros((3, 8, 8), np.float32)])
    with pytest.raises(PackageError):
        quantize_package(tmp_path / "nothing", tmp_path / "out", calib)


def test_cli_quantize_and_evaluate(tmp_path, fake_data, fake_isic, capsys):
    ham, split = fake_data
    source = make_conv_package(tmp_path / "fp32", task="malignancy")
    out = tmp_path / "int8"
    assert _cli(source, "--ham", ham, "--split", split, "--isic2017", fake_isic, "--out", out,
                "--calibration-images", "10", "--evaluate", "--batch-size", "4") == 0
    printed = capsys.readouterr().out
    assert "calibrating on 10 training-split images" in printed
    assert "fp32 vs int8 on " in printed and "isic2017/labels.csv:test, 9 images" in printed
    assert "balanced_accuracy" in printed and "sensitivity" in printed and "same predicted label for" in printed
    pack = ModelPack.load(out)
    assert pack.config.metrics["ham10000"]["split"].endswith("split.csv:test")
    assert "sensitivity" in pack.config.metrics["isic2017"]
    assert "10 training-split images (7 ham10000, 3 isic2017)" in pack.config.provenance["quantization"][
        "calibration_data"]
    comparison = pack.config.provenance["quantization"]["fp32_vs_int8"]
    assert comparison["ham10000"]["n"] == 14 and comparison["isic2017"]["n"] == 9
    assert 0.0 <= comparison["isic2017"]["same_label"] <= 1.0
    evaluation = read_evaluation(out / "eval")
    assert evaluation.reports["ham10000"].n == 14 and evaluation.reports["isic2017"].binary.threshold == 0.4
    # The source package is untouched.
    assert ModelPack.load(source).config.metrics == {"split": "tests:synthetic", "balanced_accuracy": 0.5,
                                                     "accuracy": 0.5}


def test_cli_evaluate_with_limit_does_not_record_metrics(tmp_path, fake_data, capsys):
    ham, split = fake_data
    source = make_conv_package(tmp_path / "fp32")
    out = tmp_path / "int8"
    assert _cli(source, "--ham", ham, "--split", split, "--out", out, "--calibration-images", "7",
                "--evaluate", "--limit", "5") == 0
    assert "metrics are left empty" in capsys.readouterr().out
    assert ModelPack.load(out).config.metrics == {} and not (out / "eval").exists()
    assert _cli(tmp_path / "missing", "--ham", ham, "--split", split, "--out", out) == 1


def make_same_pad_package(folder):
    """A CNN whose padding is computed from the input size, the way timm's tf_efficientnet "same" convolutions
    export: Shape -> Gather -> Cast -> Div -> Ceil -> Unsqueeze -> Concat (float) -> Cast -> Pad -> Conv."""
    labels = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    config = tiny_config("lesion_type", labels, ("akiec", "bcc", "mel"), size=(SIZE, SIZE),
                         architecture="tiny_same_pad_cnn")
    rng = np.random.default_rng(0)
    arrays = {
        "idx2": np.array(2, np.int64), "size_f": np.array(float(SIZE), np.float32), "axis0": np.array([0], np.int64),
        "zero": np.zeros(1, np.float32), "three": np.array([3.0], np.float32),
        "cw": rng.normal(size=(CHANNELS, 3, 5, 5)).astype(np.float32) * 0.2,
        "cb": rng.normal(size=CHANNELS).astype(np.float32) * 0.1,
        "fw": rng.normal(size=(CHANNELS, 7)).astype(np.float32) * 2.0, "fb": np.zeros(7, np.float32),
    }
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"], name="shape"),
        helper.make_node("Gather", ["shape", "idx2"], ["height"], axis=0, name="gather"),
        helper.make_node("Cast", ["height"], ["height_f"], to=TensorProto.FLOAT, name="cast_f"),
        helper.make_node("Div", ["height_f", "size_f"], ["ratio"], name="div"),
        helper.make_node("Ceil", ["ratio"], ["one"], name="ceil"),
        helper.make_node("Unsqueeze", ["one", "axis0"], ["pad1"], name="unsqueeze"),
        helper.make_node("Add", ["pad1", "three"], ["pad4"], name="add"),  # 4: not exact in int8 over [0, 4]
        helper.make_node("Mul", ["pad1", "three"], ["pad3"], name="mul"),  # 3: rounds to 2.99 -> 2 when quantized
        helper.make_node("Concat", ["zero", "zero", "pad1", "pad3", "zero", "zero", "pad4", "pad3"], ["pads_f"],
                         axis=0, name="concat"),
        helper.make_node("Cast", ["pads_f"], ["pads"], to=TensorProto.INT64, name="cast_i"),
        helper.make_node("Pad", ["image", "pads"], ["padded"], name="pad"),
        helper.make_node("Conv", ["padded", "cw", "cb"], ["conv"], name="conv"),
        helper.make_node("Relu", ["conv"], ["act"], name="relu"),
        helper.make_node("GlobalAveragePool", ["act"], ["pooled"], name="gap"),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["features", "fw", "fb"], ["logits"], name="gemm"),
    ]
    graph = helper.make_graph(
        nodes, "same_pad_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 7])],
        initializer=[numpy_helper.from_array(a, name) for name, a in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(config)})
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_shape_and_padding_arithmetic_is_not_quantized(tmp_path):
    source = make_same_pad_package(tmp_path / "fp32")
    model = onnx.load(source / "model.onnx")
    assert set(shape_computation_nodes(model)) == {
        "shape", "gather", "cast_f", "div", "ceil", "unsqueeze", "add", "mul", "concat", "cast_i"
    }
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-1, 1, (3, SIZE, SIZE)).astype(np.float32) for _ in range(16)]
    quantize_package(source, tmp_path / "int8", calib)
    quantized = onnx.load(tmp_path / "int8" / "model.onnx")
    producer = {out: node for node in quantized.graph.node for out in node.output}
    # Walk back from the Pad's `pads` input to the Shape node: no QuantizeLinear/DequantizeLinear on the way.
    pad = next(n for n in quantized.graph.node if n.op_type == "Pad")
    stack, ops = [pad.input[1]], set()
    while stack:
        node = producer.get(stack.pop())
        if node is not None:
            ops.add(node.op_type)
            if node.op_type != "Shape":  # Shape reads only the size of its (quantized) input
                stack.extend(node.input)
    assert "Shape" in ops and not ops & {"QuantizeLinear", "DequantizeLinear"}
    assert model_is_quantized(tmp_path / "int8" / "model.onnx")  # the convolution itself is int8
    x = rng.uniform(-1, 1, (6, 3, SIZE, SIZE)).astype(np.float32)
    l32 = ModelPack.load(source).logits(x)
    l8 = ModelPack.load(tmp_path / "int8").logits(x)
    assert np.max(np.abs(l32 - l8)) < 0.05 * np.ptp(l32)


def model_is_quantized(path: Path | str) -> bool:
    """True when the ONNX file at `path` holds QDQ (QuantizeLinear / DequantizeLinear) nodes."""
    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    return {"QuantizeLinear", "DequantizeLinear"} <= ops
