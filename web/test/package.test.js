// The package against the Python runtime: golden files from `vae-export web-golden`, for
// every shipped model and variant, run through onnxruntime-node.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { InputError, createRandom, loadVAE } from '../src/index.js';
import { TOLERANCE, loadGolden, maxAbsDiff } from './helpers.js';

const GOLDEN = loadGolden();

it('has a golden file for every shipped model', async () => {
  const fs = await import('node:fs');
  const { ARTIFACTS } = await import('./helpers.js');
  const shipped = fs
    .readdirSync(ARTIFACTS)
    .filter((d) => fs.existsSync(`${ARTIFACTS}/${d}/manifest.json`));
  assert.deepEqual(GOLDEN.map((g) => g.model).sort(), shipped.sort());
});

for (const golden of GOLDEN) {
  describe(golden.model, () => {
    for (const [variant, expected] of Object.entries(golden.outputs)) {
      describe(variant, () => {
        let vae;
        before(async () => {
          vae = await loadVAE(golden.dir, { ort, variant: variant === 'fp32' ? null : variant });
        });
        after(() => vae.release());
        const bound = TOLERANCE[variant];

        it(`encodes test images as Python does (max abs <= ${bound})`, async () => {
          const { mu, logvar } = await vae.encode(golden.images);
          assert.equal(mu.length, (golden.images.length / 784) * golden.latentDim);
          assert.ok(
            maxAbsDiff(mu, expected.mu) <= bound,
            `mu differs by ${maxAbsDiff(mu, expected.mu)}`,
          );
          assert.ok(
            maxAbsDiff(logvar, expected.logvar) <= bound,
            `logvar differs by ${maxAbsDiff(logvar, expected.logvar)}`,
          );
        });

        it(`decodes fixed latents as Python does (max abs <= ${bound})`, async () => {
          const x = await vae.decode(golden.latents);
          assert.equal(x.length, (golden.latents.length / golden.latentDim) * 784);
          assert.ok(
            maxAbsDiff(x, expected.xHat) <= bound,
            `x_hat differs by ${maxAbsDiff(x, expected.xHat)}`,
          );
          if (variant !== 'fp32') {
            // and it ran the variant's graph, not the default one
            assert.ok(maxAbsDiff(x, expected.xHat) < maxAbsDiff(x, golden.outputs.fp32.xHat));
          }
        });
      });
    }

    describe('fp32 semantics', () => {
      let vae;
      before(async () => {
        vae = await loadVAE(golden.dir, { ort });
      });
      after(() => vae.release());

      it('draws the seeded normals the Python re-implementation draws', () => {
        const z = createRandom(golden.generate.seed).normals(golden.generate.z.length);
        assert.deepEqual(z, golden.generate.z);
      });

      it('generates from a seed what Python decodes from the same latents', async () => {
        const x = await vae.generate(golden.generate.count, { seed: golden.generate.seed });
        assert.ok(maxAbsDiff(x, golden.generate.xHat) <= TOLERANCE.fp32);
      });

      it('reparameterizes as Python does, both logvar clamps included', () => {
        const { mu, logvar, eps, z } = golden.sample;
        const got = vae.sample(mu, logvar, { eps });
        for (let i = 0; i < z.length; i++) {
          assert.ok(
            Math.abs(got[i] - z[i]) <= 1e-6 * Math.max(1, Math.abs(z[i])),
            `z[${i}] = ${got[i]}, Python ${z[i]}`,
          );
        }
      });

      it('gives the same results in chunks as in one batch', async () => {
        const chunked = await loadVAE(golden.dir, { ort, batchSize: 2 });
        try {
          assert.deepEqual(await chunked.decode(golden.latents), await vae.decode(golden.latents));
          assert.deepEqual(await chunked.encode(golden.images), await vae.encode(golden.images));
        } finally {
          await chunked.release();
        }
      });
    });
  });
}

describe('API', () => {
  const golden = GOLDEN.find((g) => g.model === 'mnist-mlp-z20');
  let vae;
  before(async () => {
    vae = await loadVAE(golden.dir, { ort });
  });
  after(() => vae.release());
  const image = (i) =>
    Float32Array.from(golden.images.subarray(i * 784, (i + 1) * 784), (v) => v / 255);

  it('interpolates from decode(mu(a)) to decode(mu(b))', async () => {
    const [a, b] = [image(0), image(1)];
    const strip = await vae.interpolate(a, b, 5);
    assert.equal(strip.length, 5 * 784);
    assert.deepEqual(strip.subarray(0, 784), await vae.reconstruct(a));
    assert.deepEqual(strip.subarray(4 * 784), await vae.reconstruct(b));
  });

  it('takes uint8 pixels as value / 255', async () => {
    const fromBytes = await vae.embed(golden.images);
    const fromFloats = await vae.embed(Float32Array.from(golden.images, (v) => v / 255));
    assert.deepEqual(fromBytes, fromFloats);
  });

  it('returns empty results for n = 0', async () => {
    assert.equal((await vae.decode(new Float32Array(0), 0)).length, 0);
    assert.equal((await vae.encode(new Float32Array(0), 0)).mu.length, 0);
  });

  it('samples the same z for the same seed, and different z for another', () => {
    const mu = new Float32Array(2 * 20);
    const logvar = new Float32Array(2 * 20);
    assert.deepEqual(vae.sample(mu, logvar, { seed: 3 }), vae.sample(mu, logvar, { seed: 3 }));
    assert.notDeepEqual(vae.sample(mu, logvar, { seed: 3 }), vae.sample(mu, logvar, { seed: 4 }));
  });

  const refusals = [
    ['pixels of the wrong length', () => vae.encode(new Float32Array(700), 1), /expected n x 784/],
    [
      'n that does not divide',
      () => vae.encode(new Float32Array(785)),
      /n \(images\) must be an integer/,
    ],
    ['pixels above 1', () => vae.encode(new Float32Array(784).fill(2)), /must lie in \[0, 1\]/],
    ['NaN pixels', () => vae.encode(new Float32Array(784).fill(NaN)), /NaN or infinite/],
    ['latents of the wrong width', () => vae.decode(new Float32Array(21), 1), /expected n x 20/],
    ['infinite latents', () => vae.decode(new Float32Array(20).fill(Infinity)), /NaN or infinite/],
    ['a non-array', () => vae.decode('zzz'), /must be a Float32Array/],
    [
      'eps and a seed',
      async () =>
        vae.sample(new Float32Array(20), new Float32Array(20), {
          eps: new Float32Array(20),
          seed: 1,
        }),
      /not both/,
    ],
    ['a negative seed', () => vae.generate(2, { seed: -1 }), /seed must be an integer/],
    [
      'one interpolation step',
      () => vae.interpolate(image(0), image(1), 1),
      /steps must be an integer >= 2/,
    ],
  ];
  for (const [what, call, message] of refusals) {
    it(`refuses ${what} with an InputError`, async () => {
      await assert.rejects(
        async () => call(),
        (err) => err instanceof InputError && message.test(err.message),
      );
    });
  }
});
