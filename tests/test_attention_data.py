"""Where the model looked, on real lesions: pasted into one corner of a plain skin-coloured canvas, a HAM10000 test
lesion should hold the attention map's maximum (issue 18: at least 80 % of 40 such pictures)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skin_demo import REPO_ROOT
from skin_demo.attention import AttentionMap
from skin_demo.hub import load_models
from skin_demo.predictor import Predictor
from skin_demo.settings import Settings
from skin_demo.train import sources

PICTURES = 40
MIN_RATE = 0.80
SKIN = (224, 172, 150)
MODELS = REPO_ROOT / "models"


def _one_image_per_lesion(ham10000_dir, n: int):
    table = sources.label_table(ham10000_dir, MODELS / "ham10000_split.csv", None, None)
    picked, lesions = [], set()
    for sample in sorted(sources.samples(table, "test"), key=lambda s: s.image_id):
        if sample.lesion_id not in lesions:
            lesions.add(sample.lesion_id)
            picked.append(sample)
    rng = np.random.default_rng(0)
    return [picked[i] for i in rng.choice(len(picked), size=n, replace=False)]


def _peak_quadrant(attention: AttentionMap, width: int, height: int) -> tuple[int, int]:
    """The canvas quadrant (column, row) holding the centre of the map's strongest cell."""
    grid = np.asarray(attention.grid)
    row, column = np.unravel_index(np.argmax(grid), grid.shape)
    left, top, right, bottom = attention.box
    x = left + (column + 0.5) * (right - left) / grid.shape[1]
    y = top + (row + 0.5) * (bottom - top) / grid.shape[0]
    return int(x >= width), int(y >= height)


@pytest.mark.data
def test_the_map_s_maximum_lies_in_the_quadrant_of_a_pasted_lesion(ham10000_dir):
    predictor = Predictor.from_models(load_models(Settings(models_dir=MODELS, threads=1)))
    hits = {"malignancy": 0, "lesion_type": 0}
    for i, sample in enumerate(_one_image_per_lesion(ham10000_dir, PICTURES)):
        lesion = Image.open(sample.path).convert("RGB")
        width, height = lesion.size  # the lesion image becomes a quarter of the canvas
        canvas = Image.new("RGB", (2 * width, 2 * height), SKIN)
        corner = (i % 2, (i // 2) % 2)
        canvas.paste(lesion, (corner[0] * width, corner[1] * height))
        prediction = predictor.predict(canvas)
        assert set(prediction.attention) == set(hits)
        for shown, attention in prediction.attention.items():
            hits[shown] += _peak_quadrant(attention, width, height) == corner
    rates = {shown: n / PICTURES for shown, n in hits.items()}
    print(f"map maximum in the pasted lesion's quadrant, {PICTURES} HAM10000 test lesions: {rates}")
    assert all(rate >= MIN_RATE for rate in rates.values()), rates
