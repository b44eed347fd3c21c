// The preprocessing (src/preprocess.js) against the Python runtime's (vae_runtime.preprocess)
// on the same raw images: web/test/golden/preprocess/vectors.json, written by
// `vae-export web-golden` (export/vae_export/web_preprocess.py). See docs/web.md.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { InputError, ModelFormatError, decodeImage, loadVAE } from '../src/index.js';
import { checkManifest } from '../src/manifest.js';
import {
  SpecError,
  greyAlpha,
  info,
  plainResize,
  preprocess,
  prepare,
  validateSpec,
} from '../src/preprocess.js';
import { ARTIFACTS, GOLDEN_DIR, maxAbsDiff } from './helpers.js';

const VECTORS = JSON.parse(
  fs.readFileSync(path.join(GOLDEN_DIR, 'preprocess', 'vectors.json'), 'utf8'),
);
// Python and JS do the same float64 operations in the same order except for sums (numpy
// adds pairwise, BLAS may fuse multiply-adds): differences of ~1e-16 before the last
// step, which rounds to 255 levels. So: identical levels, except that a value within
// ~1e-13 of a level's edge may round the other way (one level, 1/255).
// Unquantized vectors (quantize: null) show the floats themselves: within 1e-6.
const ONE_LEVEL = 1 / 255 + 1e-7;
const MAX_DIFFERING_PIXELS = 2; // per image, of 784
const UNQUANTIZED = 1e-6;

function inputImage({ height, width, channels, uint8_zlib: packed }) {
  const data = new Uint8Array(zlib.inflateSync(Buffer.from(packed, 'base64')));
  return { data, width, height, channels };
}
const output = (b64) => {
  const bytes = new Uint8Array(Buffer.from(b64, 'base64'));
  return new Float32Array(bytes.buffer, 0, bytes.length / 4);
};

describe('preprocessing parity with the Python runtime', () => {
  it('has vectors of every kind', () => {
    assert.equal(VECTORS.format, 'vae-onnx-web-preprocess-vectors');
    assert.ok(VECTORS.cases.length >= 15);
    const kinds = VECTORS.cases.map((c) => `${c.input.channels}:${c.info.inverted}`);
    for (const kind of ['1:true', '1:false', '3:true', '3:false', '4:true', '4:false']) {
      assert.ok(kinds.includes(kind), `no vector with ${kind}`);
    }
  });

  let worst = 0;
  let differing = 0;
  for (const c of VECTORS.cases) {
    it(`${c.spec}: ${c.name}`, (t) => {
      const spec = validateSpec(VECTORS.specs[c.spec]);
      const got = prepare(inputImage(c.input), spec, { invert: c.invert });
      const want = output(c.output);
      assert.equal(got.image.length, want.length);
      assert.deepEqual(info(got), c.info);
      assert.ok(Math.abs(got.border - c.border) <= 1e-12, `border ${got.border} vs ${c.border}`);
      const diff = maxAbsDiff(got.image, want);
      const count = got.image.filter((v, i) => v !== want[i]).length;
      worst = Math.max(worst, diff);
      differing += count;
      t.diagnostic(`max abs difference ${diff.toExponential(1)}, ${count} pixels differ`);
      if (spec.quantize === null) {
        assert.ok(diff <= UNQUANTIZED, `differs by ${diff}`);
      } else {
        assert.ok(diff <= ONE_LEVEL, `differs by ${diff} (more than one grey level)`);
        assert.ok(count <= MAX_DIFFERING_PIXELS, `${count} pixels differ`);
      }
      if (!c.info.flags.includes('no_ink')) assert.ok(Math.max(...got.image) > 0.99);
    });
  }
  it('sums up', (t) => {
    t.diagnostic(`over every vector: max abs difference ${worst}, ${differing} pixels differ`);
  });
});

describe('preprocessing inputs and refusals', () => {
  const pad = VECTORS.cases.find((c) => c.input.channels === 4 && c.invert === 'auto');
  const spec = VECTORS.specs.mnist;

  it('takes grey, grey + alpha, RGB and RGBA of the same picture alike', () => {
    const rgba = inputImage(pad.input);
    const n = rgba.width * rgba.height;
    const pick = (channels) => ({
      ...rgba,
      channels: channels.length,
      data: Uint8Array.from(
        { length: n * channels.length },
        (_, i) => rgba.data[4 * Math.floor(i / channels.length) + channels[i % channels.length]],
      ),
    });
    const want = prepare(rgba, spec).image;
    for (const channels of [[0], [0, 3], [0, 1, 2]]) {
      assert.deepEqual(prepare(pick(channels), spec).image, want, `channels ${channels}`);
    }
  });

  it('takes uint16 and float pixels as uint8 / 255', () => {
    const c = VECTORS.cases.find((v) => v.input.channels === 1 && v.input.height > 28);
    const img = inputImage(c.input);
    const want = prepare(img, spec).image;
    const wide = Uint16Array.from(img.data, (v) => v * 257);
    assert.deepEqual(prepare({ ...img, data: wide }, spec).image, want);
    const floats = Float32Array.from(img.data, (v) => v / 255);
    assert.deepEqual(prepare({ ...img, data: floats }, spec).image, want);
  });

  it('keeps the bits of a model-sized input that is not inverted', () => {
    const c = VECTORS.cases.find((v) => v.info.passthrough && !v.info.inverted);
    const img = inputImage(c.input);
    const got = prepare(img, validateSpec(VECTORS.specs[c.spec]));
    assert.deepEqual(
      got.image,
      Float32Array.from(img.data, (v) => Math.fround(v / 255)),
    );
  });

  it('resizes plainly without a spec ("none" or an old manifest)', () => {
    const img = inputImage(pad.input);
    const plain = preprocess(img, 'none');
    assert.deepEqual(preprocess(img, undefined), plain);
    assert.equal(plain.image.length, 784);
    assert.notDeepEqual(plain.image, preprocess(img, spec).image);
  });

  const refusals = [
    [
      'a float pixel above 1',
      { data: new Float32Array(4).fill(2), width: 2, height: 2 },
      InputError,
    ],
    ['a channel count of 5', { data: new Uint8Array(20), width: 2, height: 2 }, InputError],
    ['a width of 0', { data: new Uint8Array(0), width: 0, height: 2 }, InputError],
    ['an Int32Array', { data: new Int32Array(4), width: 2, height: 2 }, InputError],
  ];
  for (const [what, image, Type] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(() => greyAlpha(image), Type);
    });
  }

  it('says that decoding image files needs a browser', async () => {
    await assert.rejects(
      decodeImage(new Uint8Array(8), 'digit.png'),
      (err) =>
        err instanceof InputError &&
        /^digit\.png: decoding image files needs a browser/.test(err.message),
    );
  });

  it('refuses a bad invert and a bad spec, naming the fault', () => {
    const img = inputImage(pad.input);
    assert.throws(() => prepare(img, spec, { invert: 'yes' }), InputError);
    const bad = [
      [{ ...spec, extra: 1 }, /unknown step\(s\) \["extra"\]/],
      [{ ...spec, fit: { ...spec.fit, box: 40 } }, /fit.box: 40 does not fit in size 28x28/],
      [
        { ...spec, background: { method: 'blocks', grid: 8, quantile: 0.5, filter: 4, rank: 0.5 } },
        /background.filter: must be odd/,
      ],
      [
        { ...spec, polarity: { ...spec.polarity, threshold: true } },
        /polarity.threshold: must be a number/,
      ],
      [{ ...spec, version: 2 }, /version: must be 1/],
      [{ ...spec, center: { method: 'mass', target: [30, 14] } }, /center.target: .* lies outside/],
      [
        { ...spec, ink: { ...spec.ink, levels: { method: 'curve' } } },
        /ink.levels.method: must be one of/,
      ],
    ];
    for (const [s, message] of bad) {
      assert.throws(
        () => preprocess(img, s),
        (err) => err instanceof SpecError && message.test(err.message),
      );
    }
  });
});

describe('preprocessing in loadVAE', () => {
  const spec = VECTORS.specs.mnist;
  const dir = path.join(ARTIFACTS, 'mnist-mlp-z20');
  let plain;
  let declared;
  before(async () => {
    plain = await loadVAE(dir, { ort, preprocess: 'none' }); // as a version 1 manifest
    declared = await loadVAE(dir, { ort, preprocess: spec }); // as a v2 manifest declaring it
  });
  after(async () => {
    await plain.release();
    await declared.release();
  });
  const cases = VECTORS.cases.filter((c) => c.spec === 'mnist');

  it('embeds raw images as the Python-prepared inputs, with the decisions', async () => {
    const images = cases.map((c) => inputImage(c.input));
    const { mu, info: got } = await declared.encode(images, { invert: 'auto' });
    const auto = cases.filter((c) => c.invert === 'auto');
    const want = new Float32Array(cases.length * 784);
    cases.forEach((c, i) => want.set(output(c.output), i * 784));
    const fromPython = await declared.embed(want, { preprocess: 'none' });
    // forced cases were prepared with their own invert: compare the automatic ones only
    cases.forEach((c, i) => {
      if (c.invert !== 'auto') return;
      assert.deepEqual(got[i], c.info, c.name);
      assert.deepEqual(
        mu.subarray(i * 20, (i + 1) * 20),
        fromPython.subarray(i * 20, (i + 1) * 20),
      );
    });
    assert.ok(auto.length >= 10);
  });

  it('decides the polarity of model-shaped arrays, keeping the bits of the others', async () => {
    const c = cases.find((v) => v.info.passthrough && !v.info.inverted);
    const digit = inputImage(c.input).data; // uint8, 784
    const negative = Uint8Array.from(digit, (v) => 255 - v);
    const { mu, info: decided } = await declared.encode(Uint8Array.from([...digit, ...negative]));
    assert.deepEqual(
      decided.map((i) => i.inverted),
      [false, true],
    );
    assert.deepEqual(mu.subarray(0, 20), await plain.embed(digit));
    const flipped = Float32Array.from(negative, (v) => Math.fround(1 - Math.fround(v / 255)));
    assert.deepEqual(mu.subarray(20), await plain.embed(flipped));
    // invert: false, and preprocess "none", take the negative as it is
    const asIs = await plain.embed(negative);
    assert.deepEqual(await declared.embed(negative, { invert: false }), asIs);
    assert.deepEqual(await declared.embed(negative, { preprocess: 'none' }), asIs);
  });

  it("uses the manifest's section by default", async () => {
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    const declared = manifest.format_version >= 2 ? manifest.preprocess : 'none';
    const vae = await loadVAE(dir, { ort });
    try {
      assert.deepEqual(vae.preprocess, declared === 'none' ? null : declared);
    } finally {
      await vae.release();
    }
  });

  it('keeps the old behaviour without a spec (version 1, or preprocess "none")', async () => {
    assert.equal(plain.preprocess, null);
    const image = inputImage(cases[0].input);
    const { info: got, mu } = await plain.encode(image);
    assert.deepEqual(got, [
      { inverted: false, polarity: 'none', border: null, passthrough: false, flags: [] },
    ]);
    assert.deepEqual(mu, await plain.embed(plainResize(image)));
  });

  it('refuses a bad spec given as an option', async () => {
    await assert.rejects(
      loadVAE(dir, { ort, preprocess: { ...spec, stretch: 'min' } }),
      (err) =>
        err instanceof InputError && /preprocess option\.stretch: must be one of/.test(err.message),
    );
    assert.throws(() => declared.prepare(new Float32Array(784), { invert: 'maybe' }), InputError);
  });
});

describe('the preprocess section of manifest.json (format version 2)', () => {
  const raw = JSON.parse(fs.readFileSync(path.join(ARTIFACTS, 'mnist-mlp-z20', 'manifest.json')));
  const check = (change) => {
    const m = structuredClone(raw);
    m.format_version = 1; // the shipped manifest as version 1, without the section
    delete m.preprocess;
    change(m);
    return checkManifest(m, 'x/manifest.json');
  };
  const spec = VECTORS.specs.mnist;

  it('reads the spec from version 2, and "none"; none before', () => {
    assert.deepEqual(
      check((m) => Object.assign(m, { format_version: 2, preprocess: spec })).preprocess,
      spec,
    );
    assert.equal(
      check((m) => Object.assign(m, { format_version: 2, preprocess: 'none' })).preprocess,
      null,
    );
    assert.equal(check(() => {}).preprocess, null);
  });

  const refusals = [
    ['a version 2 manifest without it', { format_version: 2 }, /missing required key 'preprocess'/],
    [
      'it in a version 1 manifest',
      { preprocess: spec },
      /format_version 1 has no 'preprocess' section/,
    ],
    [
      'a spec of another size',
      { format_version: 2, preprocess: { ...spec, size: [32, 32] } },
      /preprocess.size \[32,32\] must be the image's \[28,28\]/,
    ],
    [
      'an unknown step',
      { format_version: 2, preprocess: { ...spec, blur: {} } },
      /preprocess: unknown step\(s\) \["blur"\]/,
    ],
  ];
  for (const [what, change, message] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => check((m) => Object.assign(m, change)),
        (err) =>
          err instanceof ModelFormatError &&
          err.message.startsWith('x/manifest.json: ') &&
          message.test(err.message),
      );
    });
  }
});
