// The browser twin of skin_demo.imaging.preprocess: RGBA pixels -> the float32 [3, H, W] tensor a package expects.
//
// Canvas drawImage scaling does not match Pillow (it has no antialiasing support scaling and rounds differently), so
// the resize re-implements Pillow's ImagingResample for 8-bit images (libImaging/Resample.c): per output pixel a
// filter window whose support grows with the downscale factor, coefficients normalised to sum 1 and then fixed-point
// (22 fractional bits), a horizontal pass, rounding to uint8, then a vertical pass. NEAREST follows Pillow's affine
// nearest-neighbour path instead. Everything the function needs comes from the package's embedded config.

const PRECISION_BITS = 22; // Pillow: 32 - 8 (uint8) - 2 (headroom)
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

const FILTERS = {
  bilinear: {
    support: 1.0,
    weight(x) {
      x = Math.abs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
  bicubic: {
    support: 2.0,
    weight(x) {
      const a = -0.5; // Pillow's bicubic uses a = -0.5 (timm's "bicubic" is Pillow's)
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

/** Pillow's precompute_coeffs + normalize_coeffs_8bpc: fixed-point weights and source window per output pixel. */
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0); // downscaling widens the filter: that is the antialiasing
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const raw = new Float64Array(ksize);
  const ss = 1.0 / filterScale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5); // C's (int) cast truncates
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let total = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.weight((x + xmin - center + 0.5) * ss);
      raw[x] = w;
      total += w;
    }
    for (let x = 0; x < xmax; x++) {
      const k = total !== 0.0 ? raw[x] / total : raw[x];
      weights[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, weights };
}

function clip8(value) {
  if (value >= ONE * 256) return 255;
  if (value <= 0) return 0;
  return Math.floor(value / ONE);
}

/** One separable pass over 3-channel uint8 pixels (stride 3), along x (horizontal) or y (vertical). */
function resamplePass(src, width, height, outSize, coeffs, horizontal, firstRow = 0, rows = height) {
  const { ksize, bounds, weights } = coeffs;
  const outW = horizontal ? outSize : width;
  const outH = horizontal ? rows : outSize;
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const i = horizontal ? x : y;
      const start = bounds[i * 2];
      const count = bounds[i * 2 + 1];
      const k = i * ksize;
      let s0 = HALF;
      let s1 = HALF;
      let s2 = HALF;
      for (let j = 0; j < count; j++) {
        const p = horizontal ? ((y + firstRow) * width + start + j) * 3 : ((start + j) * width + x) * 3;
        const w = weights[k + j];
        s0 += src[p] * w;
        s1 += src[p + 1] * w;
        s2 += src[p + 2] * w;
      }
      const o = (y * outW + x) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return out;
}

/** Pillow's Image.resize(size, BICUBIC|BILINEAR) for 8-bit RGB (box = the whole image, no reducing_gap). */
function resampleFiltered(rgb, width, height, outW, outH, filter) {
  const horiz = coefficients(width, outW, filter);
  const vert = coefficients(height, outH, filter);
  let pixels = rgb;
  let w = width;
  let h = height;
  if (outW !== width) {
    // Like Pillow, run the horizontal pass only over the source rows the vertical pass will read.
    const first = vert.bounds[0];
    const last = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
    if (outH !== height) {
      for (let i = 0; i < outH; i++) vert.bounds[i * 2] -= first;
      pixels = resamplePass(pixels, w, h, outW, horiz, true, first, last - first);
      h = last - first;
    } else {
      pixels = resamplePass(pixels, w, h, outW, horiz, true);
    }
    w = outW;
  }
  if (outH !== height) {
    pixels = resamplePass(pixels, w, h, outH, vert, false);
    h = outH;
  }
  return pixels;
}

/** Pillow's NEAREST resize: affine nearest-neighbour with pixel-centre offsets accumulated step by step. */
function resampleNearest(rgb, width, height, outW, outH) {
  const sx = width / outW;
  const sy = height / outH;
  const xs = new Int32Array(outW);
  let xo = sx * 0.5;
  for (let x = 0; x < outW; x++) {
    xs[x] = Math.trunc(xo);
    xo += sx;
  }
  const out = new Uint8Array(outW * outH * 3);
  let yo = sy * 0.5;
  for (let y = 0; y < outH; y++) {
    const row = Math.trunc(yo) * width;
    for (let x = 0; x < outW; x++) {
      const p = (row + xs[x]) * 3;
      const o = (y * outW + x) * 3;
      out[o] = rgb[p];
      out[o + 1] = rgb[p + 1];
      out[o + 2] = rgb[p + 2];
    }
    yo += sy;
  }
  return out;
}

/** Pillow's fixed-point 1/divider for its box reduction (Reduce.c division_UINT32: computed in float, truncated). */
function reduceMultiplier(divider) {
  return Math.trunc(Math.fround(Math.fround(2 ** 32) / Math.fround(256 * divider)));
}

/** The mean of a box of source pixels, rounded as Pillow's Image.reduce rounds it. */
function boxMean(rgb, width, x0, x1, y0, y1, out, o) {
  const count = (x1 - x0) * (y1 - y0);
  const multiplier = reduceMultiplier(count);
  const amend = Math.floor(count / 2);
  let s0 = amend;
  let s1 = amend;
  let s2 = amend;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const p = (y * width + x) * 3;
      s0 += rgb[p];
      s1 += rgb[p + 1];
      s2 += rgb[p + 2];
    }
  }
  // (s * multiplier) >> 24 in uint32 arithmetic; the product stays below 2**32, exact in a double.
  out[o] = Math.floor((s0 * multiplier) / 2 ** 24);
  out[o + 1] = Math.floor((s1 * multiplier) / 2 ** 24);
  out[o + 2] = Math.floor((s2 * multiplier) / 2 ** 24);
}

/** Pillow's Image.reduce(factor): factor x factor box means; the last column and row average what is left. */
export function reduce(rgb, width, height, factor) {
  const outW = Math.ceil(width / factor);
  const outH = Math.ceil(height / factor);
  const out = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    const y0 = y * factor;
    const y1 = Math.min(y0 + factor, height);
    for (let x = 0; x < outW; x++) {
      const x0 = x * factor;
      boxMean(rgb, width, x0, Math.min(x0 + factor, width), y0, y1, out, (y * outW + x) * 3);
    }
  }
  return { rgb: out, width: outW, height: outH };
}

/** Python's round(): halves go to the even neighbour (Math.round would take 42.5 to 43, Python to 42). */
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The shorter side imaging.preprocess resizes to (PreprocessConfig.resize_shorter_side): floor(size / crop_pct). */
export function shorterSide(config) {
  return Math.floor(config.size[0] / config.crop_pct);
}

/** Resize to the size imaging.preprocess uses: the shorter side to shorterSide(config), the aspect kept. */
export function resizedSize(width, height, config) {
  const targetShort = shorterSide(config);
  const [short, long] = width <= height ? [width, height] : [height, width];
  if (short === targetShort) return [width, height];
  const newLong = Math.trunc((targetShort * long) / short);
  return width <= height ? [targetShort, newLong] : [newLong, targetShort];
}

/**
 * imaging.crop_geometry: the size preprocess resizes an image of width x height to, and the centred square it crops
 * from that, [left, top, right, bottom].
 */
export function cropGeometry(width, height, config) {
  const [w, h] = resizedSize(width, height, config);
  const [size] = config.size;
  const top = roundHalfEven((h - size) / 2);
  const left = roundHalfEven((w - size) / 2);
  return { resized: [w, h], box: [left, top, left + size, top + size] };
}

/** The RGB bytes of RGBA pixels (ImageData-like: {width, height, data}), as {rgb, width, height}. */
export function rgbOf(image) {
  const rgb = new Uint8Array(image.width * image.height * 3);
  const rgba = image.data;
  for (let i = 0, j = 0; j < rgb.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, width: image.width, height: image.height };
}

/**
 * The model input for an upright RGB image ({rgb, width, height}) and a package's `preprocess` config:
 * Float32Array of 3 * H * W, channel-major, exactly as imaging.preprocess computes it.
 */
export function preprocess(image, config) {
  const [height, width] = config.size;
  if (height !== width) throw new Error(`only square model inputs are supported, config asks for ${height}x${width}`);
  if (config.resize !== "shorter_side_then_center_crop") throw new Error(`unknown resize mode ${config.resize}`);
  const rgb = image.rgb;
  const {
    resized: [w, h],
    box: [left, top],
  } = cropGeometry(image.width, image.height, config);
  let pixels = rgb;
  if (w !== image.width || h !== image.height) {
    if (config.interpolation === "nearest") {
      pixels = resampleNearest(rgb, image.width, image.height, w, h);
    } else if (FILTERS[config.interpolation]) {
      pixels = resampleFiltered(rgb, image.width, image.height, w, h, FILTERS[config.interpolation]);
    } else {
      throw new Error(`unknown interpolation ${config.interpolation}`);
    }
  }
  // numpy's float32 arithmetic, step by step: u8 / 255, the colour constancy gain, then - mean, then / std, each
  // rounded to float32.
  const f = Math.fround;
  const plane = height * width;
  const tensor = new Float32Array(3 * plane);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = ((y + top) * w + (x + left)) * 3;
      const o = y * width + x;
      for (let c = 0; c < 3; c++) tensor[c * plane + o] = f(pixels[p + c] / 255);
    }
  }
  if (config.color_constancy === "shades_of_gray") {
    shadesOfGray(tensor, plane, config.color_constancy_power);
  } else if (config.color_constancy !== undefined && config.color_constancy !== "none") {
    throw new Error(`unknown colour constancy ${config.color_constancy}`);
  }
  const mean = config.mean.map(f);
  const std = config.std.map(f);
  for (let c = 0; c < 3; c++) {
    for (let o = c * plane; o < (c + 1) * plane; o++) tensor[o] = f(f(tensor[o] - mean[c]) / std[c]);
  }
  return tensor;
}

/**
 * imaging.shades_of_gray in place on channel-major [0, 1] pixels: per channel the Minkowski p-mean (in float64, as
 * numpy computes it), gains that bring every channel to the mean illuminant (rounded to float32), clip to [0, 1].
 */
function shadesOfGray(tensor, plane, power) {
  const f = Math.fround;
  const illuminant = [0, 1, 2].map((c) => {
    let sum = 0;
    for (let o = c * plane; o < (c + 1) * plane; o++) sum += Math.pow(tensor[o], power);
    return Math.pow(sum / plane, 1 / power);
  });
  const average = (illuminant[0] + illuminant[1] + illuminant[2]) / 3;
  for (let c = 0; c < 3; c++) {
    const gain = f(average / Math.max(illuminant[c], 1e-6));
    for (let o = c * plane; o < (c + 1) * plane; o++) tensor[o] = Math.min(1, Math.max(0, f(tensor[o] * gain)));
  }
}
