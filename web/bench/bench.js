// Figures for docs/web.md: decode images/s in Node (onnxruntime-node) and in Chromium
// (onnxruntime-web, WASM), time to first image and the page's transferred bytes.
//   node bench/bench.js [--model DIR] [--seconds S] [--no-browser]
// images/s = batch / median time of one call, as `vae-run bench` computes it; its decode rows
// for the same model are printed too. Node's contenders alternate in short rounds. Not a
// test: nothing is asserted.

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { createRandom, loadVAE } from '../src/index.js';
import {
  VAE_RUN,
  launchBrowser,
  missingForBrowser,
  openDemo,
  startServer,
} from '../test/browser-helpers.js';
import { ARTIFACTS } from '../test/helpers.js';

const { values: opts } = parseArgs({
  options: {
    model: { type: 'string', default: path.join(ARTIFACTS, 'mnist-conv-z20') },
    seconds: { type: 'string', default: '2' },
    'no-browser': { type: 'boolean', default: false },
  },
});
const MS = 1000 * Number(opts.seconds);
const ROUNDS = 10;
const BATCHES = [1, 64];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const row = (batch, label, rate) =>
  console.log(
    `decode  batch ${String(batch).padStart(2)}  ${label.padEnd(26)} ${Math.round(rate).toLocaleString('en').padStart(7)} images/s`,
  );

/** Appends the per-call times (ms) of `call`, run for about `ms`, to `times`. */
async function timeCalls(call, ms, times) {
  const start = performance.now();
  while (performance.now() - start < ms) {
    const t = performance.now();
    await call();
    times.push(performance.now() - t);
  }
}

async function benchNode() {
  const contenders = {};
  for (const threads of [1, 2]) {
    const sessionOptions = { intraOpNumThreads: threads, interOpNumThreads: 1 };
    contenders[`node, ${threads} thread${threads > 1 ? 's' : ''}`] = await loadVAE(opts.model, {
      ort,
      sessionOptions,
    });
  }
  const latentDim = Object.values(contenders)[0].latentDim;
  for (const batch of BATCHES) {
    const z = createRandom(1).normals(batch * latentDim);
    const times = Object.fromEntries(Object.keys(contenders).map((name) => [name, []]));
    for (const vae of Object.values(contenders)) for (let i = 0; i < 5; i++) await vae.decode(z);
    for (let r = 0; r < ROUNDS; r++) {
      for (const [name, vae] of Object.entries(contenders)) {
        await timeCalls(() => vae.decode(z, batch), MS / ROUNDS, times[name]);
      }
    }
    for (const [name, t] of Object.entries(times)) row(batch, name, (batch * 1000) / median(t));
  }
  for (const vae of Object.values(contenders)) await vae.release();
}

function benchPython() {
  for (const threads of [1, 2]) {
    const args = ['bench', '--model', opts.model, '--threads', String(threads), '--json'];
    args.push(
      '--batch-sizes',
      BATCHES.join(','),
      '--cold-start',
      '0',
      '--seconds',
      String(MS / 1000),
    );
    const report = JSON.parse(execFileSync(VAE_RUN, args, { encoding: 'utf8' }));
    for (const r of report.throughput.filter((r) => r.op === 'decode')) {
      row(r.batch, `python, ${threads} thread${threads > 1 ? 's' : ''}`, r.images_per_s);
    }
  }
}

async function benchBrowser() {
  const server = await startServer(['--model', opts.model]);
  const browser = await launchBrowser();
  try {
    for (const threads of [1, 2]) {
      let transferred = 0;
      const count = (page) =>
        page.on('requestfinished', async (request) => {
          const sizes = await request.sizes();
          transferred += sizes.responseBodySize + sizes.responseHeadersSize;
        });
      browser.context.on('page', count);
      const { page } = await openDemo(browser.context, server.url, `?threads=${threads}`);
      browser.context.off('page', count);
      const timings = await page.evaluate(() => window.vaeDemo.timings);
      const rows = await page.evaluate((ms) => window.vaeDemo.bench({ ms }), MS);
      const label = `chromium wasm, ${threads} thread${threads > 1 ? 's' : ''}`;
      console.log(
        `${label}: first image ${(timings.firstImage / 1000).toFixed(2)} s after navigation ` +
          `(main model loaded in ${(timings.mainLoad / 1000).toFixed(2)} s); ` +
          `${(transferred / 1e6).toFixed(2)} MB transferred`,
      );
      for (const { batch, imagesPerSecond } of rows) row(batch, label, imagesPerSecond);
      await page.close();
    }
  } finally {
    await browser.close();
    await server.stop();
  }
}

console.log(`model ${opts.model}; about ${opts.seconds} s per figure`);
await benchNode();
const missing = missingForBrowser();
if (missing.length) console.log(`python and browser: skipped, missing ${missing.join(', ')}`);
else {
  benchPython();
  if (!opts['no-browser']) await benchBrowser();
}
