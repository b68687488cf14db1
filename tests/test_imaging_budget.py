"""load_image within its memory and time budget: decompression bombs that are valid images (generated here).

A 190 kB PNG can hold 7000x7000 RGBA pixels (196 MB decoded). Before the budget, decoding one cost 0.9-1.3 GB of
peak RSS and seconds of CPU; now each step after the decode works on a reduced copy, and large decodes take turns.
Memory is measured in a fresh process (peak RSS, ru_maxrss), so nothing else in the test run counts.
"""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench_decode
from skin_demo import imaging
from skin_demo.imaging import MAX_WORKING_PIXELS, ImageError, load_image
from tests import image_files as files
from tests.conftest import REPO_ROOT

BUDGET_MB = 300
DRAFT = 128  # the bundled models' resize size, as the Predictor passes it

def peak_growth(tmp_path, *paths, rounds: int = 1) -> dict:
    """Decode `paths` (one thread each, `rounds` times) in a fresh process, after an ordinary decode; its peak RSS
    growth."""
    warmup = files.jpeg(tmp_path / "ordinary.jpg", 600, 450)
    command = bench_decode.child_command(list(paths), warmup, DRAFT, rounds)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


BOMBS = {
    # kind: (maker, MB of pixels the unavoidable full-size decode holds)
    "RGBA": (lambda p: files.flat_png(p, 7000, 7000, "RGBA"), 196),  # was +921 MB peak
    "16-bit grey": (lambda p: files.flat_png(p, 7000, 7000, "L", 16), 98),  # was +1,197 MB (float64 copies)
    "16-bit RGB": (lambda p: files.flat_png(p, 7000, 7000, "RGB", 16), 147),  # decodes to 8-bit RGB; was +363 MB
    "palette": (lambda p: files.flat_png(p, 7000, 7000, "P"), 49),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BOMBS))
def test_a_7000x7000_png_decodes_within_the_budget(tmp_path, kind):
    make, decoded_mb = BOMBS[kind]
    path = make(tmp_path / "bomb.png")
    assert path.stat().st_size < 400_000  # the point: a small upload
    result = peak_growth(tmp_path, path)
    # The measurement sees the decode itself (so it measures something), and nothing much beyond it.
    assert 0.8 * decoded_mb < result["peak_rss_growth_mb"] <= min(BUDGET_MB, 1.3 * decoded_mb + 20), result
    (answer,) = result["answers"]
    width, height = (int(v) for v in answer.removeprefix("decoded to ").split("x"))
    assert 2 * DRAFT <= min(width, height) < 4 * DRAFT, answer  # reduced at once, keeping 2x the model's detail


@pytest.mark.slow
def test_a_flood_of_large_decodes_stays_within_one_decodes_memory(tmp_path):
    """Four threads decoding bombs again and again (four clients flooding): they take turns, and what each freed
    goes back to the system (with Pillow's default 16 MB blocks glibc's per-thread heaps kept it: +820 MB)."""
    bomb = files.flat_png(tmp_path / "bomb.png", 7000, 7000, "RGBA")
    result = peak_growth(tmp_path, bomb, bomb, bomb, bomb, rounds=3)
    assert [a.startswith("decoded to") for a in result["answers"]] == [True] * 12, result
    assert result["peak_rss_growth_mb"] <= BUDGET_MB, result


def test_an_ordinary_image_does_not_wait_for_the_large_decode_slot(tmp_path, monkeypatch):
    big = files.flat_png(tmp_path / "big.png", 5000, 4000, "RGB")  # 20 MP: a large decode
    ordinary = files.jpeg(tmp_path / "ordinary.jpg", 600, 450)
    monkeypatch.setattr(imaging, "LARGE_DECODE_WAIT_S", 0.2)
    assert imaging._large_decode.acquire(timeout=5)  # another request is decoding a large image
    try:
        assert load_image(ordinary, draft_size=DRAFT).size == (600, 450)
        with pytest.raises(ImageError, match="busy decoding other very large images"):
            load_image(big, draft_size=DRAFT)
    finally:
        imaging._large_decode.release()
    assert min(load_image(big, draft_size=DRAFT).size) >= 2 * DRAFT  # the slot is free again


def test_the_slot_is_released_when_a_large_decode_fails(tmp_path):
    data = files.flat_png(tmp_path / "big.png", 5000, 4000, "RGB").read_bytes()
    broken = data[: len(data) // 2]  # IDAT cut short: the decode fails part way
    for _ in range(2):
        with pytest.raises(ImageError, match="could not read image"):
            load_image(broken, draft_size=DRAFT)
    assert imaging._large_decode.acquire(timeout=0)
    imaging._large_decode.release()


def test_without_a_draft_size_the_result_still_fits_the_working_limit(tmp_path):
    image = load_image(files.flat_png(tmp_path / "big.png", 5000, 4000, "RGBA"))
    assert image.width * image.height <= MAX_WORKING_PIXELS
    assert image.size == (2500, 2000)  # 20 MP needs a factor of 2 to fit 12 MP


@pytest.fixture
def small_working_limit(monkeypatch):
    """Images over 0.5 MP count as large, so that small test images go through the reduction."""
    monkeypatch.setattr(imaging, "MAX_WORKING_PIXELS", 500_000)


@pytest.mark.usefixtures("small_working_limit")
def test_reduction_keeps_transparency_colour_and_16_bit_range(tmp_path):
    """The reduced copy is flattened and scaled exactly as a full-size decode would be."""
    pixels = np.zeros((800, 1200, 4), dtype=np.uint8)
    pixels[..., :3] = (200, 40, 30)
    pixels[:, 600:, 3] = 255  # left half fully transparent (its red must not bleed into the white)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "alpha.png")
    reduced = np.asarray(load_image(tmp_path / "alpha.png", draft_size=32))
    assert reduced.shape[0] < 200  # it was reduced
    half = reduced.shape[1] // 2
    assert (reduced[:, : half - 1] == 255).all()
    np.testing.assert_allclose(reduced[:, half + 1 :].reshape(-1, 3).mean(axis=0), (200, 40, 30), atol=1)

    grey16 = np.linspace(8000, 40000, 1200 * 800).reshape(800, 1200).astype(np.uint16)
    Image.fromarray(grey16, "I;16").save(tmp_path / "deep.png")
    deep = np.asarray(load_image(tmp_path / "deep.png", draft_size=32), dtype=np.float32)
    assert deep.shape[0] < 200
    assert 28 < deep.min() < 40 and 150 < deep.max() < 160  # 8000..40000 of 65535 = 31..156 of 255


@pytest.mark.usefixtures("small_working_limit")
@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_exif_orientation_survives_the_reduction(tmp_path, fmt):
    """Orientation 6 (turn 90 clockwise to view): a wide red|blue file becomes tall with red on top."""
    stored = files.split_colour_image(1500, 750)
    exif = Image.Exif()
    exif[files.EXIF_ORIENTATION] = 6
    path = tmp_path / f"turned.{fmt.lower()}"
    stored.save(path, format=fmt, exif=exif.tobytes())
    image = load_image(path, draft_size=32)
    assert image.height > image.width and image.height < 750  # upright and reduced
    r, _, b = image.getpixel((image.width // 2, 5))
    assert r > 150 and b < 100, (r, b)


def test_an_ordinary_png_is_used_as_decoded_and_a_large_one_reduced(tmp_path):
    ordinary = files.save(files.lesion_photo(1200, 900), tmp_path / "photo.png")
    assert load_image(ordinary, draft_size=DRAFT).size == (1200, 900)  # exactly the file's pixels
    large = files.flat_png(tmp_path / "large.png", 4800, 3600, "RGB")  # 17 MP
    assert load_image(large, draft_size=DRAFT).size == (343, 258)  # 14x smaller (edge boxes count): >= 256 px


def test_large_jpeg_decodes_at_reduced_size(tmp_path):
    path = files.big_image(tmp_path / "big.jpg", 4000, 3000, "RGB", "JPEG", quality=85)
    image = load_image(path, draft_size=DRAFT)
    assert 2 * DRAFT <= min(image.size) < 4 * DRAFT
    assert load_image(path).size == (4000, 3000)  # 12 MP: within the working limit, decoded in full


def test_a_multi_picture_jpeg_from_a_phone_decodes_at_reduced_size(tmp_path):
    photo = files.lesion_photo(3000, 2000)
    photo.save(tmp_path / "phone.jpg", format="MPO", save_all=True, append_images=[photo.copy()])
    image = load_image(tmp_path / "phone.jpg", draft_size=DRAFT)
    assert 2 * DRAFT <= min(image.size) < 4 * DRAFT, image.size  # drafted like any JPEG (was decoded in full)


def test_formats_that_cannot_decode_reduced_have_their_own_pixel_limit(tmp_path, monkeypatch):
    monkeypatch.setitem(imaging.MAX_PIXELS_BY_KIND, "WebP", 1_000_000)
    files.lesion_photo(1200, 1000).save(tmp_path / "photo.webp", format="WEBP")
    with pytest.raises(ImageError, match=r"too large \(1200x1000\); the limit is 1 megapixels for a WebP"):
        load_image(tmp_path / "photo.webp")
    files.lesion_photo(1200, 800).save(tmp_path / "small.webp", format="WEBP")
    assert load_image(tmp_path / "small.webp").size == (1200, 800)


def test_a_progressive_jpeg_has_its_own_limit_and_takes_the_large_decode_slot(tmp_path, monkeypatch):
    """libjpeg holds a progressive file's coefficients at full size, however small the draft: 2,400x2,000 is a
    large decode even though it decodes at 1/4 scale."""
    progressive = files.big_image(tmp_path / "p.jpg", 2400, 2000, "RGB", "JPEG", quality=85, progressive=True)
    baseline = files.big_image(tmp_path / "b.jpg", 2400, 2000, "RGB", "JPEG", quality=85)
    monkeypatch.setattr(imaging, "LARGE_DECODE_WAIT_S", 0.2)
    assert imaging._large_decode.acquire(timeout=5)
    try:
        assert min(load_image(baseline, draft_size=DRAFT).size) >= 2 * DRAFT  # drafted to 600x500: not large
        with pytest.raises(ImageError, match="busy"):
            load_image(progressive, draft_size=DRAFT)
    finally:
        imaging._large_decode.release()
    monkeypatch.setitem(imaging.MAX_PIXELS_BY_KIND, "progressive JPEG", 4_000_000)
    with pytest.raises(ImageError, match="limit is 4 megapixels for a progressive JPEG"):
        load_image(progressive)
    assert load_image(baseline).size == (2400, 2000)


@pytest.mark.parametrize("fmt, suffix", [("ICO", "ico"), ("PCX", "pcx"), ("TGA", "tga")])
def test_formats_outside_the_photo_formats_are_refused(tmp_path, fmt, suffix):
    path = tmp_path / f"image.{suffix}"
    files.lesion_photo(64, 64).save(path, format=fmt)
    with pytest.raises(ImageError, match="not an image this app can read; upload a JPEG or PNG"):
        load_image(path)


def test_decoding_in_many_threads_gives_the_same_answers(tmp_path):
    """The large-decode slot and the reduction are thread-safe: same pixels from 6 threads as from one."""
    paths = [files.flat_png(tmp_path / "big.png", 5000, 4000, "RGB"), files.jpeg(tmp_path / "o.jpg", 600, 450)]
    expected = [np.asarray(load_image(p, draft_size=DRAFT)) for p in paths]
    results: list[bool] = []

    def work(i: int) -> None:
        results.append(np.array_equal(np.asarray(load_image(paths[i % 2], draft_size=DRAFT)), expected[i % 2]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6
