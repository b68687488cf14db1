"""`python -m skin_demo.train quantize`: static int8 (QDQ, per-channel) on a tiny but real convolutional package."""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from skin_demo.config import ONNX_METADATA_KEY
from skin_demo.imaging import load_image, preprocess
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.train import quantize
from skin_demo.train.data import read_ham10000, read_split
from skin_demo.train.quantize import QuantizeError, calibration_samples, model_is_quantized, quantize_package
from skin_demo.train.report import read_report
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.tiny_packages import tiny_config

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
    text = json.dumps(config)
    helper.set_model_props(model, {ONNX_METADATA_KEY: text})
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    (folder / "config.json").write_text(text)
    return folder


@pytest.fixture
def fake_data(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    return ham, write_fake_split(ham, tmp_path / "split.csv")


def _cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    quantize.register(parser.add_subparsers(dest="command", required=True))
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


def test_calibration_uses_the_training_split_and_every_class(fake_data):
    ham, split = fake_data
    samples = read_ham10000(ham)
    assignment = read_split(split)
    chosen = calibration_samples(samples, assignment, 7)
    assert len(chosen) == 7 and all(assignment[s.image_id] == "train" for s in chosen)
    assert len({s.dx for s in chosen}) == 7  # one of each class before a second of any
    assert chosen == calibration_samples(samples, assignment, 7)  # seeded
    assert len(calibration_samples(samples, assignment, 10_000)) == sum(v == "train" for v in assignment.values())


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


def test_cli_quantize_and_evaluate(tmp_path, fake_data, capsys):
    ham, split = fake_data
    source = make_conv_package(tmp_path / "fp32", task="malignancy")
    out = tmp_path / "int8"
    assert _cli(source, "--data", ham, "--split", split, "--out", out, "--calibration-images", "10",
                "--evaluate", "--batch-size", "4") == 0
    printed = capsys.readouterr().out
    assert "calibrating on 10 training-split images" in printed
    assert "fp32 vs int8 on" in printed and "balanced_accuracy" in printed and "sensitivity" in printed
    assert "same predicted label for" in printed
    pack = ModelPack.load(out)
    assert pack.config.metrics["split"].endswith("split.csv:test")
    assert "sensitivity" in pack.config.metrics
    comparison = pack.config.provenance["quantization"]["fp32_vs_int8"]
    assert comparison["n"] == 14 and 0.0 <= comparison["same_label"] <= 1.0
    report = read_report(out / "eval")
    assert report.n == 14 and report.binary.threshold == 0.4
    # The source package is untouched.
    assert ModelPack.load(source).config.metrics == {"split": "tests:synthetic", "balanced_accuracy": 0.5,
                                                     "accuracy": 0.5}


def test_cli_evaluate_with_limit_does_not_record_metrics(tmp_path, fake_data, capsys):
    ham, split = fake_data
    source = make_conv_package(tmp_path / "fp32")
    out = tmp_path / "int8"
    assert _cli(source, "--data", ham, "--split", split, "--out", out, "--calibration-images", "7",
                "--evaluate", "--limit", "5") == 0
    assert "metrics are left empty" in capsys.readouterr().out
    assert ModelPack.load(out).config.metrics == {} and not (out / "eval").exists()
    assert _cli(tmp_path / "missing", "--data", ham, "--split", split, "--out", out) == 1
