// The page in Debian's Chromium (playwright-core), served by `vae-run web` on 127.0.0.1:
// canvas pixels against the Python runtime's outputs, a scripted drag, scripted drawings,
// the interpolation strip, WebCrypto refusing altered bytes, and a screenshot.
// Skipped, saying why, where Chromium or the dev venv is missing, unless
// VAE_ONNX_WEB_REQUIRED=1 (CI), where that is a failure.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { loadVAE } from '../src/index.js';
import { prepare } from '../src/preprocess.js';
import { launchBrowser, missingForBrowser, openDemo, startServer } from './browser-helpers.js';
import { ARTIFACTS, GOLDEN_DIR, TOLERANCE, WEB, loadGolden, maxAbsDiff } from './helpers.js';
import { classify, heartOf, loadScatter } from './scatter.js';

const missing = missingForBrowser();
const required = process.env.VAE_ONNX_WEB_REQUIRED === '1';
const skip =
  missing.length && !required ? `needs ${missing.join(' and ')} (see docs/web.md)` : false;
if (skip) console.log(`web tests: SKIPPED the browser part: ${skip}`);
const SCREENSHOT =
  process.env.VAE_ONNX_WEB_SCREENSHOT ?? path.join(WEB, 'test-results', 'web-demo.png');

/** Grey levels (the R channel) of a w x h region of canvas `id`. */
function readCanvas(page, id, x = 0, y = 0, w = 28, h = 28) {
  return page.evaluate(
    ([id, x, y, w, h]) => {
      const data = document.getElementById(id).getContext('2d').getImageData(x, y, w, h).data;
      return Array.from({ length: w * h }, (_, i) => data[4 * i]);
    },
    [id, x, y, w, h],
  );
}

/** The largest |grey - round(255 x expected)| over one 28x28 image. */
function greyDiff(grey, expected) {
  let worst = 0;
  for (let i = 0; i < 784; i++)
    worst = Math.max(worst, Math.abs(grey[i] - Math.round(255 * expected[i])));
  return worst;
}

async function box(page, id) {
  return page.locator(`#${id}`).boundingBox();
}

/** Draws polylines given in the pad's own 280 x 280 coordinates, with the mouse. */
async function draw(page, strokes) {
  const pad = await box(page, 'pad');
  const at = ([x, y]) => [pad.x + (x / 280) * pad.width, pad.y + (y / 280) * pad.height];
  for (const stroke of strokes) {
    await page.mouse.move(...at(stroke[0]));
    await page.mouse.down();
    for (const point of stroke.slice(1)) await page.mouse.move(...at(point), { steps: 4 });
    await page.mouse.up();
  }
  await page.evaluate(() => window.vaeDemo.settle());
}

const ellipse = (cx, cy, rx, ry) =>
  Array.from({ length: 41 }, (_, i) => [
    cx + rx * Math.sin((2 * Math.PI * i) / 40),
    cy - ry * Math.cos((2 * Math.PI * i) / 40),
  ]);
const DIGITS = {
  0: [ellipse(140, 140, 55, 82)],
  1: [
    [
      [150, 55],
      [135, 225],
    ],
  ],
  7: [
    [
      [80, 65],
      [200, 65],
      [125, 225],
    ],
  ],
};

// Small digits in the pad's top-left corner: shrunk whole, they would be a few pixels wide.
const SMALL_SEVEN = [
  [
    [30, 35],
    [110, 35],
    [65, 130],
  ],
];
const SMALL_ZERO = [ellipse(75, 80, 32, 50)];
const PREPROCESS_VECTORS = JSON.parse(
  fs.readFileSync(path.join(GOLDEN_DIR, 'preprocess', 'vectors.json'), 'utf8'),
);

/** Rows and columns spanned by the ink of a 28x28 image, and its centre of mass. */
function inkBox(image) {
  let top = 28;
  let bottom = -1;
  let left = 28;
  let right = -1;
  let mass = 0;
  let cy = 0;
  let cx = 0;
  for (let r = 0; r < 28; r++) {
    for (let c = 0; c < 28; c++) {
      const v = image[r * 28 + c];
      if (v <= 0) continue;
      [top, bottom, left, right] = [
        Math.min(top, r),
        Math.max(bottom, r),
        Math.min(left, c),
        Math.max(right, c),
      ];
      mass += v;
      cy += v * r;
      cx += v * c;
    }
  }
  return { rows: bottom - top + 1, cols: right - left + 1, cy: cy / mass, cx: cx / mass };
}

describe('the page in Chromium', { skip }, () => {
  let server;
  let browser;
  let page;
  let errors;
  let z2;
  const scatter = loadScatter();
  const golden = Object.fromEntries(loadGolden().map((g) => [g.model, g]));

  before(async () => {
    assert.deepEqual(missing, [], `VAE_ONNX_WEB_REQUIRED=1 but missing: ${missing.join(', ')}`);
    server = await startServer();
    browser = await launchBrowser();
    ({ page, errors } = await openDemo(browser.context, server.url));
    z2 = await loadVAE(path.join(ARTIFACTS, 'mnist-conv-z2'), { ort });
  });

  after(async () => {
    await z2?.release();
    await browser?.close();
    await server?.stop();
  });

  it('says what it runs on and how long loading took', async () => {
    const status = await page.textContent('#status');
    assert.match(
      status,
      /onnxruntime-web 1\.\d+\.\d+ wasm, 1 thread · mnist-conv-z20 fp32 loaded in \d+\.\d\d s · first image at \d+\.\d\d s · mnist-conv-z2 loaded in .*10000 test means/,
    );
    assert.deepEqual(errors, []);
  });

  it("paints the sample grid as round(255 x Python's decode) of the seeded latents", async () => {
    const g = golden['mnist-conv-z20'];
    const { grid, seed } = await page.evaluate(() => ({
      grid: window.vaeDemo.geometry.grid,
      seed: window.vaeDemo.state.seed,
    }));
    assert.equal(seed, g.generate.seed);
    for (let i = 0; i < g.generate.count; i++) {
      const x = grid.gap + (i % grid.cols) * (28 + grid.gap);
      const y = grid.gap + Math.floor(i / grid.cols) * (28 + grid.gap);
      const grey = await readCanvas(page, 'grid', x, y);
      const expected = g.generate.xHat.subarray(i * 784, (i + 1) * 784);
      assert.ok(
        greyDiff(grey, expected) <= 1,
        `tile ${i}: ${greyDiff(grey, expected)} grey levels off`,
      );
      assert.ok(Math.max(...grey) > 200, `tile ${i} holds no digit`);
    }
  });

  it("paints the plane's starting point, z = (0, 0), as Python decodes it", async () => {
    const g = golden['mnist-conv-z2'];
    assert.deepEqual(Array.from(g.latents.subarray(0, 2)), [0, 0]);
    const grey = await readCanvas(page, 'decoded');
    assert.ok(greyDiff(grey, g.outputs.fp32.xHat.subarray(0, 784)) <= 1);
  });

  for (const label of [0, 1, 7]) {
    it(`decodes a ${label} where the point is dragged into the 2-D plane's cluster of ${label}s`, async () => {
      const target = heartOf(scatter, label);
      const plane = await box(page, 'plane');
      const toPage = ([a, b]) => [
        plane.x + ((a + 4) / 8) * plane.width,
        plane.y + ((4 - b) / 8) * plane.height,
      ];
      const start = await page.evaluate(() => window.vaeDemo.state.planeZ);
      await page.mouse.move(...toPage(start));
      await page.mouse.down();
      await page.mouse.move(...toPage(target), { steps: 10 });
      await page.mouse.up();
      await page.evaluate(() => window.vaeDemo.settle());
      const z = await page.evaluate(() => window.vaeDemo.state.planeZ);
      assert.ok(
        Math.hypot(z[0] - target[0], z[1] - target[1]) < 0.05,
        `point at ${z}, dragged to ${target}`,
      );
      // The digit on screen, read back and embedded again, lands among the test set's <label>s.
      const grey = await readCanvas(page, 'decoded');
      const mu = await z2.embed(
        Float32Array.from(grey, (v) => v / 255),
        1,
      );
      assert.equal(classify(scatter, mu), label, `decoded digit embeds at ${mu}`);
    });
  }

  for (const label of [0, 1, 7]) {
    it(`places a drawn ${label} among the ${label}s and shows the model input`, async () => {
      await page.click('#clear');
      await draw(page, DIGITS[label]);
      const drawn = await page.evaluate(() => ({
        ...window.vaeDemo.state.drawn,
        input: Array.from(window.vaeDemo.state.drawn.input),
      }));
      assert.equal(classify(scatter, drawn.mu2), label, `drawn ${label} embeds at ${drawn.mu2}`);
      const shown = await readCanvas(page, 'input');
      assert.ok(greyDiff(shown, drawn.input) <= 1);
      const mu = await z2.embed(Float32Array.from(drawn.input), 1); // the page's z2 = Node's z2
      assert.ok(Math.abs(mu[0] - drawn.mu2[0]) < 1e-5 && Math.abs(mu[1] - drawn.mu2[1]) < 1e-5);
    });
  }

  it("interpolates between two drawn digits, from the first one's reconstruction to the second's", async () => {
    await page.click('#clear');
    await draw(page, DIGITS[1]);
    await page.click('#set-a');
    await page.click('#clear');
    await draw(page, DIGITS[0]);
    await page.click('#set-b');
    await page.evaluate(() => window.vaeDemo.settle());
    const { a, b } = await page.evaluate(() => ({
      a: Array.from(window.vaeDemo.state.a),
      b: Array.from(window.vaeDemo.state.b),
    }));
    const main = await loadVAE(path.join(ARTIFACTS, 'mnist-conv-z20'), { ort });
    try {
      for (const [i, image] of [
        [0, a],
        [9, b],
      ]) {
        const expected = await main.reconstruct(Float32Array.from(image), 1);
        const grey = await readCanvas(page, 'strip', 2 + i * 30, 2);
        assert.ok(
          greyDiff(grey, expected) <= 1,
          `strip frame ${i}: ${greyDiff(grey, expected)} grey levels off`,
        );
      }
    } finally {
      await main.release();
    }
  });

  for (const model of ['mnist-conv-z20', 'mnist-conv-z2']) {
    it(`runs every variant of ${model} in onnxruntime-web as Python runs it`, async (t) => {
      const g = golden[model];
      for (const [variant, expected] of Object.entries(g.outputs)) {
        const got = await page.evaluate(
          async ([model, variant, images, latents]) => {
            const { loadVAE } = await import('/src/index.js');
            const ort = await import('/vendor/onnxruntime-web/ort.wasm.min.mjs');
            const vae = await loadVAE(`/models/${model}/`, { ort, variant });
            try {
              const { mu, logvar } = await vae.encode(Uint8Array.from(images));
              const xHat = await vae.decode(Float32Array.from(latents));
              return { mu: Array.from(mu), logvar: Array.from(logvar), xHat: Array.from(xHat) };
            } finally {
              await vae.release();
            }
          },
          [model, variant === 'fp32' ? null : variant, Array.from(g.images), Array.from(g.latents)],
        );
        for (const key of ['mu', 'logvar', 'xHat']) {
          const diff = maxAbsDiff(Float32Array.from(got[key]), expected[key]);
          assert.ok(diff <= TOLERANCE[variant], `${variant} ${key} differs by ${diff}`);
          t.diagnostic(`${variant} ${key}: max abs difference ${diff.toExponential(1)}`);
        }
      }
    });
  }

  it("tells how the pad is read: by the model's declared preprocessing, or shrunk whole", async () => {
    const declared = await page.evaluate(() => window.vaeDemo.main.preprocess);
    const manifest = JSON.parse(
      fs.readFileSync(path.join(ARTIFACTS, 'mnist-conv-z20', 'manifest.json'), 'utf8'),
    );
    const spec = manifest.format_version >= 2 ? manifest.preprocess : 'none';
    assert.deepEqual(declared, spec === 'none' ? null : spec);
    const active = declared !== null;
    assert.match(
      await page.textContent('#pad-note'),
      active ? /Draw anywhere, at any size/ : /No preprocessing declared/,
    );
    const polarity = await page.evaluate(() => window.vaeDemo.state.drawn.info.polarity);
    assert.equal(polarity, active ? 'auto' : 'none');
  });

  for (const [label, ink, strokes] of [
    [7, 'light', SMALL_SEVEN],
    [0, 'dark', SMALL_ZERO],
  ]) {
    it(`prepares a small ${label} drawn ${ink === 'light' ? 'white on black' : 'black on white'} in a corner by the declared spec`, async () => {
      const spec = PREPROCESS_VECTORS.specs.mnist; // the spec of the MNIST models, from Python
      await page.evaluate(
        ([spec, ink]) => {
          window.vaeDemo.setPreprocess(spec);
          window.vaeDemo.pad.setInk(ink);
        },
        [spec, ink],
      );
      await draw(page, strokes);
      const { drawn, pad } = await page.evaluate(() => {
        const { drawn } = window.vaeDemo.state;
        const image = window.vaeDemo.pad.imageData();
        let text = ''; // the pad's RGBA bytes as base64: 300 kB cross faster than a list
        for (let i = 0; i < image.data.length; i += 8192) {
          text += String.fromCharCode(...image.data.subarray(i, i + 8192));
        }
        return {
          drawn: { ...drawn, input: Array.from(drawn.input) },
          pad: { width: image.width, height: image.height, base64: btoa(text) },
        };
      });
      // What the page shows is what the package makes of the pad's pixels (the package is
      // checked against Python on pad-like drawings in preprocess.test.js) ...
      const data = new Uint8ClampedArray(Buffer.from(pad.base64, 'base64'));
      const expected = prepare({ width: pad.width, height: pad.height, data }, spec);
      assert.deepEqual(Float32Array.from(drawn.input), expected.image);
      assert.ok(greyDiff(await readCanvas(page, 'input'), expected.image) <= 1);
      assert.equal(drawn.info.inverted, ink === 'dark');
      assert.match(
        await page.textContent('#decision'),
        ink === 'dark'
          ? /dark ink on light paper \(inverted\), decided/
          : /light ink on dark paper, decided/,
      );
      assert.match(await page.textContent('#pad-note'), /Draw anywhere, at any size/);
      // ... which is MNIST-shaped: the ink's box 20 pixels on its longer side, its centre of
      // mass at (14, 14) within half a pixel, and it lands among the label's test digits.
      const { rows, cols, cy, cx } = inkBox(drawn.input);
      assert.equal(Math.max(rows, cols), 20, `ink box ${rows} x ${cols}`);
      assert.ok(Math.abs(cy - 14) <= 0.5 && Math.abs(cx - 14) <= 0.5, `centre ${cy}, ${cx}`);
      assert.equal(classify(scatter, drawn.mu2), label, `drawn ${label} embeds at ${drawn.mu2}`);
      await page.evaluate(() => {
        window.vaeDemo.setPreprocess(undefined);
        window.vaeDemo.pad.setInk('light');
      });
    });
  }

  for (const name of ['grey scan, dark on light', 'RGB scan with a colour cast, light on dark']) {
    it(`opens a PNG file of the vectors' ${name} and prepares it exactly as Python`, async () => {
      const c = PREPROCESS_VECTORS.cases.find((v) => v.name === name);
      const { width, height, channels } = c.input;
      const raw = zlib.inflateSync(Buffer.from(c.input.uint8_zlib, 'base64'));
      const rgba = new Uint8Array(width * height * 4);
      for (let p = 0; p < width * height; p++) {
        for (let k = 0; k < 3; k++) rgba[4 * p + k] = raw[p * channels + (channels === 1 ? 0 : k)];
        rgba[4 * p + 3] = 255;
      }
      // The browser encodes the PNG (lossless); the page decodes it through decodeImage.
      const png = await page.evaluate(
        async ([data, width, height]) => {
          const canvas = new OffscreenCanvas(width, height);
          const image = new ImageData(Uint8ClampedArray.from(data), width, height);
          canvas.getContext('2d').putImageData(image, 0, 0);
          const blob = await canvas.convertToBlob({ type: 'image/png' });
          return Array.from(new Uint8Array(await blob.arrayBuffer()));
        },
        [Array.from(rgba), width, height],
      );
      await page.evaluate(
        (spec) => window.vaeDemo.setPreprocess(spec),
        PREPROCESS_VECTORS.specs.mnist,
      );
      await page.setInputFiles('#open', {
        name: `${name}.png`,
        mimeType: 'image/png',
        buffer: Buffer.from(png),
      });
      await page.waitForFunction((n) => window.vaeDemo.state.opened === n, `${name}.png`);
      await page.evaluate(() => window.vaeDemo.settle());
      const drawn = await page.evaluate(() => ({
        input: Array.from(window.vaeDemo.state.drawn.input),
        info: window.vaeDemo.state.drawn.info,
      }));
      const want = new Float32Array(new Uint8Array(Buffer.from(c.output, 'base64')).buffer);
      assert.deepEqual(Float32Array.from(drawn.input), want);
      assert.deepEqual(drawn.info, c.info);
      await page.evaluate(() => {
        window.vaeDemo.setPreprocess(undefined);
        window.vaeDemo.pad.clear();
      });
    });
  }

  it('refuses bytes altered in transit (sha256 by WebCrypto)', async () => {
    const message = await page.evaluate(async () => {
      const { loadVAE } = await import('/src/index.js');
      const ort = await import('/vendor/onnxruntime-web/ort.wasm.min.mjs');
      const altered = async (url) => {
        const response = await fetch(url);
        if (!url.endsWith('/decoder.onnx')) return response;
        const bytes = new Uint8Array(await response.arrayBuffer());
        bytes[500] ^= 1;
        return new Response(bytes);
      };
      try {
        await loadVAE('/models/mnist-conv-z2/', { ort, fetch: altered });
        return 'loaded';
      } catch (err) {
        return `${err.name}: ${err.message}`;
      }
    });
    assert.match(
      message,
      /^ModelFormatError: http:\/\/127\.0\.0\.1:\d+\/models\/mnist-conv-z2\/decoder\.onnx: sha256 [0-9a-f]{64} does not match/,
    );
  });

  it('leaves a screenshot of the page in use', async () => {
    await page.click('#clear');
    await draw(page, DIGITS[7]);
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    const tmp = path.join(os.tmpdir(), `web-demo-${process.pid}.png`);
    await page.screenshot({ path: tmp, fullPage: true });
    fs.copyFileSync(tmp, SCREENSHOT); // not rename: /tmp may be another filesystem
    fs.rmSync(tmp);
    assert.ok(fs.statSync(SCREENSHOT).size > 10000);
    assert.deepEqual(errors, []);
  });
});
