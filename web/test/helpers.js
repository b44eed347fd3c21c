// Shared by the Node tests: where things are, the golden files, and comparisons.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = path.resolve(WEB, '..');
export const ARTIFACTS = path.join(REPO, 'artifacts');
export const GOLDEN_DIR = path.join(WEB, 'test', 'golden');

/** Bounds against the same graph in Python, per variant (see docs/web.md). */
export const TOLERANCE = { fp32: 1e-5, int8: 1e-4, fp16: 1e-3 };

function fromBase64(text, Type) {
  const bytes = Buffer.from(text, 'base64');
  const copy = new Uint8Array(bytes); // own, aligned buffer
  return new Type(copy.buffer, 0, copy.length / Type.BYTES_PER_ELEMENT);
}

const asF32 = (text) => fromBase64(text, Float32Array);

/** Every golden file, decoded: {model, latentDim, images (Uint8Array), latents, outputs, ...}. */
export function loadGolden() {
  return fs
    .readdirSync(GOLDEN_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const g = JSON.parse(fs.readFileSync(path.join(GOLDEN_DIR, file), 'utf8'));
      const outputs = Object.fromEntries(
        Object.entries(g.outputs).map(([variant, o]) => [
          variant,
          { mu: asF32(o.mu), logvar: asF32(o.logvar), xHat: asF32(o.x_hat) },
        ]),
      );
      return {
        model: g.model,
        dir: path.join(ARTIFACTS, g.model),
        latentDim: g.latent_dim,
        files: g.files,
        images: fromBase64(g.images.uint8, Uint8Array),
        latents: asF32(g.latents),
        outputs,
        sample: Object.fromEntries(Object.entries(g.sample).map(([k, v]) => [k, asF32(v)])),
        generate: {
          seed: g.generate.seed,
          count: g.generate.count,
          z: asF32(g.generate.z),
          xHat: asF32(g.generate.x_hat),
        },
      };
    });
}

/** The largest |a - b| (Infinity if the lengths differ). */
export function maxAbsDiff(a, b) {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return Number.isNaN(worst) ? Infinity : worst;
}
