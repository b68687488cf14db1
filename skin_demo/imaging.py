"""Decode untrusted images safely, and turn an image into a model input tensor.

`load_image` is the only way an image enters the system (the app, training and evaluation all use it), and
`preprocess` is the one preprocessing function; training's eval transform must match it (tests/test_parity.py).
numpy and Pillow only.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skin_demo.config import PreprocessConfig

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 50_000_000  # larger than any phone camera's output; anything bigger is refused before decoding
MIN_SIDE = 32
# preprocess scales the SHORTER side to the model's size, so a long thin strip is upscaled along its length: a
# 25 kB PNG of 40x60000 pixels becomes 256x384000 (300 MB, seconds of CPU), and 32x1500000 would need gigabytes.
# No photo of one lesion is that shape (phone panoramas stay under about 10:1), so such images are refused.
MAX_ASPECT_RATIO = 10

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class ImageError(ValueError):
    """An input the app cannot analyse; the message says what was wrong and what to do."""


def load_image(source: ImageSource, *, draft_size: int | None = None) -> Image.Image:
    """Decode `source` into an upright 8-bit RGB image.

    Applies the EXIF orientation, takes the first frame of animated files, flattens transparency onto white and
    scales 16-bit and float images to 8 bits. `draft_size` lets JPEG decoding skip detail that a resize to that
    many pixels would discard anyway (a large speed-up for phone photos); the result keeps its shorter side
    >= 2 * draft_size so the final resize still works from real detail.

    Raises ImageError for empty, corrupt, non-image, too large, too small or too elongated inputs.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    try:
        _check_size(image.size)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (2 * draft_size, 2 * draft_size))
        with warnings.catch_warnings():
            # Pillow warns about odd EXIF/ICC data; the image itself is fine, and warnings would only fill logs.
            warnings.simplefilter("ignore")
            image.load()
            image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, Image.DecompressionBombError) as exc:
        raise ImageError(f"could not read image: {_reason(exc)} (upload a JPEG or PNG photo)") from None
    _check_size(rgb.size)
    return rgb


def preprocess(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """Return the float32 array [3, H, W] that the model expects for an RGB `image`.

    Mirrors timm's eval transform for a square size: resize the shorter side to floor(size / crop_pct) with
    the configured interpolation, centre-crop to size, scale to [0, 1], normalise with mean and std.
    """
    if image.mode != "RGB":
        raise ImageError(f"preprocess needs an RGB image, got mode {image.mode!r}; use load_image first")
    height, width = config.size
    if height != width:
        raise ImageError(f"only square model inputs are supported, config asks for {height}x{width}")
    target_short = math.floor(height / config.crop_pct)
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    if short != target_short:
        new_long = int(target_short * long / short)
        new_size = (target_short, new_long) if w <= h else (new_long, target_short)
        image = image.resize(new_size, _RESAMPLE[config.interpolation])
    w, h = image.size
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    image = image.crop((left, top, left + width, top + height))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageError("the file is empty (0 bytes); upload a JPEG or PNG photo")
        if len(source) > MAX_FILE_BYTES:
            raise ImageError(_too_big_bytes(len(source)))
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            n_bytes = path.stat().st_size
        except OSError:
            raise ImageError("could not read image: the file does not exist or cannot be opened") from None
        if n_bytes == 0:
            raise ImageError("the file is empty (0 bytes); upload a JPEG or PNG photo")
        if n_bytes > MAX_FILE_BYTES:
            raise ImageError(_too_big_bytes(n_bytes))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except UnidentifiedImageError:
        raise ImageError("this file is not an image Pillow can read; upload a JPEG or PNG photo") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(_too_many_pixels()) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"could not read image: {_reason(exc)} (upload a JPEG or PNG photo)") from None


def _check_size(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(_too_many_pixels(width, height))
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"the image is only {width}x{height} pixels; upload a photo at least {MIN_SIDE} pixels on each side"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"the image is {width}x{height} pixels, longer than {MAX_ASPECT_RATIO}:1; crop it to the lesion and "
            "upload that"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the surprises of a bare convert("RGB")."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # convert("RGB") clips 16-bit values at 255 (a white image); scale the real range down instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(values.max()), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode != "RGB":
        return image.convert("RGB")
    return image


def _too_big_bytes(n_bytes: int) -> str:
    return (
        f"the file is {n_bytes / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB "
        "(upload a smaller JPEG or PNG)"
    )


def _too_many_pixels(width: int | None = None, height: int | None = None) -> str:
    size = f" ({width}x{height})" if width else ""
    return (
        f"the image is too large{size}; the limit is {MAX_PIXELS / 1e6:.0f} megapixels "
        "(resize it or upload a normal photo)"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
