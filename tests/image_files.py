"""Generated image files for tests: ordinary photos and every awkward or broken input the app must handle.

All are made here from code (no dataset images), each into a folder the test owns.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def lesion_photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A skin-coloured background with a darker irregular blob and noise: a stand-in for a lesion photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * (0.45 + 0.1 * rng.random()), height * (0.5 + 0.1 * rng.random())
    radius = min(width, height) * 0.25 * (1 + 0.15 * np.sin(5 * np.arctan2(yy - cy, xx - cx)))
    inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < radius**2
    skin = np.array([224, 172, 150], dtype=np.float32)
    lesion = np.array([110, 70, 55], dtype=np.float32) + 40 * rng.random(3).astype(np.float32)
    pixels = np.where(inside[..., None], lesion, skin) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def jpeg(path: Path, width: int = 640, height: int = 480, seed: int = 0) -> Path:
    return save(lesion_photo(width, height, seed), path, format="JPEG", quality=90)


def split_colour_image(width: int = 120, height: int = 60) -> Image.Image:
    """Left third red, the rest blue: rotating it changes what a centre crop sees (for EXIF tests)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, :] = (30, 60, 220)
    pixels[:, : width // 3] = (220, 40, 30)
    return Image.fromarray(pixels, "RGB")


def exif_rotated_jpeg(path: Path, orientation: int = 6, image: Image.Image | None = None) -> Path:
    """A JPEG whose pixels are stored sideways with an EXIF Orientation tag saying how to turn them upright."""
    image = image or split_colour_image()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return save(image, path, format="JPEG", quality=95, exif=exif.tobytes())


def png_16bit(path: Path, width: int = 64, height: int = 48) -> Path:
    """A 16-bit greyscale PNG with a gradient over the middle of the 16-bit range (a bare convert would be white)."""
    values = np.linspace(8000, 40000, width * height, dtype=np.float64).reshape(height, width).astype(np.uint16)
    return save(Image.fromarray(values, "I;16"), path, format="PNG")


def greyscale_png(path: Path) -> Path:
    return save(lesion_photo(80, 60).convert("L"), path, format="PNG")


def rgba_png(path: Path) -> Path:
    """RGBA with a fully transparent left half (which must come out white, not black)."""
    image = lesion_photo(80, 60).convert("RGBA")
    alpha = np.full((60, 80), 255, dtype=np.uint8)
    alpha[:, :40] = 0
    image.putalpha(Image.fromarray(alpha, "L"))
    return save(image, path, format="PNG")


def palette_png(path: Path, transparent: bool = True) -> Path:
    image = lesion_photo(80, 60).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    kwargs = {"transparency": 0} if transparent else {}
    return save(image, path, format="PNG", **kwargs)


def cmyk_jpeg(path: Path, colour: tuple[int, int, int, int] = (0, 255, 255, 0)) -> Path:
    """A CMYK JPEG (default: pure red ink mix, C=0 M=100% Y=100% K=0)."""
    return save(Image.new("CMYK", (64, 48), colour), path, format="JPEG", quality=95)


def animated(path: Path, fmt: str = "GIF") -> Path:
    """Two frames: red then blue. The first frame is the one to analyse."""
    frames = [Image.new("RGB", (64, 48), (220, 20, 20)), Image.new("RGB", (64, 48), (20, 20, 220))]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def truncated_jpeg(path: Path) -> Path:
    """The first third of a real JPEG: the header parses, the pixel data ends early."""
    buffer = io.BytesIO()
    lesion_photo(320, 240).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 3])
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def not_an_image(path: Path) -> Path:
    path.write_text("this is a text file with a .jpg name\n" * 20)
    return path


def tiny_png(path: Path, side: int = 16) -> Path:
    return save(Image.new("RGB", (side, side), (200, 100, 90)), path, format="PNG")


def bomb_png(path: Path, width: int = 40_000, height: int = 40_000) -> Path:
    """A few hundred bytes claiming to be a huge image: a valid header with a tiny, empty IDAT.

    1.6 gigapixels by default (over Pillow's own bomb limit); 10_000 x 6_000 is over ours only.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


# -- decompression bombs that are valid images: tiny files, huge decoded sizes ----------------------------------

PNG_COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3), "P": (3, 1), "LA": (4, 2), "RGBA": (6, 4)}  # mode: (type, bands)


def flat_png(
    path: Path, width: int, height: int, mode: str = "RGBA", bit_depth: int = 8, level: int = 0x7F
) -> Path:
    """A valid PNG of one flat colour (every sample byte `level`), written row by row so that making it costs no
    memory: 7000x7000 RGBA is about 190 kB on disk and 196 MB decoded, 16-bit grey about 95 kB and 98 MB."""
    colour_type, bands = PNG_COLOUR_TYPES[mode]
    row = b"\0" + bytes([level]) * (width * bands * bit_depth // 8)  # filter byte "none", then the samples

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    palette = chunk(b"PLTE", bytes([200, 150, 130] * 256)) if mode == "P" else b""
    chunks = chunk(b"IHDR", header) + palette + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def big_image(path: Path, width: int, height: int, mode: str = "RGB", fmt: str = "JPEG", **save_kwargs) -> Path:
    """A large image of a smooth gradient saved by Pillow (for formats written from memory: JPEG, WebP, TIFF...).
    Making it costs about width x height x bands bytes in the calling process."""
    gradient = np.add.outer(np.linspace(60, 200, height, dtype=np.float32), np.linspace(0, 40, width, dtype=np.float32))
    grey = Image.fromarray(gradient.astype(np.uint8), "L")
    del gradient
    image = grey if mode == "L" else grey.convert(mode)
    image.save(path, format=fmt, **save_kwargs)
    return path
