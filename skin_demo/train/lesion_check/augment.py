"""The nuisances both classes get while fitting, and the robustness check draws for the test images.

Dermoscopy from another clinic looks like this (colour casts, black vignettes and frames, squashed aspect, low
resolution and JPEG, rotations), and a nuisance seen on one class only would become a cue.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter


def nuisance(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random mix of what changes between cameras and clinics but not whether the picture shows a lesion."""
    if rng.random() < 0.3:  # squashed or stretched copies
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        image = image.resize((max(8, round(image.width * aspect)), image.height), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:  # any rotation; the black corners look like a dermatoscope's field of view
        image = image.rotate(rng.uniform(0, 360), resample=Image.Resampling.BILINEAR, expand=rng.random() < 0.5)
    if rng.random() < 0.4:  # another framing: a zoomed-in part of the picture
        scale = math.sqrt(rng.uniform(0.5, 0.9))
        w, h = round(image.width * scale), round(image.height * scale)
        left, top = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
        image = image.crop((left, top, left + w, top + h))
    image = _colour_cast(image, rng)
    if rng.random() < 0.3:
        image = _vignette(image, rng)
    if rng.random() < 0.2:
        image = _frame(image, rng)
    if rng.random() < 0.3:  # low-resolution copies, upscaled again by whoever made them
        short = int(rng.integers(32, 100))
        factor = short / min(image.size)
        if factor < 1:
            small = image.resize((max(8, round(image.width * factor)), max(8, round(image.height * factor))))
            image = small if rng.random() < 0.5 else small.resize(image.size, Image.Resampling.BILINEAR)
    if rng.random() < 0.4:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(rng.integers(15, 80)))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def _colour_cast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.75, 1.25, size=3).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.7, 1.3))
    if rng.random() < 0.2:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return image


def _vignette(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Black outside an ellipse (soft edge): the round field of view of a contact dermatoscope."""
    w, h = image.size
    radius = rng.uniform(0.45, 0.75)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.sqrt(((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2) / (radius * 1.4142)
    mask = np.clip((1.0 - distance) / 0.08 + 0.5, 0, 1)[..., None]
    return Image.fromarray((np.asarray(image, dtype=np.float32) * mask).astype(np.uint8), "RGB")


def _frame(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark border on some sides: letterboxing, a scanner's edge, a ruler strip."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    w, h = image.size
    shade = tuple(int(v) for v in rng.integers(0, 40, size=3))
    for side in range(4):
        if rng.random() < 0.6:
            depth = rng.uniform(0.03, 0.15)
            box = [(0, 0, w, h * depth), (0, h * (1 - depth), w, h), (0, 0, w * depth, h), (w * (1 - depth), 0, w, h)]
            draw.rectangle(box[side], fill=shade)
    return image
