// From a drawing (or any RGBA image) to the model's input: 28 x 28 floats in [0, 1], white
// digit on black. This is the stand-in until the model directory declares its `preprocess`
// section: the whole image is averaged down to 28 x 28 (area filter: each output pixel is
// the mean of the source area it covers), as luminance of white ink on black (alpha counts
// as black). No cropping, centring or polarity detection: draw inside the middle 20 x 20
// (the page marks it), white on black, as MNIST digits are. The MNIST-style version
// (bounding box into 20 x 20, centre of mass at the centre, automatic polarity) replaces
// `toModelInput` here, with the same signature, and takes the manifest's section as `spec`.

export const SIDE = 28;

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
 * The model input of an RGBA image (an ImageData or anything shaped like one).
 * @param {{data: ArrayLike<number>, width: number, height: number}} image
 * @param {object} [spec] the model's preprocess section (not used by this stand-in)
 * @returns {Float32Array} 784 values in [0, 1], row-major
 */
export function toModelInput(image, spec) {
  const { data, width, height } = image;
  if (!(width > 0 && height > 0) || data.length !== width * height * 4) {
    throw new RangeError(
      `image must be RGBA of width x height x 4 values, got ${data.length} for ${width} x ${height}`,
    );
  }
  const grey = new Float32Array(width * height);
  for (let p = 0; p < grey.length; p++) {
    const r = data[4 * p],
      g = data[4 * p + 1],
      b = data[4 * p + 2],
      a = data[4 * p + 3];
    grey[p] = ((0.299 * r + 0.587 * g + 0.114 * b) / 255) * (a / 255);
  }
  const cols = areaWeights(width, SIDE);
  const rows = areaWeights(height, SIDE);
  const out = new Float32Array(SIDE * SIDE);
  for (let oy = 0; oy < SIDE; oy++) {
    for (let ox = 0; ox < SIDE; ox++) {
      let sum = 0;
      for (const { i: y, w: wy } of rows[oy]) {
        for (const { i: x, w: wx } of cols[ox]) sum += grey[y * width + x] * wx * wy;
      }
      out[oy * SIDE + ox] = Math.min(1, Math.max(0, sum));
    }
  }
  return out;
}
