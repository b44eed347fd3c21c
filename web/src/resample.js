// Separable resampling with exactly specified kernels (docs/preprocessing.md), as
// runtime/vae_runtime/resample.py computes them: the same float64 operations in the same
// order, so the results agree bit for bit.
//
// - area: output pixel i of an axis n -> m covers the input interval [i n/m, (i+1) n/m)
//   and is the mean of the input over it (pixels as constant unit intervals).
// - linear: output pixel i samples the input at x = (i + 0.5) n/m - 0.5, clamped to
//   [0, n - 1], linear between pixels floor(x) and floor(x) + 1.

/** A float64 image: `data` row-major, `height` x `width`. */
export function image64(height, width, data = new Float64Array(height * width)) {
  return { data, height, width };
}

/** `img` resized to height x width, each axis with `down` when it shrinks, `up` when it
 * grows; an axis that keeps its length is left alone. Rows (axis 0) first, as Python. */
export function resize(img, height, width, down = 'area', up = 'linear') {
  let out = img;
  if (height !== out.height) out = resampleAxis(out, height, 0, height < out.height ? down : up);
  if (width !== out.width) out = resampleAxis(out, width, 1, width < out.width ? down : up);
  return out;
}

/** Taps of one axis n -> m, in the order Python adds them: output i reads input index
 * j[i * count + t] with weight w[i * count + t], t < count (zero weights included). */
function areaTaps(n, m) {
  const scale = n / m;
  const count = Math.ceil(scale) + 1;
  const j = new Int32Array(m * count);
  const w = new Float64Array(m * count);
  for (let i = 0; i < m; i++) {
    const lo = (i * n) / m;
    const hi = ((i + 1) * n) / m;
    const first = Math.floor(lo);
    for (let t = 0; t < count; t++) {
      const at = first + t;
      w[i * count + t] = at >= n ? 0 : Math.max(Math.min(at + 1, hi) - Math.max(at, lo), 0) / scale;
      j[i * count + t] = Math.min(at, n - 1);
    }
  }
  return { j, w, count };
}

function linearTaps(n, m) {
  const taps = [];
  for (let i = 0; i < m; i++) {
    const x = Math.min(Math.max((i + 0.5) * (n / m) - 0.5, 0), n - 1);
    const j = n > 1 ? Math.min(Math.floor(x), n - 2) : 0;
    const t = x - j;
    taps.push({ j, upper: Math.min(j + 1, n - 1), t });
  }
  return taps;
}

function resampleAxis(img, m, axis, kind) {
  const { height, width, data } = img;
  const n = axis === 0 ? height : width;
  const out = axis === 0 ? image64(m, width) : image64(height, m);
  // Along axis 0, input row j starts at j * width and rows step by 1; along axis 1, input
  // column j starts at j and steps by width. Output likewise.
  const [across, inStep, inStride] = axis === 0 ? [width, width, 1] : [height, 1, width];
  const [outStep, outStride] = axis === 0 ? [width, 1] : [1, m];
  const o = out.data;
  if (kind === 'area') {
    const { j, w, count } = areaTaps(n, m);
    for (let i = 0; i < m; i++) {
      for (let k = 0; k < across; k++) {
        let acc = 0;
        for (let t = i * count; t < (i + 1) * count; t++)
          acc += w[t] * data[j[t] * inStep + k * inStride];
        o[i * outStep + k * outStride] = acc;
      }
    }
  } else if (kind === 'linear') {
    const taps = linearTaps(n, m);
    for (let i = 0; i < m; i++) {
      const { j, upper, t } = taps[i];
      for (let k = 0; k < across; k++) {
        const a = data[j * inStep + k * inStride];
        const b = data[upper * inStep + k * inStride];
        o[i * outStep + k * outStride] = a * (1 - t) + b * t;
      }
    }
  } else {
    throw new RangeError(`unknown resampling filter ${JSON.stringify(kind)}`);
  }
  return out;
}
