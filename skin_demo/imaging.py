"""Decode untrusted images within a memory and time budget, and turn an image into a model input tensor.

`load_image` is the only way an image enters the system (the app, training and evaluation all use it), and
`preprocess` is the one preprocessing function; training's eval transform must match it (tests/test_parity.py).
numpy and Pillow only.

The budget: a file of at most 25 MB can still describe 50 megapixels of one flat colour (a 190 kB PNG decodes to
196 MB of RGBA), so every step after the unavoidable decode works on a reduced copy. JPEGs decode at reduced
size (`draft`); other formats over MAX_WORKING_PIXELS are reduced right after decoding, before orientation or
colour conversion make further copies; 16-bit and float images are scaled in float32. One large decode runs at a
time, so a flood of such files cannot stack their peaks or starve ordinary requests of the CPU
(benchmarks/bench_decode.py measures both).
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from skin_demo.config import PreprocessConfig

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_PIXELS = 50_000_000  # larger than any phone camera's output; anything bigger is refused before decoding
MIN_SIDE = 32
# preprocess scales the SHORTER side to the model's size, so a long thin strip is upscaled along its length: a
# 25 kB PNG of 40x60000 pixels becomes 256x384000 (300 MB, seconds of CPU), and 32x1500000 would need gigabytes.
# No photo of one lesion is that shape (phone panoramas stay under about 10:1), so such images are refused.
MAX_ASPECT_RATIO = 10
# Photo formats only: Pillow opens some forty formats, some through external programs (EPS: Ghostscript) or
# with decoders whose memory use nobody here has measured.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "PPM")
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: the multi-picture JPEG some phone cameras write, opened by the JPEG plugin
# Decodes that need several bytes per pixel whatever the draft get lower pixel limits, so they fit the budget too:
# WebP (libwebp's buffers, then Pillow's copy: about 15 bytes a pixel at peak for RGBA) and progressive JPEG
# (libjpeg keeps every DCT coefficient of the full-size image: 2 bytes per sample, at any draft scale).
MAX_PIXELS_BY_KIND = {"WebP": 16_000_000, "progressive JPEG": 25_000_000}
# A decoded image larger than this is reduced right away (a 12 MP phone photo: 36 MB as RGB).
MAX_WORKING_PIXELS = 12_000_000
# Decodes that hold more than this many full-size pixels take the one large-decode slot.
LARGE_DECODE_PIXELS = 4_000_000
LARGE_DECODE_WAIT_S = 30.0
REDUCE_BAND_PIXELS = 2_000_000  # reduction works on bands of about this many pixels (8 MB of RGBA)

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_HIGH_BIT_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_large_decode = threading.BoundedSemaphore(1)

# Pillow warns about odd EXIF, ICC or MPO data in files that decode fine ("Corrupt EXIF data", "Truncated File
# Read"): in a server that is one log entry per visitor's photo. One process-wide filter, set once, because
# warnings.catch_warnings swaps the global filter list and is not thread-safe: concurrent requests undid each
# other's filters. (Decompression bombs need no warning: _check_size refuses them below Pillow's own threshold.)
warnings.filterwarnings("ignore", module=r"PIL(\.|$)")


# load_image records in the image's `info` the size of the photo as uploaded (upright), which a reduced decode no
# longer has: attention maps are placed in those coordinates (`source_size`).
SOURCE_SIZE_KEY = "skin_demo.source_size"
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def source_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the photo as uploaded and turned upright, for an image from load_image (else its size)."""
    return image.info.get(SOURCE_SIZE_KEY, image.size)


class ImageError(ValueError):
    """An input the app cannot analyse; the message says what was wrong and what to do."""


def load_image(source: ImageSource, *, draft_size: int | None = None) -> Image.Image:
    """Decode `source` into an upright 8-bit RGB image.

    Applies the EXIF orientation, takes the first frame of animated files, flattens transparency onto white and
    scales 16-bit and float images to 8 bits. `draft_size` (the shorter side preprocess will resize to) lets
    decoding skip detail that resize would discard anyway: JPEGs decode at reduced scale, and images of other
    formats over MAX_WORKING_PIXELS are reduced right after decoding, both keeping the shorter side >=
    2 * draft_size so the final resize still works from real detail. Whatever draft_size, the result has at most
    MAX_WORKING_PIXELS pixels.

    Raises ImageError for empty, corrupt, non-image, too large, too small or too elongated inputs, and when the
    server is too busy decoding other large images to take this one within LARGE_DECODE_WAIT_S.
    """
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    try:
        kind = _kind(image)
        _check_size(image.size, MAX_PIXELS_BY_KIND.get(kind, MAX_PIXELS), kind)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        full_size_pixels = image.width * image.height
        stored_size = image.size
        if image.format in JPEG_FORMATS:
            _check_jpeg_holds(image)
            _draft(image, draft_size)
        if kind != "progressive JPEG":  # a baseline JPEG holds only the pixels it decodes at (after the draft)
            full_size_pixels = image.width * image.height
        image, orientation = _decode_reduced(image, draft_size, large=full_size_pixels > LARGE_DECODE_PIXELS)
        image = _upright(image, orientation)
        rgb = _to_rgb(image)
        rgb.info[SOURCE_SIZE_KEY] = stored_size[::-1] if orientation in TRANSPOSING_ORIENTATIONS else stored_size
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, TypeError, EOFError, IndexError, Image.DecompressionBombError) as exc:
        raise ImageError(f"could not read image: {_reason(exc)} (upload a JPEG or PNG photo)") from None
    _check_size(rgb.size)
    return rgb


def preprocess(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """Return the float32 array [3, H, W] that the model expects for an RGB `image`.

    Mirrors timm's eval transform for a square size: resize the shorter side to `config.resize_shorter_side`
    (floor(size / crop_pct)) with the configured interpolation, centre-crop to size, scale to [0, 1], apply the
    configured colour constancy, normalise with mean and std.
    """
    if image.mode != "RGB":
        raise ImageError(f"preprocess needs an RGB image, got mode {image.mode!r}; use load_image first")
    height, width = config.size
    if height != width:
        raise ImageError(f"only square model inputs are supported, config asks for {height}x{width}")
    resized, box = crop_geometry(image.size, config)
    if resized != image.size:
        image = image.resize(resized, _RESAMPLE[config.interpolation])
    image = image.crop(box)
    pixels = (np.asarray(image, dtype=np.float32) / np.float32(255.0)).transpose(2, 0, 1)
    if config.color_constancy == "shades_of_gray":
        pixels = shades_of_gray(pixels, config.color_constancy_power)
    mean = np.asarray(config.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(config.std, dtype=np.float32).reshape(3, 1, 1)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised, dtype=np.float32)


def crop_geometry(size: tuple[int, int], config: PreprocessConfig) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Where `preprocess` takes the model input from an image of `size` (width, height): the size it resizes to
    (shorter side `config.resize_shorter_side`, aspect kept) and the centred square it crops from that,
    (left, top, right, bottom). The one statement of that geometry; static/preprocess.js is its twin."""
    height, width = config.size
    target_short = config.resize_shorter_side
    w, h = size
    short, long = (w, h) if w <= h else (h, w)
    if short != target_short:
        new_long = int(target_short * long / short)
        w, h = (target_short, new_long) if w <= h else (new_long, target_short)
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return (w, h), (left, top, left + width, top + height)


def shades_of_gray(pixels: np.ndarray, power: float) -> np.ndarray:
    """Shades of Gray colour constancy of float32 [3, H, W] pixels in [0, 1], returned the same way.

    Each channel's illuminant is its Minkowski p-mean; each channel is scaled so that all three illuminants
    become their mean, then clipped to [0, 1]. The illuminants are computed in float64 and the gains rounded to
    float32, so the browser's implementation (float64 JavaScript numbers) gets the same gains.
    """
    illuminant = np.mean(pixels.astype(np.float64) ** power, axis=(1, 2)) ** (1.0 / power)
    gains = (illuminant.mean() / np.maximum(illuminant, 1e-6)).astype(np.float32)
    return np.clip(pixels * gains.reshape(3, 1, 1), np.float32(0.0), np.float32(1.0))


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
        return Image.open(source, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(
            "this file is not an image this app can read; upload a JPEG or PNG photo (WebP, GIF, TIFF, BMP work too)"
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(_too_many_pixels()) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"could not read image: {_reason(exc)} (upload a JPEG or PNG photo)") from None


def _check_jpeg_holds(image: Image.Image) -> None:
    """Refuse a JPEG too small to hold the pixels its header claims (a 4 kB file saying 7000x7000).

    libjpeg decodes such a file without an error, filling what is missing with grey. Huffman coding, which every
    camera and browser uses, spends at least one bit on each 8x8 block of the first component (its DC code), so a
    real JPEG has at least blocks / 8 bytes. (Arithmetic-coded JPEGs could go below that; nothing writes them.)"""
    if image.fp is None:  # decoded already (a PIL image passed in): nothing left to check
        return
    blocks = math.ceil(image.width / 8) * math.ceil(image.height / 8)
    position = image.fp.tell()
    n_bytes = image.fp.seek(0, io.SEEK_END)
    image.fp.seek(position)
    if n_bytes * 8 < blocks:
        raise ImageError(
            f"the file is {n_bytes} bytes, too small to hold the {image.width}x{image.height} pixels its JPEG header "
            "claims: it is truncated or corrupt (upload the original photo)"
        )


def _draft(image: Image.Image, draft_size: int | None) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale: as far as keeps the shorter side >= 2 * draft_size, and at
    least as far as MAX_WORKING_PIXELS needs."""
    width, height = image.size
    budget = math.ceil(math.sqrt(width * height / MAX_WORKING_PIXELS))
    if not draft_size and budget == 1:
        return
    wanted = (2 * draft_size, 2 * draft_size) if draft_size else (width, height)
    image.draft("RGB", (min(wanted[0], math.ceil(width / budget)), min(wanted[1], math.ceil(height / budget))))


def _reduction_factor(size: tuple[int, int], draft_size: int | None) -> int:
    """How many times smaller a decoded image of `size` is made at once: 1 up to MAX_WORKING_PIXELS (ordinary
    photos are used as decoded), else as far as keeps the shorter side >= 2 * draft_size and at least as far as
    MAX_WORKING_PIXELS needs."""
    width, height = size
    if width * height <= MAX_WORKING_PIXELS:
        return 1
    factor = min(width, height) // (2 * draft_size) if draft_size else 1
    return max(1, factor, math.ceil(math.sqrt(width * height / MAX_WORKING_PIXELS)))


def _kind(image: Image.Image) -> str:
    if image.format in JPEG_FORMATS and image.info.get("progressive"):
        return "progressive JPEG"
    return {"WEBP": "WebP"}.get(image.format or "", image.format or "image")


def _decode_reduced(image: Image.Image, draft_size: int | None, *, large: bool) -> tuple[Image.Image, int]:
    """Decode `image` (a `large` one only while holding the one large-decode slot) and return it reduced by
    `_reduction_factor`, with its EXIF orientation; the full-size pixels are dropped before anything else."""
    if large:
        if not _large_decode.acquire(timeout=LARGE_DECODE_WAIT_S):
            raise ImageError("the server is busy decoding other very large images; try again in a minute, or "
                             "upload a smaller photo")  # fmt: skip
        try:
            image.load()
            return _reduce(image, draft_size)
        finally:
            _large_decode.release()
    image.load()
    return _reduce(image, draft_size)


def _reduce(image: Image.Image, draft_size: int | None) -> tuple[Image.Image, int]:
    # Read from the decoded file: a reduced copy keeps `info` (EXIF of JPEG, PNG, WebP) but not TIFF's tags, and
    # a PNG's eXIf chunk may come after its pixels.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    factor = _reduction_factor(image.size, draft_size)
    if factor == 1:
        return image, orientation
    width, height = image.size
    size = (math.ceil(width / factor), math.ceil(height / factor))
    if image.mode in ("1", "P", "PA"):  # palette indices must not be averaged: pick pixels
        return image.resize(size, Image.Resampling.NEAREST), orientation
    if image.mode.startswith("I;16"):  # reduce() does not take these; resize averages straight into the result
        return image.resize(size, Image.Resampling.BOX), orientation
    # reduce() averages boxes of factor x factor pixels; on the whole image at once it would first make a full
    # premultiplied copy of an RGBA one (196 MB for 7000x7000), so it works on bands of rows instead.
    reduced = Image.new(image.mode, size)
    rows = factor * max(1, REDUCE_BAND_PIXELS // (width * factor))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(top + rows, height)))
        reduced.paste(band.reduce(factor), (0, top // factor))
    return reduced, orientation


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply the EXIF `orientation` read from the file (the image may be a reduced copy without the tag)."""
    if orientation != 1:
        image.getexif()[ExifTags.Base.Orientation] = orientation
    return ImageOps.exif_transpose(image)


def _check_size(size: tuple[int, int], max_pixels: int = MAX_PIXELS, kind: str = "") -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageError(_too_many_pixels(width, height, max_pixels, kind if max_pixels != MAX_PIXELS else ""))
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
    if image.mode in _HIGH_BIT_DEPTH:
        # convert("RGB") clips 16-bit values at 255 (a white image); scale the real range down instead, in
        # float32 (exact for 16-bit values, 8 bits out) and in place.
        values = np.array(image, dtype=np.float32)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F":
            top = max(float(values.max()), 1.0)
        values *= np.float32(255.0 / top)
        values += np.float32(0.5)
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), mode="L").convert("RGB")
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


def _too_many_pixels(
    width: int | None = None, height: int | None = None, max_pixels: int = MAX_PIXELS, kind: str = ""
) -> str:
    size = f" ({width}x{height})" if width else ""
    which = f" for a {kind}" if kind else ""
    return (
        f"the image is too large{size}; the limit is {max_pixels / 1e6:.0f} megapixels{which} "
        "(resize it or upload a normal photo)"
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]
