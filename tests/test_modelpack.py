"""ModelPack: loading real (tiny) ONNX packages, and refusing each kind of broken package with a useful message."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from skin_demo.config import CONFIG_FILE, MODEL_FILE, ONNX_METADATA_KEY, PackageConfig
from skin_demo.modelpack import MAX_CONFIG_DEPTH, ModelPack, PackageError, session_options, softmax
from tests.tiny_packages import make_package, tiny_config, tiny_logits

LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def random_batch(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_valid_package_loads_and_computes_the_graph(tmp_path):
    pack = ModelPack.load(make_package(tmp_path / "pkg"))
    assert pack.config.labels == LABELS
    assert pack.source == f"local {tmp_path / 'pkg'}"
    assert pack.readme is not None
    batch = random_batch(3)  # N is dynamic: 3 works as well as the 1 and 2 used at load
    logits = pack.logits(batch)
    assert logits.shape == (3, 7) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, tiny_logits(batch, 7), rtol=1e-5, atol=1e-5)
    probabilities = pack.probabilities(batch)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probabilities, softmax(logits), rtol=1e-6)


def test_temperature_divides_the_logits(tmp_path):
    pack = ModelPack.load(make_package(tmp_path / "pkg", config_overrides={"temperature": 2.5}))
    batch = random_batch(2)
    np.testing.assert_allclose(pack.probabilities(batch), softmax(pack.logits(batch) / 2.5), rtol=1e-6)


def test_extra_outputs_named_in_config_are_allowed(tmp_path):
    pack = ModelPack.load(make_package(tmp_path / "pkg", extra_outputs=("cam",)))
    outputs = pack.outputs(random_batch(1))
    assert set(outputs) == {"logits", "cam"}
    assert pack.logits(random_batch(1)).shape == (1, 7)


def test_packages_from_before_outputs_name_their_extra_outputs_in_a_list(tmp_path):
    folder = make_package(tmp_path / "pkg", extra_outputs=("cam",), config_overrides={"extra_outputs": ["cam"]})
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config["outputs"]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    model = onnx.load(str(folder / MODEL_FILE))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {ONNX_METADATA_KEY: json.dumps(config)})
    onnx.save(model, str(folder / MODEL_FILE))
    pack = ModelPack.load(folder)
    assert pack.config.outputs == {"cam": ""}
    assert set(pack.outputs(random_batch(1))) == {"logits", "cam"}


def test_logits_refuses_a_batch_of_the_wrong_shape(tmp_path):
    pack = ModelPack.load(make_package(tmp_path / "pkg"))
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        pack.logits(random_batch(1, size=64))
    with pytest.raises(ValueError, match="float32"):
        pack.logits(random_batch(1).astype(np.float64))


def test_thread_settings_are_deliberate():
    opts = session_options(3)
    assert opts.intra_op_num_threads == 3
    assert opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _remove(name):
    def breaker(folder):
        (folder / name).unlink()

    return breaker


def _write_config(text):
    def breaker(folder):
        (folder / "config.json").write_text(text)

    return breaker


BROKEN = {
    # name: (make_package kwargs, a breaker run after, file the message must name, phrase it must contain)
    "missing model.onnx": ({}, _remove("model.onnx"), "model.onnx", "missing"),
    "missing config.json": ({}, _remove("config.json"), "config.json", "missing"),
    "config.json not JSON": ({}, _write_config("{not json"), "config.json", "not valid JSON"),
    "config.json not an object": ({}, _write_config("[1, 2]"), "config.json", "not a JSON object"),
    "no embedded config": ({"metadata": None}, None, "model.onnx", "skin_demo.config"),
    "embedded config not JSON": ({"metadata": "{oops"}, None, "model.onnx", "not valid JSON"),
    "unknown format_version everywhere": (
        {"config_overrides": {"format_version": 3}}, None, "config.json", "unknown format_version 3"
    ),
    "unknown format_version embedded": (
        {"metadata": {**tiny_config("lesion_type", LABELS, ("mel",)), "format_version": 99}},
        None, "model.onnx", "format_version 99",
    ),
    "embedded config differs": (
        {"metadata": tiny_config("lesion_type", LABELS, ("akiec", "bcc", "mel"), temperature=1.7)},
        None, "model.onnx", "differs from",
    ),
    "labels not unique": ({"labels": ("nv", "nv", "mel"), "malignant_labels": ("mel",)}, None, "config.json",
                          "not unique"),
    "input named wrongly": ({"input_name": "pixel_values"}, None, "model.onnx", "named 'image'"),
    "input size differs from config": ({"input_shape": ["N", 3, 64, 64]}, None, "model.onnx", "[N, 3, 32, 32]"),
    "input not square as configured": ({"input_shape": ["N", 3, 32, 48]}, None, "model.onnx", "expected [N, 3, 32, 32]"),
    "fixed batch size": ({"input_shape": [1, 3, 32, 32]}, None, "model.onnx", "batch"),
    "input not float32": ({"input_type": TensorProto.DOUBLE}, None, "model.onnx", "float32"),
    "K != len(labels)": ({"num_outputs": 5}, None, "model.onnx", "expected [N, 7]"),
    "first output not logits": ({"output_name": "scores"}, None, "model.onnx", "named 'logits'"),
    "undeclared extra output": (
        {"extra_outputs": ("cam",), "config_overrides": {"outputs": {}}}, None, "model.onnx", "extra outputs"
    ),
    "truncated model.onnx": ({"truncate": 200}, None, "model.onnx", "truncated"),
    "model.onnx not ONNX": ({}, lambda f: (f / "model.onnx").write_bytes(b"\0" * 50), "model.onnx", "corrupt"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_package_is_refused_naming_file_and_problem(tmp_path, case):
    kwargs, breaker, file_name, phrase = BROKEN[case]
    folder = make_package(tmp_path / "pkg", **kwargs)
    if breaker:
        breaker(folder)
    with pytest.raises(PackageError) as info:
        ModelPack.load(folder)
    message = str(info.value)
    assert str(folder / file_name) in message, message
    assert phrase in message, message


def test_missing_folder(tmp_path):
    with pytest.raises(PackageError, match="folder not found"):
        ModelPack.load(tmp_path / "nowhere")


def test_config_json_and_embedded_config_are_the_same_document(tmp_path):
    folder = make_package(tmp_path / "pkg", config_overrides={"temperature": 1.7})
    pack = ModelPack.load(folder)
    metadata = {p.key: p.value for p in onnx.load(str(folder / MODEL_FILE)).metadata_props}
    embedded = json.loads(metadata[ONNX_METADATA_KEY])
    on_disk = json.loads((folder / CONFIG_FILE).read_text())
    assert embedded == on_disk
    assert PackageConfig.from_dict(embedded) == pack.config
    assert pack.config.temperature == 1.7  # what serving uses is what both copies say


def nested(depth: int) -> dict:
    """A JSON object nesting `depth` levels of objects below it."""
    value: dict = {"balanced_accuracy": 0.5}
    for _ in range(depth):
        value = {"deeper": value}
    return value


def test_a_config_nested_too_deep_for_the_api_is_refused_at_load(tmp_path):
    """Issue 20, item 4: a package whose metrics nested 900 levels passed validation, then broke every /predict (the
    response encoder stops at 255 levels) with a traceback per request. It is now refused when loaded."""
    folder = make_package(tmp_path / "deep", config_overrides={"metrics": nested(900)})
    config = folder / CONFIG_FILE  # written indented: 1.6 MB, over the size limit; the attack's was compact
    config.write_text(json.dumps(json.loads(config.read_text()), separators=(",", ":")))
    deeper = rf"config\.json: config nests objects or lists more than {MAX_CONFIG_DEPTH}"
    with pytest.raises(PackageError, match=deeper):
        ModelPack.load(folder)
    real_depth = make_package(tmp_path / "ok", config_overrides={"metrics": nested(MAX_CONFIG_DEPTH - 3)})
    assert ModelPack.load(real_depth).config.metrics
