// The latent plane of a 2-D model: the test set's means as a coloured scatter, a point the
// user drags (decoded as it moves), and a ring where the drawn digit lands.

export const EXTENT = 4; // the plane shows z in [-4, 4]^2; 99% of MNIST test means lie inside
// Tableau's ten colours, one per class.
export const COLOURS = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
];

export class LatentPlane {
  /** @param {HTMLCanvasElement} canvas  @param {(z: [number, number]) => void} onMove */
  constructor(canvas, onMove) {
    this.canvas = canvas;
    this.point = [0, 0];
    this.ring = null;
    this.scatter = null;
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      this.moveTo(this.toLatent(e), onMove);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (canvas.hasPointerCapture(e.pointerId)) this.moveTo(this.toLatent(e), onMove);
    });
    this.draw();
  }

  /** Canvas pixel (x, y) -> z; y grows upwards in z. */
  toLatent(event) {
    const box = this.canvas.getBoundingClientRect();
    const u = (event.clientX - box.left) / box.width;
    const v = (event.clientY - box.top) / box.height;
    const clamp = (t) => Math.min(EXTENT, Math.max(-EXTENT, t));
    return [clamp((2 * u - 1) * EXTENT), clamp((1 - 2 * v) * EXTENT)];
  }

  /** z -> canvas pixel. */
  toPixel([z0, z1]) {
    const { width, height } = this.canvas;
    return [((z0 + EXTENT) / (2 * EXTENT)) * width, ((EXTENT - z1) / (2 * EXTENT)) * height];
  }

  moveTo(z, onMove) {
    this.point = z;
    this.draw();
    onMove(z);
  }

  /** Draws the points {x, y, labels} once into an offscreen layer. */
  setScatter({ x, y, labels }) {
    const layer = document.createElement('canvas');
    layer.width = this.canvas.width;
    layer.height = this.canvas.height;
    const ctx = layer.getContext('2d');
    ctx.globalAlpha = 0.55;
    for (let i = 0; i < x.length; i++) {
      const [px, py] = this.toPixel([x[i], y[i]]);
      ctx.fillStyle = COLOURS[labels.charCodeAt(i) - 48];
      ctx.fillRect(px - 1, py - 1, 2, 2);
    }
    this.scatter = layer;
    this.draw();
  }

  setRing(z) {
    this.ring = z;
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext('2d');
    const { width, height } = this.canvas;
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, width, height);
    ctx.strokeStyle = '#333';
    ctx.beginPath();
    ctx.moveTo(width / 2, 0);
    ctx.lineTo(width / 2, height);
    ctx.moveTo(0, height / 2);
    ctx.lineTo(width, height / 2);
    ctx.stroke();
    if (this.scatter) ctx.drawImage(this.scatter, 0, 0);
    if (this.ring) {
      const [rx, ry] = this.toPixel(this.ring);
      ctx.strokeStyle = '#ff0';
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.arc(rx, ry, 8, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.lineWidth = 1;
    }
    const [px, py] = this.toPixel(this.point);
    ctx.fillStyle = '#fff';
    ctx.beginPath();
    ctx.arc(px, py, 5, 0, 2 * Math.PI);
    ctx.fill();
  }
}
