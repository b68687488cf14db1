"""One source of truth for preprocessing: imaging.preprocess (numpy, serving) equals training's eval transform."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from PIL import Image

from skin_demo.config import PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.train.model import preprocess_config
from skin_demo.train.transforms import eval_transform

LITE0 = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
CONFIGS = [
    preprocess_config(LITE0, 144, 1.0),
    PreprocessConfig(size=(224, 224), crop_pct=0.875, interpolation="bicubic",
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    PreprocessConfig(size=(96, 96), crop_pct=0.9, interpolation="bilinear"),
    preprocess_config(LITE0, 144, 1.0, color_constancy="shades_of_gray"),
]


def _assert_same(image: Image.Image, config: PreprocessConfig) -> None:
    ours = preprocess(image, config)
    theirs = eval_transform(config)(image).numpy()
    assert ours.shape == theirs.shape == (3, *config.size)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.size[0]}-{c.crop_pct}-{c.interpolation}-{c.color_constancy}")
@pytest.mark.parametrize("size", [(200, 150), (150, 200), (640, 480), (144, 144), (97, 301)])
def test_preprocess_matches_training_eval_transform_on_generated_images(config, size):
    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    _assert_same(image, config)


@pytest.mark.data
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1], CONFIGS[3]], ids=["bundled", "imagenet-224", "sog"])
def test_preprocess_matches_training_eval_transform_on_real_images(ham10000_dir, config):
    paths = sorted((ham10000_dir / "images").glob("*.jpg"))[:: 1000]
    assert len(paths) >= 10
    for path in paths:
        _assert_same(load_image(path), config)
