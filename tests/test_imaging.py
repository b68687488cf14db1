"""imaging.load_image / preprocess on ordinary, awkward and broken inputs (all generated in tmp_path)."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, features

from skin_demo.config import PreprocessConfig
from skin_demo.imaging import MAX_FILE_BYTES, ImageError, load_image, preprocess, shades_of_gray
from tests import image_files as files
from tests.conftest import REPO_ROOT


def test_plain_jpeg_from_path_bytes_and_file_object(tmp_path):
    path = files.jpeg(tmp_path / "photo.jpg", 320, 240)
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        image = load_image(source)
        assert image.mode == "RGB"
        assert image.size == (320, 240)


@pytest.mark.parametrize(
    "orientation, upright_size, red_at",
    [
        (1, (120, 60), (5, 30)),  # as stored: red on the left
        (3, (120, 60), (114, 30)),  # rotated 180: red on the right
        (6, (60, 120), (30, 5)),  # stored sideways, 90 clockwise to view: red at the top
        (8, (60, 120), (30, 114)),  # 90 counter-clockwise: red at the bottom
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, upright_size, red_at):
    path = files.exif_rotated_jpeg(tmp_path / f"rot{orientation}.jpg", orientation)
    image = load_image(path)
    assert image.size == upright_size
    r, g, b = image.getpixel(red_at)
    assert r > 150 and b < 100, f"expected red at {red_at}, got {(r, g, b)}"


def test_16bit_png_keeps_its_range_instead_of_turning_white(tmp_path):
    image = load_image(files.png_16bit(tmp_path / "deep.png"))
    pixels = np.asarray(image, dtype=np.float32)
    assert image.mode == "RGB"
    assert 20 < pixels.min() < pixels.max() < 200  # 8000..40000 of 65535 is about 31..156 of 255
    assert pixels[..., 0].tolist() == pixels[..., 2].tolist()  # still grey


def test_greyscale_becomes_three_equal_channels(tmp_path):
    pixels = np.asarray(load_image(files.greyscale_png(tmp_path / "grey.png")))
    assert pixels.shape[2] == 3
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_transparency_is_flattened_onto_white(tmp_path):
    pixels = np.asarray(load_image(files.rgba_png(tmp_path / "alpha.png")))
    assert (pixels[:, :40] == 255).all()  # the transparent half
    assert pixels[:, 40:].mean() < 240  # the opaque half keeps its colour


@pytest.mark.parametrize("transparent", [True, False])
def test_palette_png(tmp_path, transparent):
    image = load_image(files.palette_png(tmp_path / "pal.png", transparent))
    assert image.mode == "RGB" and image.size == (80, 60)


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    image = load_image(files.cmyk_jpeg(tmp_path / "cmyk.jpg"))
    r, g, b = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    assert image.mode == "RGB"
    assert r > 180 and g < 80 and b < 80, (r, g, b)  # magenta + yellow ink = red


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_uses_the_first_frame(tmp_path, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP support")
    image = load_image(files.animated(tmp_path / f"anim.{fmt.lower()}", fmt))
    r, _, b = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    assert r > 150 and b < 80, "expected the red first frame"


@pytest.mark.parametrize(
    "make, message",
    [
        (files.empty_file, r"empty \(0 bytes\)"),
        (files.not_an_image, "not an image"),
        (files.truncated_jpeg, "could not read image"),
        (files.tiny_png, "at least 32 pixels"),
        (files.bomb_png, "too large"),
        (lambda p: files.bomb_png(p, 10_000, 6_000), "limit is 50 megapixels"),
    ],
    ids=["empty", "text", "truncated", "tiny", "bomb-pillow", "bomb-ours"],
)
def test_bad_inputs_raise_image_error_with_a_clear_message(tmp_path, make, message):
    path = make(tmp_path / "bad.png")
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    text = str(info.value)
    assert "upload" in text or "photo" in text, "the message should say what to do"
    with pytest.raises(ImageError, match=message):
        load_image(path.read_bytes())


def test_too_many_bytes_is_refused_before_decoding(tmp_path):
    with pytest.raises(ImageError, match="limit is"):
        load_image(b"\xff" * (MAX_FILE_BYTES + 1))


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")


def test_draft_decoding_keeps_enough_detail(tmp_path):
    path = files.jpeg(tmp_path / "big.jpg", 3000, 2000)
    image = load_image(path, draft_size=224)
    assert 448 <= min(image.size) < 2000  # decoded at reduced scale, never below 2x the model input
    assert image.size[0] / image.size[1] == pytest.approx(1.5, rel=0.01)


def test_preprocess_shape_dtype_and_normalisation(tmp_path):
    config = PreprocessConfig(size=(32, 32), interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5))
    image = Image.new("RGB", (100, 50), (255, 0, 128))
    tensor = preprocess(image, config)
    assert tensor.shape == (3, 32, 32) and tensor.dtype == np.float32
    assert tensor[0].mean() == pytest.approx((1.0 - 0.5) / 0.25)
    assert tensor[1].mean() == pytest.approx((0.0 - 0.5) / 0.5)
    assert tensor[2].mean() == pytest.approx((128 / 255 - 0.5) / 0.5, abs=1e-6)


def test_shades_of_gray_removes_a_global_colour_cast():
    """A dermatoscope's cast multiplies each channel by a constant; after Shades of Gray the cast photo and the
    neutral one differ only by one overall brightness factor, the same for every channel."""
    rng = np.random.default_rng(0)
    neutral = rng.uniform(0.05, 0.7, (3, 40, 40)).astype(np.float32)
    cast = neutral * np.array([1.3, 0.9, 0.6], dtype=np.float32).reshape(3, 1, 1)  # stays below 1: no clipping
    ratio = shades_of_gray(cast, 6.0) / shades_of_gray(neutral, 6.0)
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-5)
    illuminants = np.mean(shades_of_gray(cast, 6.0).astype(np.float64) ** 6, axis=(1, 2)) ** (1 / 6)
    np.testing.assert_allclose(illuminants, illuminants.mean(), rtol=1e-5)


def test_shades_of_gray_keeps_pixels_in_range_and_survives_a_black_channel():
    pixels = np.zeros((3, 8, 8), dtype=np.float32)
    pixels[0] = 1.0
    pixels[1, 0, 0] = 1.0  # illuminants 1, 64 ** (-1 / 6) = 0.5 and 0 (a black channel): their mean is 0.5
    out = shades_of_gray(pixels, 6.0)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[0].max() == pytest.approx(0.5) and out[1, 0, 0] == pytest.approx(1.0) and out[2].max() == 0.0


def test_preprocess_applies_the_configured_colour_constancy():
    image = Image.fromarray(np.random.default_rng(1).integers(20, 200, (40, 40, 3), dtype=np.uint8))
    plain = PreprocessConfig(size=(32, 32), interpolation="bilinear")
    constancy = PreprocessConfig(size=(32, 32), interpolation="bilinear", color_constancy="shades_of_gray")
    expected = (shades_of_gray(preprocess(image, plain) * 0.5 + 0.5, 6.0) - 0.5) / 0.5
    np.testing.assert_allclose(preprocess(image, constancy), expected, atol=1e-6)


def test_preprocess_refuses_non_rgb():
    with pytest.raises(ImageError, match="RGB"):
        preprocess(Image.new("L", (64, 64)), PreprocessConfig(size=(32, 32)))


def jpeg_claiming(path, width: int, height: int):
    """A real 64x64 JPEG whose frame header (SOF0) is rewritten to claim width x height pixels."""
    data = bytearray(files.jpeg(path, 64, 64, seed=5).read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_jpeg_too_small_for_the_size_its_header_claims_is_refused_as_corrupt(tmp_path):
    """Issue 20: a 4 kB JPEG whose header claims 7000x7000 decoded without an error (libjpeg filled the missing
    pixels with grey) and was analysed."""
    with pytest.raises(ImageError, match=r"too small to hold the 7000x7000 pixels its JPEG header claims"):
        load_image(jpeg_claiming(tmp_path / "liar.jpg", 7000, 7000), draft_size=128)
    # Real JPEGs pass, flat ones included (the least data a JPEG can hold per pixel).
    flat = files.save(Image.new("RGB", (4000, 3000), (180, 120, 100)), tmp_path / "flat.jpg", quality=50)
    assert load_image(flat, draft_size=128).size == (500, 375)  # decoded at 1/8 scale
    grey = files.save(Image.new("L", (2000, 2000), 128), tmp_path / "grey.jpg", optimize=True)
    assert load_image(grey).size == (2000, 2000)


def test_pillow_warnings_about_odd_exif_do_not_reach_the_log(tmp_path):
    """Issue 20: "Corrupt EXIF data" / "Truncated File Read" warnings escaped imaging's warning filters (one log entry
    per photo). A fresh process, as the server runs, with Python's default warning display."""
    photo = files.jpeg(tmp_path / "photo.jpg", 64, 64).read_bytes()
    exif = b"Exif\0\0" + b"II*\0" + (8).to_bytes(4, "little") + (5).to_bytes(2, "little")  # 5 tags announced, none
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    bad = tmp_path / "bad_exif.jpg"
    bad.write_bytes(photo[:2] + segment + photo[2:])
    code = f"from skin_demo.imaging import load_image; print(load_image({str(bad)!r}, draft_size=32).size)"
    done = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO_ROOT)  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "(64, 64)", done.stderr
    assert done.stderr == "", done.stderr
