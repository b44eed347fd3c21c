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

/** Taps of one axis n -> m: for each output i, [{j, w}] in the order Python adds them. */
function areaTaps(n, m) {
  const scale = n / m;
  const extra = Math.ceil(scale) + 1;
  const taps = [];
  for (let i = 0; i < m; i++) {
    const lo = (i * n) / m;
    const hi = ((i + 1) * n) / m;
    const first = Math.floor(lo);
    const row = [];
    for (let t = 0; t < extra; t++) {
      const j = first + t;
      let w = Math.max(Math.min(j + 1, hi) - Math.max(j, lo), 0) / scale;
      if (j >= n) w = 0;
      row.push({ j: Math.min(j, n - 1), w });
    }
    taps.push(row);
  }
  return taps;
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
  // Element (o, k) of the output along the axis, k running across it.
  const across = axis === 0 ? width : height;
  const at = axis === 0 ? (j, k) => data[j * width + k] : (j, k) => data[k * width + j];
  const put =
    axis === 0
      ? (o, k, v) => (out.data[o * width + k] = v)
      : (o, k, v) => (out.data[k * m + o] = v);
  if (kind === 'area') {
    const taps = areaTaps(n, m);
    for (let o = 0; o < m; o++) {
      for (let k = 0; k < across; k++) {
        let acc = 0;
        for (const { j, w } of taps[o]) acc += w * at(j, k);
        put(o, k, acc);
      }
    }
  } else if (kind === 'linear') {
    const taps = linearTaps(n, m);
    for (let o = 0; o < m; o++) {
      const { j, upper, t } = taps[o];
      for (let k = 0; k < across; k++) put(o, k, at(j, k) * (1 - t) + at(upper, k) * t);
    }
  } else {
    throw new RangeError(`unknown resampling filter ${JSON.stringify(kind)}`);
  }
  return out;
}
