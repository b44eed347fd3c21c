// Figures for docs/web.md: decode images/s in Node (onnxruntime-node) and in Chromium
// (onnxruntime-web, WASM), time to first image and the page's transferred bytes.
//   node bench/bench.js [--model DIR] [--rounds N] [--no-browser]
// Contenders alternate within each round; medians are printed. Not a test: nothing asserted.

import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { createRandom, loadVAE } from '../src/index.js';
import { launchBrowser, missingForBrowser, openDemo, startServer } from '../test/browser-helpers.js';
import { ARTIFACTS } from '../test/helpers.js';

const { values: opts } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ARTIFACTS, 'mnist-conv-z20') },
    rounds: { type: 'string', default: '7' },
    'no-browser': { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(opts.rounds);
const BATCHES = [1, 64];
const ROUND_MS = 300;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function imagesPerSecond(vae, z, batch) {
  let runs = 0;
  const start = performance.now();
  while (performance.now() - start < ROUND_MS) {
    await vae.decode(z, batch);
    runs++;
  }
  return (batch * runs * 1000) / (performance.now() - start);
}

async function benchNode() {
  const contenders = {};
  for (const threads of [1, 2]) {
    contenders[`node, ${threads} thread${threads > 1 ? 's' : ''}`] = await loadVAE(opts.model, {
      ort, sessionOptions: { intraOpNumThreads: threads, interOpNumThreads: 1 },
    });
  }
  for (const batch of BATCHES) {
    const z = createRandom(1).normals(batch * Object.values(contenders)[0].latentDim);
    const rates = Object.fromEntries(Object.keys(contenders).map((k) => [k, []]));
    for (const vae of Object.values(contenders)) for (let i = 0; i < 5; i++) await vae.decode(z, batch);
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, vae] of Object.entries(contenders)) rates[name].push(await imagesPerSecond(vae, z, batch));
    }
    for (const [name, xs] of Object.entries(rates)) {
      console.log(`decode  batch ${String(batch).padStart(2)}  ${name.padEnd(22)} ${Math.round(median(xs)).toLocaleString('en')} images/s`);
    }
  }
  for (const vae of Object.values(contenders)) await vae.release();
}

async function benchBrowser() {
  const missing = missingForBrowser();
  if (missing.length) {
    console.log(`browser: skipped, missing ${missing.join(', ')}`);
    return;
  }
  const server = await startServer(['--model', opts.model]);
  const browser = await launchBrowser();
  try {
    for (const threads of [1, 2]) {
      const page0 = await browser.context.newPage(); // a cold cache for each load
      await page0.close();
      let transferred = 0;
      let raw = 0;
      const pageWatch = (page) => page.on('requestfinished', async (request) => {
        const sizes = await request.sizes();
        transferred += sizes.responseBodySize + sizes.responseHeadersSize;
        raw += Number((await request.response())?.headers()['content-length'] ?? 0);
      });
      browser.context.on('page', pageWatch);
      const { page } = await openDemo(browser.context, server.url, `?threads=${threads}`);
      browser.context.off('page', pageWatch);
      const timings = await page.evaluate(() => window.vaeDemo.timings);
      const rows = await page.evaluate((rounds) => window.vaeDemo.bench({ rounds }), ROUNDS);
      const label = `chromium wasm, ${threads} thread${threads > 1 ? 's' : ''}`;
      console.log(`${label}: first image ${(timings.firstImage / 1000).toFixed(2)} s after navigation `
        + `(main model loaded in ${(timings.mainLoad / 1000).toFixed(2)} s); `
        + `page weight ${(transferred / 1e6).toFixed(2)} MB transferred`);
      for (const { batch, imagesPerSecond: rate } of rows) {
        console.log(`decode  batch ${String(batch).padStart(2)}  ${label.padEnd(22)} ${Math.round(rate).toLocaleString('en')} images/s`);
      }
      await page.close();
      await browser.context.clearCookies();
    }
  } finally {
    await browser.close();
    await server.stop();
  }
}

console.log(`model ${opts.model}; ${ROUNDS} rounds of ${ROUND_MS} ms, medians`);
await benchNode();
if (!opts['no-browser']) await benchBrowser();
