// vae-onnx in JavaScript: load a checked model directory into onnxruntime (web or node) and
// encode, decode, sample and generate with the Python runtime's semantics (docs/web.md).

import { InputError, ModelFormatError } from './errors.js';
import { readVerified, openSource } from './files.js';
import { PIXELS, checkManifest, contract, graphPlan } from './manifest.js';
import { inspectModel } from './onnx-proto.js';
import { NONE, validateSpec } from './preprocess-spec.js';
import { info as infoOf, plainResize, prepare } from './preprocess.js';
import { createRandom, entropySeed } from './random.js';

export { InputError, ModelFormatError } from './errors.js';
export { createRandom } from './random.js';
export { PIXELS } from './manifest.js';
export { SpecError } from './preprocess-spec.js';
export { decodeImage } from './decode.js';

// exp(0.5 * logvar) over- and underflows float32 far outside this; as vae_runtime.sampling.
export const LOGVAR_MIN = -30;
export const LOGVAR_MAX = 20;
const DEFAULT_BATCH_SIZE = 256;
const META_PREFIX = 'vae_onnx.';
const f32 = Math.fround;

function checkMetadata(meta, role, manifest, where) {
  const expected = {
    format_version: String(manifest.formatVersion),
    role,
    latent_dim: String(manifest.latentDim),
  };
  for (const [key, want] of Object.entries(expected)) {
    const got = meta[META_PREFIX + key];
    if (got === undefined)
      throw new ModelFormatError(`${where}: metadata_props lacks ${META_PREFIX}${key}`);
    if (got.trim() !== want) {
      throw new ModelFormatError(
        `${where}: metadata_props ${META_PREFIX}${key} is ${JSON.stringify(got)}, manifest.json implies ${JSON.stringify(want)}`,
      );
    }
  }
  for (const [key, want] of [
    ['arch', manifest.arch],
    ['likelihood', manifest.raw.likelihood.name],
  ]) {
    const got = meta[META_PREFIX + key];
    if (got !== undefined && got !== want) {
      throw new ModelFormatError(
        `${where}: metadata_props ${META_PREFIX}${key} is ${JSON.stringify(got)}, manifest says ${JSON.stringify(want)}`,
      );
    }
  }
}

function checkSession(session, spec, where) {
  for (const [side, names, metadata, want] of [
    ['input', session.inputNames, session.inputMetadata, spec.inputs],
    ['output', session.outputNames, session.outputMetadata, spec.outputs],
  ]) {
    if ([...names].sort().join() !== Object.keys(want).sort().join()) {
      throw new ModelFormatError(
        `${where}: ${side}s are ${JSON.stringify(names)}, expected ${JSON.stringify(Object.keys(want))}`,
      );
    }
    for (const meta of metadata ?? []) {
      const shape = want[meta.name];
      if (!meta.isTensor || meta.type !== 'float32') {
        throw new ModelFormatError(
          `${where}: ${side} ${JSON.stringify(meta.name)} has type ${meta.type}, expected float32`,
        );
      }
      const dims = meta.shape;
      const fixedBatch = typeof dims[0] === 'number' && dims[0] >= 0;
      const mismatch =
        dims.length !== shape.length || dims.slice(1).some((d, i) => d !== shape[i + 1]);
      if (fixedBatch || mismatch) {
        throw new ModelFormatError(
          `${where}: ${side} ${JSON.stringify(meta.name)} has shape [${dims.join(', ')}], expected [N, ${shape.slice(1).join(', ')}]`,
        );
      }
    }
  }
}

/** One graph: verified bytes (and verified external data) -> a checked InferenceSession. */
async function openGraph(ort, source, manifest, role, plan, sessionOptions) {
  const where = source.describe(plan.graph);
  const bytes = await readVerified(source, manifest, plan.graph);
  let model;
  try {
    model = inspectModel(bytes);
  } catch (err) {
    throw new ModelFormatError(`${where}: ${err.message}`);
  }
  checkMetadata(model.metadata, role, manifest, where);
  // ONNX Runtime must never open a file itself: every location the graph names has to be a
  // verified file the manifest lists for it, handed over as bytes under that exact name.
  const externalData = [];
  for (const location of model.locations) {
    if (!plan.external.includes(location)) {
      throw new ModelFormatError(
        `${where}: reads external data from ${JSON.stringify(location)}, which manifest.json does not list under graphs.${role}.external_data`,
      );
    }
    externalData.push({ path: location, data: await readVerified(source, manifest, location) });
  }
  let session;
  try {
    session = await ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: 'all',
      ...sessionOptions,
      externalData,
    });
  } catch (err) {
    throw new ModelFormatError(`${where}: ONNX Runtime cannot load it (${err.message ?? err})`);
  }
  checkSession(session, contract(role, manifest.latentDim), where);
  return session;
}

function checkCount(value, what, minimum = 0) {
  if (!Number.isInteger(value) || value < minimum) {
    throw new InputError(`${what} must be an integer >= ${minimum}, got ${value}`);
  }
  return value;
}

/** Images as float32 in [0, 1]: a Float32Array is range-checked; uint8 data is divided by 255. */
function asImages(pixels, n) {
  if (pixels === null || typeof pixels !== 'object' || typeof pixels.length !== 'number') {
    throw new InputError('pixels must be a Float32Array (n x 784, row-major, values in [0, 1])');
  }
  const rows = checkCount(n ?? pixels.length / PIXELS, 'n (images)');
  if (pixels.length !== rows * PIXELS) {
    throw new InputError(
      `pixels hold ${pixels.length} values, expected n x 784 = ${rows * PIXELS}`,
    );
  }
  if (pixels instanceof Uint8Array || pixels instanceof Uint8ClampedArray) {
    const out = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) out[i] = f32(pixels[i] / 255);
    return [out, rows];
  }
  const x = pixels instanceof Float32Array ? pixels : Float32Array.from(pixels);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (!(v >= 0 && v <= 1)) {
      throw new InputError(
        Number.isFinite(v)
          ? `float images must lie in [0, 1], got ${v} at index ${i}; divide 0..255 data by 255`
          : 'images contain NaN or infinite values',
      );
    }
  }
  return [x, rows];
}

const isImage = (v) =>
  v !== null && typeof v === 'object' && 'width' in v && 'height' in v && 'data' in v;

/** The spec in effect: `choice` undefined = the manifest's; "none" = none (null); or a spec. */
function chooseSpec(choice, declared) {
  if (choice === undefined) return declared;
  try {
    return validateSpec(choice, 'preprocess option');
  } catch (err) {
    throw new InputError(err.message);
  }
}

/** Options may stand in the place of `n`: encode(images, {invert}). */
function splitArgs(n, options) {
  return n !== null && typeof n === 'object' ? [undefined, n] : [n, options ?? {}];
}

/**
 * Any input -> model inputs (n x 784 float32) with each image's decisions. Raw images
 * ({data, width, height[, channels]}, e.g. ImageData, or a list of them) go through the
 * spec's steps (or a plain resize without one); model-shaped arrays (n x 784) through its
 * polarity step only, their bits kept unless inverted (docs/preprocessing.md, step 2).
 */
function prepareInput(input, n, spec, invert) {
  if (isImage(input) || (Array.isArray(input) && input.length > 0 && input.every(isImage))) {
    const images = isImage(input) ? [input] : input;
    const pixels = new Float32Array(images.length * PIXELS);
    const info = images.map((image, i) => {
      const result = spec ? prepare(image, spec, { invert }) : noSpec(plainResize(image), invert);
      pixels.set(result.image, i * PIXELS);
      return infoOf(result);
    });
    return { pixels, n: images.length, info };
  }
  const [x, rows] = asImages(input, n);
  const info = [];
  let pixels = x;
  for (let i = 0; i < rows; i++) {
    const row = x.subarray(i * PIXELS, (i + 1) * PIXELS);
    const result = spec
      ? prepare({ data: row, width: 28, height: 28, channels: 1 }, spec, { invert })
      : noSpec(row, invert);
    if (result.image !== row) {
      if (pixels === x) pixels = Float32Array.from(x);
      pixels.set(result.image, i * PIXELS);
    }
    info.push(infoOf(result));
  }
  return { pixels, n: rows, info };
}

/** Without a spec the polarity is the caller's alone (invert === true), as before it. */
function noSpec(image, invert) {
  const inverted = invert === true;
  return {
    image: inverted ? image.map((v) => f32(1 - v)) : image,
    inverted,
    decided: false,
    border: null,
    passthrough: false,
    flags: [],
    none: true,
  };
}

function asLatents(values, n, latentDim, what) {
  if (values === null || typeof values !== 'object' || typeof values.length !== 'number') {
    throw new InputError(`${what} must be a Float32Array (n x ${latentDim}, row-major)`);
  }
  const rows = checkCount(n ?? values.length / latentDim, `n (${what})`);
  if (values.length !== rows * latentDim) {
    throw new InputError(
      `${what} hold ${values.length} values, expected n x ${latentDim} = ${rows * latentDim}`,
    );
  }
  const z = values instanceof Float32Array ? values : Float32Array.from(values);
  for (let i = 0; i < z.length; i++) {
    if (!Number.isFinite(z[i]))
      throw new InputError(`${what} contain NaN or infinite values (or overflow float32)`);
  }
  return [z, rows];
}

/**
 * Load a model directory (docs/model-format.md) into onnxruntime. See index.d.ts.
 * @param {string | URL} source folder (Node) or base URL of the model directory
 * @param {import('./index.d.ts').LoadOptions} options
 */
export async function loadVAE(source, options = {}) {
  const {
    ort,
    variant = null,
    sessionOptions = {},
    fetch,
    batchSize = DEFAULT_BATCH_SIZE,
    preprocess: preprocessChoice,
  } = options;
  if (!ort?.InferenceSession || !ort?.Tensor) {
    throw new TypeError(
      'loadVAE: pass the onnxruntime module as {ort} (onnxruntime-web or onnxruntime-node)',
    );
  }
  checkCount(batchSize, 'batchSize', 1);
  const files = await openSource(source, fetch);
  const where = files.describe('manifest.json');
  const text = await files.read('manifest.json');
  if (text === null) throw new ModelFormatError(`${where}: missing; not a model directory`);
  let raw;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(text));
  } catch (err) {
    throw new ModelFormatError(`${where}: not readable JSON (${err.message})`);
  }
  const manifest = checkManifest(raw, where);
  const spec = chooseSpec(preprocessChoice, manifest.preprocess);
  const plan = graphPlan(manifest, variant, where);
  const encoder = await openGraph(ort, files, manifest, 'encoder', plan.encoder, sessionOptions);
  let decoder;
  try {
    decoder = await openGraph(ort, files, manifest, 'decoder', plan.decoder, sessionOptions);
  } catch (err) {
    await encoder.release();
    throw err;
  }
  const L = manifest.latentDim;

  // Runs `session` over `rows` rows of `input` in chunks of batchSize; copies each output.
  async function run(session, name, input, rows, shape, outputs) {
    const result = Object.fromEntries(
      outputs.map(([out, width]) => [out, new Float32Array(rows * width)]),
    );
    const width = input.length / Math.max(rows, 1);
    for (let start = 0; start < rows; start += batchSize) {
      const count = Math.min(batchSize, rows - start);
      const tensor = new ort.Tensor(
        'float32',
        input.subarray(start * width, (start + count) * width),
        [count, ...shape],
      );
      const got = await session.run({ [name]: tensor });
      for (const [out, w] of outputs) {
        result[out].set(got[out].data, start * w);
        got[out].dispose?.();
      }
    }
    return result;
  }

  const vae = {
    manifest: raw,
    name: manifest.name,
    latentDim: L,
    variant,
    files: { encoder: plan.encoder.graph, decoder: plan.decoder.graph },
    /** The preprocessing spec in effect (the manifest's unless overridden), null = none. */
    preprocess: spec,

    prepare(input, n, options) {
      const [rows, opts] = splitArgs(n, options);
      const { invert = 'auto', preprocess: choice } = opts;
      if (!['auto', true, false].includes(invert)) {
        throw new InputError(`invert must be "auto", true or false, got ${JSON.stringify(invert)}`);
      }
      return prepareInput(input, rows, chooseSpec(choice, spec), invert);
    },

    async encode(input, n, options) {
      const { pixels, n: rows, info } = vae.prepare(input, n, options);
      const out = await run(
        encoder,
        'x',
        pixels,
        rows,
        [1, 28, 28],
        [
          ['mu', L],
          ['logvar', L],
        ],
      );
      return { ...out, info };
    },

    async embed(input, n, options) {
      return (await vae.encode(input, n, options)).mu;
    },

    async decode(z, n) {
      const [latents, rows] = asLatents(z, n, L, 'latents');
      return (await run(decoder, 'z', latents, rows, [L], [['x_hat', PIXELS]])).x_hat;
    },

    sample(mu, logvar, { seed, rng, eps } = {}) {
      const [m, rows] = asLatents(mu, undefined, L, 'mu');
      const [lv] = asLatents(logvar, rows, L, 'logvar');
      let noise;
      if (eps !== undefined) {
        if (seed !== undefined || rng !== undefined)
          throw new InputError('pass eps or seed/rng, not both');
        [noise] = asLatents(eps, rows, L, 'eps');
      } else {
        if (seed !== undefined && rng !== undefined)
          throw new InputError('pass seed or rng, not both');
        noise = (rng ?? createRandom(seed ?? entropySeed())).normals(rows * L);
      }
      const z = new Float32Array(rows * L);
      for (let i = 0; i < z.length; i++) {
        const std = f32(Math.exp(f32(0.5 * Math.min(Math.max(lv[i], LOGVAR_MIN), LOGVAR_MAX))));
        z[i] = f32(m[i] + f32(std * noise[i]));
      }
      return z;
    },

    async generate(n, { seed, rng } = {}) {
      checkCount(n, 'n', 1);
      if (seed !== undefined && rng !== undefined)
        throw new InputError('pass seed or rng, not both');
      const source = rng ?? createRandom(seed ?? entropySeed());
      return vae.decode(source.normals(n * L), n);
    },

    async reconstruct(input, n, options) {
      const mu = await vae.embed(input, n, options);
      return vae.decode(mu);
    },

    async interpolate(a, b, steps = 10, options = {}) {
      checkCount(steps, 'steps', 2);
      const pair = new Float32Array(2 * PIXELS);
      pair.set(vae.prepare(a, 1, options).pixels);
      pair.set(vae.prepare(b, 1, options).pixels, PIXELS);
      const mu = await vae.embed(pair, 2, { ...options, preprocess: NONE, invert: false });
      const z = new Float32Array(steps * L);
      for (let s = 0; s < steps; s++) {
        const t = s === steps - 1 ? 1 : f32(s * (1 / (steps - 1)));
        for (let j = 0; j < L; j++)
          z[s * L + j] = f32(f32(f32(1 - t) * mu[j]) + f32(t * mu[L + j]));
      }
      return vae.decode(z, steps);
    },

    async release() {
      await Promise.all([encoder.release(), decoder.release()]);
    },
  };
  return Object.freeze(vae);
}
