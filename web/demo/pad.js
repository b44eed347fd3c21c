// A drawing pad: white strokes on black (or, with `setInk('dark')`, black on white paper),
// reported to `onChange` while drawing (at most once per animation frame) and when a stroke
// ends.

const STROKE = 20; // px on a 280 px pad: ~2 px at 28 x 28, an MNIST stroke

export class DrawingPad {
  /** @param {HTMLCanvasElement} canvas  @param {(done: boolean) => void} onChange */
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { willReadFrequently: true });
    this.onChange = onChange;
    this.last = null;
    this.pending = false;
    this.ink = 'light';
    this.clear();
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      this.blank = false;
      this.opened = null; // drawing on an opened image draws on its preview
      this.last = this.at(e);
      this.line(this.last, this.last);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!this.last) return;
      const here = this.at(e);
      this.line(this.last, here);
      this.last = here;
    });
    const end = () => {
      if (!this.last) return;
      this.last = null;
      this.onChange(true);
    };
    canvas.addEventListener('pointerup', end);
    canvas.addEventListener('pointercancel', end);
  }

  at(event) {
    const box = this.canvas.getBoundingClientRect();
    return [
      ((event.clientX - box.left) / box.width) * this.canvas.width,
      ((event.clientY - box.top) / box.height) * this.canvas.height,
    ];
  }

  line(from, to) {
    const { ctx } = this;
    ctx.strokeStyle = this.ink === 'light' ? '#fff' : '#000';
    ctx.lineWidth = STROKE;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
    ctx.beginPath();
    ctx.moveTo(...from);
    ctx.lineTo(...to);
    ctx.stroke();
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.onChange(false);
      });
    }
  }

  /** 'light' (white ink on black) or 'dark' (black ink on white); clears the pad. */
  setInk(ink) {
    this.ink = ink;
    this.clear();
  }

  clear() {
    this.ctx.fillStyle = this.ink === 'light' ? '#000' : '#fff';
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.blank = true;
    this.opened = null;
  }

  /** Shows an opened image (scaled to fit) and hands on its own pixels until cleared. */
  showImage(image) {
    const { ctx, canvas } = this;
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    const [w, h] = [image.width * scale, image.height * scale];
    const bitmap = new OffscreenCanvas(image.width, image.height);
    bitmap.getContext('2d').putImageData(image, 0, 0);
    ctx.fillStyle = '#444';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    this.blank = false;
    this.opened = image;
  }

  /** The pixels to prepare: the opened image's own, or the pad's. */
  imageData() {
    return this.opened ?? this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
  }
}
