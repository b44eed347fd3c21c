// The package's seeded PRNG. JavaScript cannot reproduce numpy's PCG64 + ziggurat stream, so
// a seed here does NOT give the latents `VAE.generate(seed=...)` gives in Python. What it does
// give is the same numbers on every JS engine, and vae_export/web_assets.py re-implements it
// bit for bit, so the golden files check JS generation against the Python runtime's decoder.
//
// Definition (keep in step with web_assets.js_normals):
//   state: four uint32 words from splitmix32(seed) called four times;
//   next: xoshiro128**;
//   uniform in (0, 1): (a >>> 5) * 2^26 + (b >>> 6) + 0.5, divided by 2^53 (two draws a, b);
//   normals: Box-Muller on two uniforms u1, u2: r = sqrt(-2 ln u1), theta = 2 pi u2,
//            r cos(theta) then r sin(theta); rounded to float32.

import { InputError } from './errors.js';

const TWO_POW_26 = 67108864;
const TWO_POW_53 = 9007199254740992;

function splitmix32(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
}

const rotl = (x, k) => ((x << k) | (x >>> (32 - k))) >>> 0;

/**
 * A seeded source of standard normals (see the definition above).
 * @param {number} seed integer in [0, 2^32)
 */
export function createRandom(seed) {
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new InputError(`seed must be an integer in [0, 2^32), got ${seed}`);
  }
  const init = splitmix32(seed);
  const s = new Uint32Array([init(), init(), init(), init()]);
  const nextU32 = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  const uniform = () => {
    const a = nextU32() >>> 5;
    const b = nextU32() >>> 6;
    return (a * TWO_POW_26 + b + 0.5) / TWO_POW_53;
  };
  let spare = null;
  return {
    /** One standard normal, float32-rounded. */
    normal() {
      if (spare !== null) {
        const value = spare;
        spare = null;
        return value;
      }
      const r = Math.sqrt(-2 * Math.log(uniform()));
      const theta = 2 * Math.PI * uniform();
      spare = Math.fround(r * Math.sin(theta));
      return Math.fround(r * Math.cos(theta));
    },
    /** `count` standard normals as a Float32Array. */
    normals(count) {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = this.normal();
      return out;
    },
  };
}

/** A seed from the platform's entropy (WebCrypto), for calls that give none. */
export function entropySeed() {
  return globalThis.crypto.getRandomValues(new Uint32Array(1))[0];
}
