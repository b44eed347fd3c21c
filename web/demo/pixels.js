// Painting model outputs (float32 in [0, 1]) onto canvases, one canvas pixel per image pixel.
// Grey level = 255 x value, rounded by Uint8ClampedArray (to nearest): the browser test reads
// these pixels back and compares them with round(255 x the Python runtime's output).

export const SIDE = 28;

/** Where tile i of a grid with `cols` columns and `gap` pixels between tiles starts. */
export function tileOrigin(i, cols, gap) {
  return [gap + (i % cols) * (SIDE + gap), gap + Math.floor(i / cols) * (SIDE + gap)];
}

/** Paints `n` 28x28 images (n x 784 floats) as a grid with `cols` columns. */
export function paintTiles(canvas, images, n, { cols = n, gap = 2 } = {}) {
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#222';
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const tile = ctx.createImageData(SIDE, SIDE);
  for (let i = 0; i < n; i++) {
    fillImageData(tile, images.subarray(i * SIDE * SIDE, (i + 1) * SIDE * SIDE));
    const [x, y] = tileOrigin(i, cols, gap);
    ctx.putImageData(tile, x, y);
  }
}

/** Paints one image filling a 28x28 canvas. */
export function paintImage(canvas, image) {
  const ctx = canvas.getContext('2d');
  const data = ctx.createImageData(SIDE, SIDE);
  fillImageData(data, image);
  ctx.putImageData(data, 0, 0);
}

function fillImageData(imageData, values) {
  const px = imageData.data;
  for (let p = 0; p < SIDE * SIDE; p++) {
    const grey = 255 * values[p];
    px[4 * p] = grey;
    px[4 * p + 1] = grey;
    px[4 * p + 2] = grey;
    px[4 * p + 3] = 255;
  }
}
