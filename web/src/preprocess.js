// Raw images -> model inputs, by the steps the model's `preprocess` section declares: the
// JavaScript twin of runtime/vae_runtime/preprocess.py, step for step (docs/preprocessing.md
// defines them; docs/web.md says how closely the two agree). Grey and alpha are float32 as
// in Python (Math.fround reproduces numpy's float32 arithmetic exactly), everything after
// them float64. Output: white ink on black, 8-bit levels as float32, with the decisions.

import { InputError } from './errors.js';
import { NONE, validateSpec } from './preprocess-spec.js';
import { image64, resize } from './resample.js';

export { SpecError, validateSpec } from './preprocess-spec.js';
export const SIDE = 28;

const f32 = Math.fround;
const LUMA = [f32(0.299), f32(0.587), f32(0.114)]; // BT.601, as float32 numpy scalars
const MAD_TO_SIGMA = 1.4826;
const OTSU_BINS = 256;
const round = (v) => Math.floor(v + 0.5); // round half up, as the Python side's _round

// ---- decoding: pixels -> float32 grey (+ alpha) -------------------------------------------

const BYTE = Float32Array.from({ length: 256 }, (_, v) => f32(v / 255)); // uint8 -> [0, 1]

function unitScale(data) {
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return (v) => BYTE[v];
  if (data instanceof Uint16Array) return (v) => f32(v / 65535);
  if (data instanceof Float32Array || data instanceof Float64Array || Array.isArray(data)) {
    return (v) => {
      if (!(v >= 0 && v <= 1)) {
        throw new InputError('float images must lie in [0, 1] (NaN and inf are refused)');
      }
      return f32(v);
    };
  }
  throw new InputError(
    'image data must be a Uint8Array, Uint8ClampedArray, Uint16Array, Float32Array or Float64Array',
  );
}

/**
 * An image as {grey, alpha} Float32Arrays (alpha null when opaque), as grey_alpha in Python.
 * `image`: {data, width, height, channels?}: an ImageData (RGBA), or row-major pixels with
 * 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels, uint8 / uint16 / floats in [0, 1].
 */
export function greyAlpha(image) {
  const { data, width, height } = image ?? {};
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new InputError(`an image needs integer width and height >= 1, got ${width} x ${height}`);
  }
  if (data === null || typeof data !== 'object' || typeof data.length !== 'number') {
    throw new InputError('an image needs its pixels as `data` (a typed array)');
  }
  const count = width * height;
  const channels = image.channels ?? data.length / count;
  if (![1, 2, 3, 4].includes(channels) || data.length !== count * channels) {
    throw new InputError(
      `an image of ${width} x ${height} has ${data.length} values; accepted: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) per pixel`,
    );
  }
  const unit = unitScale(data);
  const grey = new Float32Array(count);
  let alpha = channels === 2 || channels === 4 ? new Float32Array(count) : null;
  let opaque = true;
  for (let p = 0, i = 0; p < count; p++, i += channels) {
    if (channels <= 2) grey[p] = unit(data[i]);
    else {
      const r = f32(LUMA[0] * unit(data[i]));
      const g = f32(LUMA[1] * unit(data[i + 1]));
      grey[p] = f32(f32(r + g) + f32(LUMA[2] * unit(data[i + 2])));
    }
    if (alpha) {
      alpha[p] = unit(data[i + channels - 1]);
      if (alpha[p] < 1) opaque = false;
    }
  }
  if (opaque) alpha = null;
  return { grey, alpha, width, height };
}

// ---- small helpers, as in Python ------------------------------------------------------------

/** The sorted values' element at index floor(q (n - 1)): no interpolation. Found by
 * selection (as numpy.partition), not a full sort: the same element, in linear time. */
function quantile(values, q) {
  const a = Float64Array.from(values);
  return select(a, Math.floor(q * (a.length - 1)));
}

/** The k-th smallest of `a` (reordered in place): Hoare's quickselect, median-of-3 pivot. */
function select(a, k) {
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    const [x, y, z] = [a[lo], a[mid], a[hi]];
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/** Indices of the pixels within b = max(1, floor(fraction min(H, W))) of the edge, in
 * Python's order (top rows, bottom rows, then left and right columns between them). */
function ringIndices(height, width, fraction) {
  const b = Math.max(1, Math.floor(fraction * Math.min(height, width)));
  if (2 * b >= Math.min(height, width))
    return Int32Array.from({ length: height * width }, (_, p) => p);
  const out = new Int32Array(2 * b * width + 2 * b * (height - 2 * b));
  let n = 0;
  for (let r = 0; r < b; r++) for (let c = 0; c < width; c++) out[n++] = r * width + c;
  for (let r = height - b; r < height; r++)
    for (let c = 0; c < width; c++) out[n++] = r * width + c;
  for (let r = b; r < height - b; r++) for (let c = 0; c < b; c++) out[n++] = r * width + c;
  for (let r = b; r < height - b; r++) {
    for (let c = width - b; c < width; c++) out[n++] = r * width + c;
  }
  return out;
}

function pick(data, indices) {
  const out = new Float64Array(indices.length);
  for (let i = 0; i < indices.length; i++) out[i] = data[indices[i]];
  return out;
}
const noInk = (why) => ({ code: 'no_ink', message: `no ink found (${why})` });

// ---- the steps --------------------------------------------------------------------------------

/** Step 1: alpha composited onto black, white, or the paper the ink implies. Float32. */
function composite(grey, alpha, rule, invert) {
  let paper;
  if (rule === 'white' || (rule === 'ink' && invert === true)) paper = 1;
  else if (rule === 'black' || (rule === 'ink' && invert === false)) paper = 0;
  else {
    let covered = 0;
    let drawn = 0;
    for (let p = 0; p < alpha.length; p++) {
      covered += alpha[p];
      drawn += alpha[p] * grey[p];
    }
    paper = covered > 0 && drawn / covered < 0.5 ? 1 : 0;
  }
  const out = new Float32Array(grey.length);
  for (let p = 0; p < grey.length; p++) out[p] = f32(grey[p] * alpha[p] + paper * (1 - alpha[p]));
  return out;
}

/** Step 2: a model-sized image; only the polarity decision applies, bits are kept. */
function passthrough(grey, width, height, spec, invert) {
  const ring = pick(grey, ringIndices(height, width, spec.polarity.border)).sort();
  const m = ring.length;
  const border = ring[Math.floor(spec.polarity.quantile * (m - 1))];
  const inverted = invert === 'auto' ? border > spec.polarity.threshold : invert;
  const image = inverted ? Float32Array.from(grey, (v) => f32(1 - v)) : Float32Array.from(grey);
  const lower = ring[Math.floor((m - 1) / 2)];
  const upper = ring[m - 1 - Math.floor((m - 1) / 2)];
  const paper = inverted ? f32(1 - upper) : lower;
  let brightest = 0;
  for (const v of image) brightest = Math.max(brightest, v);
  const ink = f32(brightest - paper);
  const flags =
    ink < f32(spec.ink.min_contrast)
      ? [noInk(`brightest pixel only ${ink.toFixed(3)} above the border's median`)]
      : [];
  return { image, inverted, border, passthrough: true, flags };
}

/** Step 3: an image larger than max_side, area-reduced so its longer side is max_side. */
function reduce(img, maxSide) {
  const { height: h, width: w } = img;
  if (Math.max(h, w) <= maxSide) return img;
  const k = maxSide / Math.max(h, w);
  return resize(img, Math.max(1, round(h * k)), Math.max(1, round(w * k)), 'area');
}

/** Step 5, blocks: per-block quantiles, a rank filter over the block grid, bilinear between
 * block centres (constant beyond the outer ones). */
function blockBackground(img, { grid, quantile: q, filter: size, rank }) {
  const { height: h, width: w, data } = img;
  const b = Math.ceil(Math.max(h, w) / grid);
  const gh = Math.ceil(h / b);
  const gw = Math.ceil(w / b);
  const levels = [];
  for (let i = 0; i < gh; i++) {
    const row = [];
    for (let j = 0; j < gw; j++) {
      const block = [];
      for (let r = i * b; r < Math.min((i + 1) * b, h); r++) {
        for (let c = j * b; c < Math.min((j + 1) * b, w); c++) block.push(data[r * w + c]);
      }
      row.push(quantile(block, q));
    }
    levels.push(row);
  }
  const half = Math.floor(size / 2);
  const clamp = (v, n) => Math.min(Math.max(v, 0), n - 1);
  const filtered = levels.map((row, i) =>
    row.map((_, j) => {
      const around = [];
      for (let di = -half; di <= half; di++) {
        for (let dj = -half; dj <= half; dj++)
          around.push(levels[clamp(i + di, gh)][clamp(j + dj, gw)]);
      }
      return quantile(around, rank);
    }),
  );
  const centres = (n, count) =>
    Array.from({ length: count }, (_, i) => (i * b + (Math.min((i + 1) * b, n) - 1)) / 2.0);
  const ry = interpWeights(h, centres(h, gh));
  const cx = interpWeights(w, centres(w, gw));
  // (My @ levels) @ Mx^T, as Python associates it, with only the non-zero weights.
  const rows = ry.map(({ k, w0, w1 }) =>
    Array.from({ length: gw }, (_, j) => w0 * filtered[k][j] + w1 * (filtered[k + 1]?.[j] ?? 0)),
  );
  const out = new Float64Array(h * w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      const { k, w0, w1 } = cx[c];
      out[r * w + c] = rows[r][k] * w0 + (w1 === 0 ? 0 : rows[r][k + 1] * w1);
    }
  }
  return out;
}

/** numpy.interp of each unit vector through `centres`, at pixels 0..n-1: for pixel x the
 * weights w0 of centre k and w1 of centre k + 1. */
function interpWeights(n, centres) {
  const last = centres.length - 1;
  return Array.from({ length: n }, (_, x) => {
    if (x <= centres[0]) return { k: 0, w0: 1, w1: 0 };
    if (x >= centres[last]) return { k: last, w0: 1, w1: 0 };
    let k = 0;
    while (!(centres[k] <= x && x < centres[k + 1])) k++;
    if (x === centres[k]) return { k, w0: 1, w1: 0 };
    const dx = centres[k + 1] - centres[k];
    return { k, w0: (-1 / dx) * (x - centres[k]) + 1, w1: (1 / dx) * (x - centres[k]) + 0 };
  });
}

/** Step 5, plane: the least-squares plane a + b (r / h) + c (col / w) through the ring. */
function planeBackground(img, border) {
  const { height: h, width: w, data } = img;
  const ring = ringIndices(h, w, border);
  const A = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
  ];
  const v = [0, 0, 0];
  for (const p of ring) {
    const d = [1, Math.floor(p / w) / h, (p % w) / w];
    for (let i = 0; i < 3; i++) {
      v[i] += d[i] * data[p];
      for (let j = 0; j < 3; j++) A[i][j] += d[i] * d[j];
    }
  }
  const [a, b, c] = solve3(A, v);
  const out = new Float64Array(h * w);
  for (let r = 0; r < h; r++) {
    for (let col = 0; col < w; col++) out[r * w + col] = a + b * (r / h) + c * (col / w);
  }
  return out;
}

/** A x = v for 3 x 3 A: Gaussian elimination with partial pivoting (as LAPACK's gesv). */
function solve3(A, v) {
  const m = A.map((row, i) => [...row, v[i]]);
  for (let col = 0; col < 3; col++) {
    let best = col;
    for (let r = col + 1; r < 3; r++) if (Math.abs(m[r][col]) > Math.abs(m[best][col])) best = r;
    [m[col], m[best]] = [m[best], m[col]];
    for (let r = col + 1; r < 3; r++) {
      const f = m[r][col] / m[col][col];
      for (let c = col; c < 4; c++) m[r][c] -= f * m[col][c];
    }
  }
  const x = [0, 0, 0];
  for (let r = 2; r >= 0; r--) {
    let s = m[r][3];
    for (let c = r + 1; c < 3; c++) s -= m[r][c] * x[c];
    x[r] = s / m[r][r];
  }
  return x;
}

/** Otsu's threshold over 256 bins of [0, 1] (first maximum), as a level t / 256. */
export function otsu(values) {
  const hist = new Float64Array(OTSU_BINS);
  for (const v of values) hist[Math.min(Math.trunc(v * OTSU_BINS), OTSU_BINS - 1)]++;
  let w0 = 0;
  let m0 = 0;
  const cw = [];
  const cm = [];
  for (let k = 0; k < OTSU_BINS; k++) {
    w0 += hist[k];
    m0 += hist[k] * ((k + 0.5) / OTSU_BINS);
    cw.push(w0);
    cm.push(m0);
  }
  const total = cw[OTSU_BINS - 2] + hist[OTSU_BINS - 1];
  const mass = cm[OTSU_BINS - 2] + hist[OTSU_BINS - 1] * ((OTSU_BINS - 0.5) / OTSU_BINS);
  let best = -Infinity;
  let arg = 0;
  for (let i = 0; i < OTSU_BINS - 1; i++) {
    const w1 = total - cw[i];
    const d = cm[i] / cw[i] - (mass - cm[i]) / w1;
    let between = cw[i] * w1 * (d * d);
    if (!Number.isFinite(between)) between = -1;
    if (between > best) {
      best = between;
      arg = i;
    }
  }
  return (arg + 1) / OTSU_BINS;
}

/** Step 6: ink levels from the flattened residual, or a no-ink flag (see Python's find_ink). */
function findInk(residual, h, w, rule, border) {
  const n = residual.length;
  const r = new Float64Array(n);
  for (let p = 0; p < n; p++) r[p] = Math.min(Math.max(residual[p], 0), 1);
  const paper = pick(residual, ringIndices(h, w, border));
  const middle = quantile(paper, 0.5);
  for (let i = 0; i < paper.length; i++) paper[i] = Math.abs(paper[i] - middle);
  const sigma = MAD_TO_SIGMA * quantile(paper, 0.5);
  const level = rule.threshold === 'otsu' ? otsu(r) : rule.threshold;
  let t = Math.max(level, rule.noise_threshold * sigma);
  const atLeast = (t) => {
    let count = 0;
    for (let p = 0; p < n; p++) if (r[p] >= t) count++;
    const out = new Float64Array(count);
    for (let p = 0, i = 0; p < n; p++) if (r[p] >= t) out[i++] = r[p];
    return out;
  };
  const above = atLeast(t);
  if (above.length === 0 || t <= 0) return { flag: noInk('no pixel stands out from the paper') };
  let contrast = quantile(above, 0.5);
  if (rule.relative * contrast > t) {
    t = rule.relative * contrast;
    contrast = quantile(atLeast(t), 0.5);
  }
  if (contrast < rule.min_contrast || contrast < rule.noise_factor * sigma) {
    return {
      flag: noInk(`ink contrast ${contrast.toFixed(3)} against paper noise ${sigma.toFixed(3)}`),
    };
  }
  const ink = new Float64Array(n);
  if (rule.levels.method === 'keep') {
    for (let p = 0; p < n; p++) ink[p] = r[p] >= t ? r[p] : 0;
  } else {
    const low = rule.levels.low * t;
    for (let p = 0; p < n; p++) ink[p] = Math.min(Math.max((r[p] - low) / (contrast - low), 0), 1);
  }
  return { ink };
}

/** Step 7: first and last index where the running mass from either end exceeds trim x total. */
function span(profile, trim) {
  let total = 0;
  for (const v of profile) total += v;
  const cut = trim * total;
  const n = profile.length;
  let first = 0;
  for (let i = 0, run = 0; i < n; i++) {
    run += profile[i];
    if (run > cut) {
      first = i;
      break;
    }
  }
  let last = n - 1;
  for (let i = n - 1, run = 0; i >= 0; i--) {
    run += profile[i];
    if (run > cut) {
      last = i;
      break;
    }
  }
  return [first, Math.max(first, last)];
}

function cropBox(ink, h, w, trim) {
  const rows = new Float64Array(h);
  const cols = new Float64Array(w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      rows[r] += ink[r * w + c];
      cols[c] += ink[r * w + c];
    }
  }
  return [...span(rows, trim), ...span(cols, trim)];
}

/** Step 8: the crop scaled so its longer side is `box`, aspect kept. */
function fit(patch, { box, down, up }) {
  const { height: h, width: w } = patch;
  const scale = box / Math.max(h, w);
  const height = Math.min(box, Math.max(1, round(h * scale)));
  const width = Math.min(box, Math.max(1, round(w * scale)));
  return resize(patch, height, width, down, up);
}

/** Step 9: unsharp mask, edges replicated, clipped to [0, 1]. */
function sharpen(patch, { sigma, radius, amount }) {
  const { height: h, width: w, data } = patch;
  const k = [];
  for (let j = -radius; j <= radius; j++) k.push(Math.exp(-(j * j) / (2.0 * sigma * sigma)));
  const sum = k.reduce((s, v) => s + v, 0);
  for (let i = 0; i < k.length; i++) k[i] /= sum;
  const at = (r, c) => data[Math.min(Math.max(r, 0), h - 1) * w + Math.min(Math.max(c, 0), w - 1)];
  // Rows of the padded image blurred vertically (columns still padded), then horizontally.
  const pw = w + 2 * radius;
  const rows = new Float64Array(h * pw);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < pw; c++) {
      let acc = 0;
      for (let i = 0; i < k.length; i++) acc += k[i] * at(r + i - radius, c - radius);
      rows[r * pw + c] = acc;
    }
  }
  const out = image64(h, w);
  for (let r = 0; r < h; r++) {
    for (let c = 0; c < w; c++) {
      let blurred = 0;
      for (let j = 0; j < k.length; j++) blurred += k[j] * rows[r * pw + c + j];
      const x = data[r * w + c];
      out.data[r * w + c] = Math.min(Math.max(x + amount * (x - blurred), 0), 1);
    }
  }
  return out;
}

/** Step 10: the patch on a black canvas, centred as a box or by whole-pixel centre of mass. */
function place(patch, [hs, ws], rule) {
  const { height: h, width: w, data } = patch;
  let top;
  let left;
  if (rule.method === 'box') {
    top = Math.floor((hs - h + 1) / 2);
    left = Math.floor((ws - w + 1) / 2);
  } else {
    let mass = 0;
    let my = 0;
    let mx = 0;
    const cols = new Float64Array(w);
    for (let r = 0; r < h; r++) {
      let row = 0;
      for (let c = 0; c < w; c++) {
        row += data[r * w + c];
        cols[c] += data[r * w + c];
      }
      mass += row;
      my += row * r;
    }
    for (let c = 0; c < w; c++) mx += cols[c] * c;
    const [ty, tx] = rule.target;
    top = Math.min(Math.max(round(ty - my / mass), 0), hs - h);
    left = Math.min(Math.max(round(tx - mx / mass), 0), ws - w);
  }
  const out = image64(hs, ws);
  for (let r = 0; r < h; r++)
    out.data.set(data.subarray(r * w, (r + 1) * w), (top + r) * ws + left);
  return out;
}

/** Step 11: stretch so the brightest pixel is 1, round to `levels` grey levels, float32. */
function finish(data, stretch, levels) {
  let max = 0;
  for (const v of data) max = Math.max(max, v);
  const scale = stretch === 'max' && max > 0 ? max : 1;
  return Float32Array.from(data, (v) => {
    const x = Math.min(Math.max(v / scale, 0), 1);
    return levels ? Math.floor(x * levels + 0.5) / levels : x;
  });
}

// ---- the pipeline -------------------------------------------------------------------------------

/**
 * One image through the steps of `spec`, as prepare() in Python.
 * @returns {{image: Float32Array, inverted: boolean, decided: boolean, border: number,
 *   passthrough: boolean, flags: {code: string, message: string}[]}}
 */
export function prepare(image, spec, { invert = 'auto' } = {}) {
  if (!['auto', true, false].includes(invert)) {
    throw new InputError(`invert must be "auto", true or false, got ${JSON.stringify(invert)}`);
  }
  const decoded = greyAlpha(image);
  const { width, height } = decoded;
  let { grey } = decoded;
  if (decoded.alpha) grey = composite(grey, decoded.alpha, spec.alpha, invert);
  const decided = invert === 'auto';
  if (height === spec.size[0] && width === spec.size[1]) {
    return { ...passthrough(grey, width, height, spec, invert), decided };
  }
  const x = reduce(image64(height, width, new Float64Array(grey)), spec.reduce.max_side);
  const { height: h, width: w } = x;
  const ring = pick(x.data, ringIndices(h, w, spec.polarity.border));
  const border = quantile(ring, spec.polarity.quantile);
  const inverted = decided ? border > spec.polarity.threshold : invert;
  if (inverted) for (let p = 0; p < x.data.length; p++) x.data[p] = 1 - x.data[p];
  const bg = spec.background;
  let residual = x.data;
  if (bg.method !== 'none') {
    const level =
      bg.method === 'plane' ? planeBackground(x, spec.polarity.border) : blockBackground(x, bg);
    residual = new Float64Array(x.data.length);
    for (let p = 0; p < residual.length; p++) residual[p] = x.data[p] - level[p];
  }
  const info = { inverted, decided, border, passthrough: false };
  const { ink, flag } = findInk(residual, h, w, spec.ink, spec.polarity.border);
  if (flag) return { image: new Float32Array(spec.size[0] * spec.size[1]), ...info, flags: [flag] };
  const [top, bottom, left, right] = cropBox(ink, h, w, spec.crop.trim);
  const crop = image64(bottom - top + 1, right - left + 1);
  for (let r = top; r <= bottom; r++) {
    crop.data.set(ink.subarray(r * w + left, r * w + right + 1), (r - top) * crop.width);
  }
  let patch = fit(crop, spec.fit);
  if (spec.sharpen) patch = sharpen(patch, spec.sharpen);
  const placed = place(patch, spec.size, spec.center);
  return { image: finish(placed.data, spec.stretch, spec.quantize), ...info, flags: [] };
}

/** Weights of source index i in output index o: [o][{i, w}], over a 1-D area resample. */
function areaWeights(sourceLength, outLength) {
  const scale = sourceLength / outLength;
  const rows = [];
  for (let o = 0; o < outLength; o++) {
    const start = o * scale;
    const end = start + scale;
    const taps = [];
    for (let i = Math.floor(start); i < Math.min(Math.ceil(end), sourceLength); i++) {
      const w = Math.min(end, i + 1) - Math.max(start, i);
      if (w > 0) taps.push({ i, w: w / scale });
    }
    rows.push(taps);
  }
  return rows;
}

/**
 * Without a declared spec ("none", or a manifest older than the section): the whole image
 * averaged down to 28 x 28 (area filter), as luminance times alpha (alpha counts as
 * black); no cropping, centring or polarity detection. What the page did before the spec.
 */
export function plainResize(image) {
  const { grey, alpha, width, height } = greyAlpha(image);
  const cols = areaWeights(width, SIDE);
  const rows = areaWeights(height, SIDE);
  const out = new Float32Array(SIDE * SIDE);
  for (let oy = 0; oy < SIDE; oy++) {
    for (let ox = 0; ox < SIDE; ox++) {
      let sum = 0;
      for (const { i: y, w: wy } of rows[oy]) {
        for (const { i: x, w: wx } of cols[ox]) {
          const p = y * width + x;
          sum += grey[p] * (alpha ? alpha[p] : 1) * wx * wy;
        }
      }
      out[oy * SIDE + ox] = Math.min(1, Math.max(0, sum));
    }
  }
  return out;
}

/**
 * The model input of one raw image, with what was decided: `spec` is the manifest's
 * preprocess section (an object, "none", or undefined / null for none).
 * @returns {{image: Float32Array, inverted: boolean, decided: boolean, border: number|null,
 *   passthrough: boolean, flags: {code: string, message: string}[]}}
 */
export function preprocess(image, spec, options = {}) {
  const checked = spec === undefined || spec === null ? null : validateSpec(spec);
  if (checked === null || spec === NONE) {
    return {
      image: plainResize(image),
      inverted: false,
      decided: false,
      border: null,
      passthrough: false,
      flags: [],
      none: true,
    };
  }
  return prepare(image, checked, options);
}

/** The model input (784 floats in [0, 1], white ink on black) of one image; see preprocess. */
export function toModelInput(image, spec, options) {
  return preprocess(image, spec, options).image;
}

/** The JSON-able summary of a result, as Prepared.info in Python (border to 4 decimals). */
export function info(result) {
  return {
    inverted: result.inverted,
    polarity: result.none ? 'none' : result.decided ? 'auto' : 'forced',
    border: result.border === null ? null : Number(result.border.toFixed(4)),
    passthrough: result.passthrough,
    flags: result.flags.map((f) => f.code),
  };
}
