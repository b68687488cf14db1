"""Make a dermoscopy image look like an ordinary phone photo, for training only.

Most visitors upload phone photos, and the classifiers learn most of what they know from dermoscopy. Dermoscopy
gives itself away by things a phone photo never has: the dark circular vignette of the dermatoscope, a lesion that
fills the frame, even and cast-free lighting, sharp focus, no compression. `PhoneLook` removes or randomises each
of them on a uint8 tensor [3, H, W], before the ordinary augmentation:

1. fill the dermatoscope's dark vignette with the image's own skin colour;
2. zoom out: shrink the image onto a canvas of that skin colour (with a soft edge and a lighting gradient), so the
   lesion no longer fills the frame;
3. white-balance (per-channel gain), gamma and a directional lighting gradient;
4. defocus (Gaussian) or motion blur;
5. sensor noise;
6. JPEG re-encoding at a random quality.

Each step fires with its own probability, so the network also still sees plain dermoscopy. Ruler marks are left
alone: finding them reliably needs more than a few lines of image arithmetic.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF


class PhoneLook:
    """Randomly turn a dermoscopy image (uint8 tensor [3, H, W]) into something closer to a phone photo.

    `p` is the probability that the image is changed at all; each step then fires with its own probability.
    A `seed` makes the draws repeatable (tests); training leaves it None and draws from the `random` module,
    which the data loader seeds afresh in every worker of every epoch (a private generator would be copied into
    each worker in the same state, and repeat the same draws every epoch).
    """

    def __init__(self, p: float = 0.5, seed: int | None = None):
        self.p = p
        self.rng = random if seed is None else random.Random(seed)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.rng.random() >= self.p:
            return image
        pixels = image.float() / 255.0
        noise = torch.Generator().manual_seed(self.rng.randrange(2**31))  # torch's draws follow the same seed
        skin = skin_colour(pixels)
        if self.rng.random() < 0.7:
            pixels = fill_vignette(pixels, skin)
        if self.rng.random() < 0.6:
            pixels = zoom_out(pixels, skin, scale=self.rng.uniform(0.35, 0.85), rng=self.rng, noise=noise)
        if self.rng.random() < 0.8:
            pixels = relight(pixels, self.rng)
        if self.rng.random() < 0.5:
            pixels = blur(pixels, self.rng)
        if self.rng.random() < 0.5:
            sigma = self.rng.uniform(0.005, 0.04)
            pixels = (pixels + torch.randn(pixels.shape, generator=noise) * sigma).clamp(0, 1)
        out = (pixels * 255.0).round().to(torch.uint8)
        if self.rng.random() < 0.6:
            out = jpeg(out, quality=self.rng.randint(30, 90))
        return out


def skin_colour(pixels: torch.Tensor) -> torch.Tensor:
    """The skin's colour [3]: the median of the brighter half of a ring around the centre (the lesion sits in the
    middle, the dermatoscope's vignette at the edge)."""
    radius = _radius(pixels)
    ring = pixels[:, (radius > 0.35) & (radius < 0.7)]
    luminance = ring.mean(0)
    return ring[:, luminance >= luminance.median()].median(dim=1).values


def fill_vignette(pixels: torch.Tensor, skin: torch.Tensor) -> torch.Tensor:
    """Replace the dark pixels away from the centre (the dermatoscope's vignette), and the dim rim around them,
    with `skin`."""
    dark = (pixels.mean(0) < 0.5 * float(skin.mean())) & (_radius(pixels) > 0.55)
    # Grow the mask over the vignette's soft rim and soften its edge, at a quarter of the resolution (cheap).
    small = F.avg_pool2d(dark.float()[None, None], kernel_size=4, ceil_mode=True)
    small = TF.gaussian_blur(F.max_pool2d(small, kernel_size=5, stride=1, padding=2), kernel_size=5, sigma=1.0)
    mask = F.interpolate(small, size=pixels.shape[1:], mode="bilinear", align_corners=False)[0]
    return pixels * (1 - mask) + skin[:, None, None] * mask


def _radius(pixels: torch.Tensor) -> torch.Tensor:
    """Each pixel's distance from the image centre, 1 at the middle of each edge ([H, W])."""
    _, h, w = pixels.shape
    ys = torch.linspace(-1, 1, h)[:, None]
    xs = torch.linspace(-1, 1, w)[None, :]
    return (ys ** 2 + xs ** 2).sqrt()


def zoom_out(pixels: torch.Tensor, skin: torch.Tensor, scale: float, rng: random.Random,
             noise: torch.Generator) -> torch.Tensor:
    """Shrink the image by `scale` onto a same-sized canvas of `skin`, at a random place, with a soft edge."""
    _, h, w = pixels.shape
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    small = F.interpolate(pixels[None], size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)[0]
    canvas = skin[:, None, None].expand(3, h, w).clone()
    canvas += torch.randn((1, h, w), generator=noise) * 0.01  # skin is never a flat colour
    top, left = rng.randint(0, h - sh), rng.randint(0, w - sw)
    # A soft edge: the pasted image fades into the canvas over about a sixth of its size, on every side.
    ramp = max(2.0, min(sh, sw) / 6)
    rows = (torch.minimum(torch.arange(sh), torch.arange(sh).flip(0)).float() / ramp).clamp(max=1)
    columns = (torch.minimum(torch.arange(sw), torch.arange(sw).flip(0)).float() / ramp).clamp(max=1)
    edge = (rows[:, None] * columns[None, :])[None]
    region = canvas[:, top:top + sh, left:left + sw]
    canvas[:, top:top + sh, left:left + sw] = small * edge + region * (1 - edge)
    return canvas.clamp(0, 1)


def relight(pixels: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """White-balance gains per channel, a gamma, and a lighting gradient from a random direction."""
    gains = torch.tensor([rng.uniform(0.8, 1.2) for _ in range(3)])[:, None, None]
    pixels = (pixels * gains).clamp(0, 1) ** rng.uniform(0.7, 1.4)
    _, h, w = pixels.shape
    angle = rng.uniform(0, 2 * math.pi)
    ys = torch.linspace(-1, 1, h)[:, None]
    xs = torch.linspace(-1, 1, w)[None, :]
    gradient = 1 + rng.uniform(0.0, 0.35) * (math.cos(angle) * xs + math.sin(angle) * ys) / 2
    return (pixels * gradient[None]).clamp(0, 1)


def blur(pixels: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Defocus (Gaussian) or motion blur (a line kernel at a random angle)."""
    if rng.random() < 0.6:
        sigma = rng.uniform(0.5, 2.5)
        size = 2 * math.ceil(3 * sigma) + 1
        return TF.gaussian_blur(pixels, kernel_size=size, sigma=sigma)
    length = rng.choice((3, 5, 7, 9, 11))  # odd, so the padded convolution keeps the size
    kernel = torch.zeros(length, length)
    kernel[length // 2] = 1.0
    kernel = TF.rotate(kernel[None], rng.uniform(0, 180), interpolation=TF.InterpolationMode.BILINEAR)[0]
    kernel = (kernel / kernel.sum().clamp(min=1e-6)).expand(3, 1, length, length)
    padded = F.pad(pixels[None], [length // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=3)[0].clamp(0, 1)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip at `quality` (uint8 [3, H, W] in and out)."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy()).permute(2, 0, 1)
