"""The class-activation map in the exported graph equals numpy's CAM of the same feature map and head weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from skin_demo.config import ATTENTION_OUTPUT, PackageConfig, PreprocessConfig
from skin_demo.taxonomy import LESION_CODES
from skin_demo.train.attention_export import AttentionExportError, with_attention_output
from skin_demo.train.export import to_onnx
from skin_demo.train.model import MultiTaskNet
from skin_demo.train.task_nets import FlipAveraged, LogitAdjusted, SingleTaskNet

SIZE = 64


@pytest.fixture(scope="module")
def single() -> SingleTaskNet:
    torch.manual_seed(0)
    net = MultiTaskNet("test_efficientnet", {"lesion_type": 7}, pretrained=False).eval()
    return SingleTaskNet(net, "lesion_type").eval()


def _config() -> PackageConfig:
    return PackageConfig(task="lesion_type", labels=LESION_CODES, malignant_labels=("akiec", "bcc", "mel"),
                         preprocess=PreprocessConfig(size=(SIZE, SIZE)), architecture="test_efficientnet")


def _run(module: torch.nn.Module, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proto = with_attention_output(to_onnx(module, _config()))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, cam = session.run(["logits", ATTENTION_OUTPUT], {"image": images})
    return logits, cam


def _numpy_cam(feature_map: torch.Tensor, head: torch.nn.Linear) -> np.ndarray:
    return np.einsum("nchw,kc->nkhw", feature_map.numpy(), head.weight.detach().numpy())


def test_the_exported_map_is_numpy_cam_of_the_last_feature_map_and_the_head(single):
    images = np.random.default_rng(0).random((3, 3, SIZE, SIZE), dtype=np.float32)
    logits, cam = _run(single, images)
    with torch.no_grad():
        feature_map = single.feature_map(torch.from_numpy(images))
        expected_logits = single(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(cam, _numpy_cam(feature_map, single.head), atol=1e-4)
    assert cam.shape == (3, len(LESION_CODES), *feature_map.shape[2:])
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    # Pooling the map gives the logits back, less the bias: the map is where each logit came from.
    np.testing.assert_allclose(cam.mean(axis=(2, 3)) + single.head.bias.detach().numpy(), logits, atol=1e-4)


def test_with_flip_tta_the_map_is_the_mean_of_the_image_s_and_the_mirrored_back_mirror_image_s(single):
    images = np.random.default_rng(1).random((2, 3, SIZE, SIZE), dtype=np.float32)
    logits, cam = _run(LogitAdjusted(FlipAveraged(single), torch.arange(7.0) / 10), images)
    with torch.no_grad():
        direct = _numpy_cam(single.feature_map(torch.from_numpy(images)), single.head)
        mirrored = _numpy_cam(single.feature_map(torch.from_numpy(images[..., ::-1].copy())), single.head)
        both_logits = (single(torch.from_numpy(images)) + single(torch.from_numpy(images[..., ::-1].copy()))) / 2
    np.testing.assert_allclose(cam, (direct + mirrored[..., ::-1]) / 2, atol=1e-4)
    np.testing.assert_allclose(logits, both_logits.numpy() - np.arange(7.0) / 10, atol=1e-4)


def test_a_graph_without_one_pooled_linear_classifier_is_refused():
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Flatten", ["image"], ["logits"])], "no_pool",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 3, 4, 4])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 48])])
    with pytest.raises(AttentionExportError, match="exactly one"):
        with_attention_output(onnx.helper.make_model(graph))


def test_add_attention_gives_a_finished_package_the_map_and_leaves_its_logits(single, tmp_path):
    from skin_demo.modelpack import ModelPack
    from skin_demo.train.attention_cli import add_attention
    from skin_demo.train.package_files import write_package

    before = write_package(tmp_path / "before", to_onnx(single, _config()), _config(), card="# card\n")
    after = add_attention(before, tmp_path / "after")
    batch = np.random.default_rng(2).random((2, 3, SIZE, SIZE), dtype=np.float32)
    assert after.has_attention and ATTENTION_OUTPUT in after.config.outputs
    np.testing.assert_array_equal(after.logits(batch), ModelPack.load(before).logits(batch))
    assert "Output `cam`" in (tmp_path / "after" / "README.md").read_text()
    with pytest.raises(AttentionExportError, match="already has"):
        add_attention(tmp_path / "after")
