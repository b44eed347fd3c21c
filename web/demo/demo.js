// The page: wires the package (../src) to onnxruntime-web and the four panels. Everything
// that runs a model goes through one queue (`serial`), so sessions never run concurrently,
// and `window.vaeDemo` exposes state, timings and a benchmark for the browser test.

import * as ort from '/vendor/onnxruntime-web/ort.wasm.min.mjs';
import { createRandom, decodeImage, loadVAE } from '../src/index.js';
import { DrawingPad } from './pad.js';
import { COLOURS, LatentPlane } from './plane.js';
import { paintImage, paintTiles } from './pixels.js';

const params = new URLSearchParams(location.search);
const GRID = { count: 64, cols: 8, gap: 2 };
const STRIP = { steps: 10, gap: 2 };
const $ = (id) => document.getElementById(id);
const seconds = (ms) => `${(ms / 1000).toFixed(2)} s`;

const threads = Number(params.get('threads') ?? 1);
ort.env.wasm.wasmPaths = new URL('/vendor/onnxruntime-web/', location.href).href;
ort.env.wasm.numThreads = threads;

const timings = {};
const state = {
  seed: Number(params.get('seed') ?? 0),
  planeZ: null,
  drawn: null,
  a: null,
  b: null,
  strip: null,
};
const statusParts = new Map();
function say(key, text) {
  statusParts.set(key, text);
  $('status').textContent = [...statusParts.values()].join(' · ');
}
function fail(err) {
  $('status').classList.add('error');
  $('status').textContent = `error: ${err.message ?? err}`;
  console.error(err);
}

// One queue for every model call; `pending` lets the test wait until the page is idle.
let chain = Promise.resolve();
let pending = 0;
function serial(task) {
  pending++;
  const result = chain.then(task).finally(() => pending--);
  chain = result.catch(fail);
  return result;
}
async function settle() {
  while (pending > 0 || pumps.size > 0) await new Promise((r) => setTimeout(r, 10));
}

// "Latest wins": while one update runs, newer requests replace each other.
const pumps = new Set();
function latestWins(name, work) {
  let wanted = null;
  return (arg) => {
    wanted = { arg };
    if (pumps.has(name)) return;
    pumps.add(name);
    (async () => {
      try {
        while (wanted) {
          const { arg: next } = wanted;
          wanted = null;
          await work(next);
        }
      } catch (err) {
        fail(err);
      } finally {
        pumps.delete(name);
      }
    })();
  };
}

async function load(url, variant) {
  const start = performance.now();
  const vae = await loadVAE(url, { ort, variant });
  return [vae, performance.now() - start];
}

async function showSamples(main) {
  $('seed').value = String(state.seed);
  const images = await serial(() => main.generate(GRID.count, { seed: state.seed }));
  paintTiles($('grid'), images, GRID.count, GRID);
}

async function loadScatter(config, explorer, plane) {
  if (!config.embeddings) return 'no scatter for this model';
  const scatter = await (await fetch(config.embeddings)).json();
  const files = explorer.manifest.files;
  const same = Object.entries(scatter.files).every(([rel, sha]) => files[rel]?.sha256 === sha);
  if (!same) return 'scatter skipped: it was computed for another encoder';
  plane.setScatter(scatter);
  $('legend').replaceChildren(
    ...COLOURS.map((c, k) => {
      const li = document.createElement('li');
      li.style.setProperty('--c', c);
      li.textContent = String(k);
      return li;
    }),
  );
  return `${scatter.count} test means`;
}

async function main() {
  const config = await (await fetch('/config.json')).json();
  const variant = params.get('variant');
  const [mainModel, mainMs] = await load(params.get('model') ?? config.model, variant);
  timings.mainLoad = mainMs;
  document.querySelectorAll('[data-model=main]').forEach((el) => {
    el.textContent = `(${mainModel.name})`;
  });
  say(
    'backend',
    `onnxruntime-web ${ort.env.versions?.web ?? ''} wasm, ${threads} thread${threads > 1 ? 's' : ''}`,
  );
  say('main', `${mainModel.name} ${variant ?? 'fp32'} loaded in ${seconds(mainMs)}`);
  await showSamples(mainModel);
  timings.firstImage = performance.now(); // since navigation start
  say('first', `first image at ${seconds(timings.firstImage)}`);
  const resample = $('resample');
  resample.disabled = false;
  resample.addEventListener('click', () => {
    state.seed += 1;
    showSamples(mainModel).catch(fail);
  });

  let explorer = null;
  let plane = null;
  const explorerUrl = params.get('explorer') ?? config.explorer;
  if (explorerUrl) {
    let ms;
    [explorer, ms] = await load(explorerUrl, null);
    timings.explorerLoad = ms;
    document.querySelectorAll('[data-model=explorer]').forEach((el) => {
      el.textContent = `(${explorer.name})`;
    });
    const decodePoint = latestWins('plane', async (z) => {
      const x = await serial(() => explorer.decode(Float32Array.from(z), 1));
      paintImage($('decoded'), x);
      $('z').value = `(${z[0].toFixed(2)}, ${z[1].toFixed(2)})`;
      state.planeZ = z;
    });
    plane = new LatentPlane($('plane'), decodePoint);
    decodePoint(plane.point);
    const note = await loadScatter(config, explorer, plane);
    say('explorer', `${explorer.name} loaded in ${seconds(ms)} (${note})`);
  } else {
    $('explorer').hidden = true;
  }

  // The pad through the main model's declared preprocessing (or `preprocess`, set by
  // window.vaeDemo.setPreprocess); what follows gets the prepared input as it is.
  let preprocess;
  const asIs = { preprocess: 'none', invert: false };
  const describeInput = () => {
    const spec = preprocess === undefined ? mainModel.preprocess : preprocess;
    const active = spec !== null && spec !== 'none';
    $('pad').parentElement.classList.toggle('guided', !active);
    $('pad-note').textContent = active
      ? 'Draw anywhere, at any size; the model input is cropped, scaled and centred as MNIST digits were.'
      : 'No preprocessing declared: the whole pad is shrunk, so draw white on black inside the dashed square.';
  };
  const update = latestWins('pad', async () => {
    if (pad.blank) return;
    const options = preprocess === undefined ? {} : { preprocess };
    const { pixels: input, info } = mainModel.prepare(pad.imageData(), options);
    paintImage($('input'), input);
    $('decision').textContent = decisionText(info[0]);
    const recon = await serial(() => mainModel.reconstruct(input, 1, asIs));
    paintImage($('recon'), recon);
    let mu2 = null;
    if (explorer) {
      mu2 = await serial(() => explorer.embed(input, 1, asIs));
      paintImage($('recon2'), await serial(() => explorer.decode(mu2, 1)));
      plane.setRing([mu2[0], mu2[1]]);
    }
    state.drawn = { input, info: info[0], recon, mu2: mu2 && [mu2[0], mu2[1]] };
    $('set-a').disabled = false;
    $('set-b').disabled = false;
  });
  const pad = new DrawingPad($('pad'), update);
  describeInput();
  $('clear').addEventListener('click', () => pad.clear());
  $('ink').addEventListener('click', () => {
    pad.setInk(pad.ink === 'light' ? 'dark' : 'light');
    $('ink').textContent = pad.ink === 'light' ? 'black ink on white' : 'white ink on black';
  });
  // An image file (picker or dropped on the pad) replaces the drawing, at its own size.
  const open = async (file) => {
    if (!file) return;
    try {
      pad.showImage(await decodeImage(file, file.name));
      update();
      state.opened = file.name;
    } catch (err) {
      $('decision').textContent = err.message;
    }
  };
  $('open').addEventListener('change', (e) => open(e.target.files[0]));
  const frame = $('pad').parentElement;
  frame.addEventListener('dragover', (e) => e.preventDefault());
  frame.addEventListener('drop', (e) => {
    e.preventDefault();
    open(e.dataTransfer.files[0]);
  });
  const interpolate = latestWins('strip', async () => {
    if (!state.a || !state.b) return;
    state.strip = await serial(() => mainModel.interpolate(state.a, state.b, STRIP.steps, asIs));
    paintTiles($('strip'), state.strip, STRIP.steps, { cols: STRIP.steps, gap: STRIP.gap });
  });
  for (const [id, key] of [
    ['set-a', 'a'],
    ['set-b', 'b'],
  ]) {
    $(id).addEventListener('click', () => {
      if (!state.drawn) return;
      state[key] = state.drawn.input;
      interpolate();
    });
  }
  Object.assign(window.vaeDemo, {
    main: mainModel,
    explorer,
    plane,
    pad,
    /** Use `spec` ("none", a spec object; undefined: the model's) for the pad from now on. */
    setPreprocess(spec) {
      preprocess = spec;
      describeInput();
      update();
    },
  });
}

/** One line on what the preprocessing decided about the drawing. */
function decisionText(info) {
  if (info.polarity === 'none') return 'plain resize, no decisions';
  const ink = info.inverted ? 'dark ink on light paper (inverted)' : 'light ink on dark paper';
  const how = info.polarity === 'auto' ? `decided: border ${info.border.toFixed(2)}` : 'forced';
  const flags = info.flags.length ? ` · ${info.flags.join(', ')}` : '';
  return `${ink}, ${how}${flags}`;
}

/**
 * Decode speed of the main model: images/s = batch / median time of one call (as
 * `vae-run bench` computes it), over about `ms` milliseconds per batch size.
 */
async function bench({ batchSizes = [1, 64], ms = 2000 } = {}) {
  const vae = window.vaeDemo.main;
  const rows = [];
  for (const batch of batchSizes) {
    const z = createRandom(1).normals(batch * vae.latentDim);
    for (let i = 0; i < 3; i++) await serial(() => vae.decode(z, batch));
    const times = [];
    const start = performance.now();
    while (performance.now() - start < ms) {
      const t = performance.now();
      await serial(() => vae.decode(z, batch));
      times.push(performance.now() - t);
    }
    times.sort((p, q) => p - q);
    rows.push({ batch, imagesPerSecond: (batch * 1000) / times[Math.floor(times.length / 2)] });
  }
  return rows;
}

window.vaeDemo = { state, timings, geometry: { grid: GRID, strip: STRIP }, settle, bench };
window.vaeDemo.ready = main()
  .then(settle)
  .catch((err) => {
    fail(err);
    throw err;
  });
