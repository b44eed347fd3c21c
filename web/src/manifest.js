// manifest.json (docs/model-format.md, format versions 1 and 2), checked as the Python
// runtime checks it (vae_format/manifest.py): a refusal names manifest.json and the reason.

import { ModelFormatError } from './errors.js';
import { SpecError, validateSpec } from './preprocess-spec.js';

export const FORMAT = 'vae-onnx-model';
export const SUPPORTED_VERSIONS = [1, 2];
// Version 2 adds the required `preprocess` section (how raw images become inputs); a
// version 1 directory has none and reads raw images as before ("none").
export const PREPROCESS_SINCE = 2;
export const IMAGE_SHAPE = [1, 28, 28];
export const PIXELS = 784;
const ROLES = ['graph', 'checkpoint', 'config', 'log'];
const LIKELIHOODS = ['bernoulli', 'gaussian'];
const GRAPH_ROLES = ['encoder', 'decoder'];

/** The graph signatures the format prescribes at latent size L (null = the batch N). */
export function contract(role, latentDim) {
  const image = [null, ...IMAGE_SHAPE];
  const latent = [null, latentDim];
  return role === 'encoder'
    ? { inputs: { x: image }, outputs: { mu: latent, logvar: latent } }
    : { inputs: { z: latent }, outputs: { x_hat: image } };
}

const q = JSON.stringify;
const isInt = (v) => Number.isInteger(v);
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const fmt = (shape) =>
  `[${shape.map((d) => (d === null || typeof d === 'string' ? 'N' : d)).join(', ')}]`;

/** `rel` as given, refusing paths that could leave the model directory. */
export function checkRelativePath(rel, fail) {
  if (typeof rel !== 'string' || rel === '') {
    throw fail(`file path must be a non-empty string, got ${q(rel)}`);
  }
  if (rel.includes('\\') || rel.includes('\0')) {
    throw fail(`file path ${q(rel)} must use '/' and hold no backslash or NUL`);
  }
  if (rel.startsWith('/') || /^[A-Za-z]:/.test(rel) || /^[a-z][a-z0-9+.-]*:/i.test(rel)) {
    throw fail(`file path ${q(rel)} is absolute; paths must be relative`);
  }
  const parts = rel.split('/');
  if (parts.includes('..')) {
    throw fail(`file path ${q(rel)} contains '..'; paths must stay inside`);
  }
  const normal = parts.filter((p) => p !== '' && p !== '.').join('/');
  if (normal === '') throw fail(`file path ${q(rel)} names the directory itself`);
  return normal;
}

const KINDS = { object: isObject, string: (v) => typeof v === 'string', integer: isInt };

function requireKey(obj, key, kind, fail) {
  if (!(key in obj)) throw fail(`missing required key ${q(key)}`);
  const value = obj[key];
  if (!KINDS[kind](value)) {
    const article = kind === 'integer' ? 'an' : 'a';
    throw fail(`key ${q(key)} must be ${article} ${kind}, got ${q(value)}`);
  }
  return value;
}

function checkDeclared(graph, role, latentDim, fail) {
  const spec = contract(role, latentDim);
  for (const side of ['inputs', 'outputs']) {
    const declared = requireKey(graph, side, 'object', fail);
    const want = Object.keys(spec[side]);
    if (Object.keys(declared).sort().join() !== [...want].sort().join()) {
      throw fail(
        `graphs.${role}.${side} are ${q(Object.keys(declared).sort())}, expected ${q(want)}`,
      );
    }
    for (const [name, shape] of Object.entries(spec[side])) {
      const got = declared[name];
      if (
        !Array.isArray(got) ||
        got.length !== shape.length ||
        got.some((d, i) => d !== shape[i])
      ) {
        throw fail(
          `graphs.${role}.${side}.${name} has shape ${Array.isArray(got) ? fmt(got) : q(got)}, expected ${fmt(shape)}`,
        );
      }
    }
  }
}

/**
 * Check a parsed manifest.json.
 * @param {unknown} raw the parsed JSON
 * @param {string} where how to name manifest.json in messages (its path or URL)
 * @returns the checked facts: {raw, formatVersion, name, arch, latentDim, files, graphs,
 *   external, variants, preprocess (the spec, or null for "none")}
 */
export function checkManifest(raw, where) {
  const fail = (reason) => new ModelFormatError(`${where}: ${reason}`);
  if (!isObject(raw)) throw fail('must hold a JSON object');
  const format = requireKey(raw, 'format', 'string', fail);
  if (format !== FORMAT) throw fail(`format is ${q(format)}, expected ${q(FORMAT)}`);
  const version = requireKey(raw, 'format_version', 'integer', fail);
  if (!SUPPORTED_VERSIONS.includes(version)) {
    throw fail(
      `format_version ${version} is not supported by this package (it reads ${SUPPORTED_VERSIONS.join(', ')}); upgrade vae-onnx`,
    );
  }
  const name = requireKey(raw, 'name', 'string', fail);
  const arch = requireKey(raw, 'arch', 'string', fail);
  const latentDim = requireKey(raw, 'latent_dim', 'integer', fail);
  if (latentDim < 1) throw fail(`latent_dim must be >= 1, got ${latentDim}`);
  const image = requireKey(raw, 'image', 'object', fail);
  if (q(image.shape) !== q(IMAGE_SHAPE) || image.dtype !== 'float32') {
    throw fail(`image must have shape ${q(IMAGE_SHAPE)} and dtype float32`);
  }
  const likelihood = requireKey(raw, 'likelihood', 'object', fail);
  if (!LIKELIHOODS.includes(likelihood.name)) {
    throw fail(
      `likelihood.name is ${q(likelihood.name)}, expected one of ${LIKELIHOODS.join(', ')}`,
    );
  }
  if (likelihood.name === 'gaussian') {
    const { sigma } = likelihood;
    if (typeof sigma !== 'number' || !Number.isFinite(sigma) || sigma <= 0) {
      throw fail(`likelihood.sigma must be a finite number > 0, got ${q(sigma)}`);
    }
  }

  const files = new Map();
  for (const [path, entry] of Object.entries(requireKey(raw, 'files', 'object', fail))) {
    const rel = checkRelativePath(path, fail);
    if (!isObject(entry)) throw fail(`files[${q(rel)}] must be an object`);
    const { sha256, bytes, role } = entry;
    if (typeof sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha256)) {
      throw fail(`files[${q(rel)}].sha256 must be 64 hex digits, got ${q(sha256)}`);
    }
    if (!isInt(bytes) || bytes < 0) {
      throw fail(`files[${q(rel)}].bytes must be an integer >= 0, got ${q(bytes)}`);
    }
    if (!ROLES.includes(role)) {
      throw fail(`files[${q(rel)}].role is ${q(role)}, expected one of ${ROLES.join(', ')}`);
    }
    files.set(rel, { sha256: sha256.toLowerCase(), bytes, role });
  }
  const listed = (rel, what) => {
    const normal = checkRelativePath(rel, fail);
    if (!files.has(normal)) {
      throw fail(
        `${what} names ${q(normal)}, which is not listed under 'files' (no sha256 to check)`,
      );
    }
    return normal;
  };
  const graphFile = (rel, what) => {
    if (rel === undefined || rel === null) throw fail(`${what} is missing`);
    const normal = listed(rel, what);
    if (files.get(normal).role !== 'graph') {
      throw fail(`${what} ${q(normal)} has role ${q(files.get(normal).role)}, expected 'graph'`);
    }
    return normal;
  };

  const graphsRaw = requireKey(raw, 'graphs', 'object', fail);
  const graphs = {};
  const external = {};
  for (const role of GRAPH_ROLES) {
    if (!isObject(graphsRaw[role])) throw fail(`graphs.${role} is missing or not an object`);
    graphs[role] = graphFile(graphsRaw[role].file, `graphs.${role}.file`);
    const ext = graphsRaw[role].external_data ?? [];
    if (!Array.isArray(ext)) throw fail(`graphs.${role}.external_data must be a list of files`);
    external[role] = ext.map((rel) => listed(rel, `graphs.${role}.external_data`));
  }
  const encL = graphsRaw.encoder.outputs?.mu?.[1];
  const decL = graphsRaw.decoder.inputs?.z?.[1];
  if (isInt(encL) && isInt(decL) && encL !== decL) {
    throw fail(`latent size mismatch: encoder produces ${encL}, decoder takes ${decL}`);
  }
  for (const role of GRAPH_ROLES) checkDeclared(graphsRaw[role], role, latentDim, fail);

  const variants = {};
  const variantsRaw = raw.variants ?? {};
  if (!isObject(variantsRaw)) throw fail('variants must be an object');
  for (const [vname, vobj] of Object.entries(variantsRaw)) {
    if (!isObject(vobj)) throw fail(`variants[${q(vname)}] must be an object`);
    variants[vname] = {};
    for (const role of GRAPH_ROLES) {
      variants[vname][role] = graphFile(vobj[role], `variants[${q(vname)}].${role}`);
    }
  }
  const preprocess = checkPreprocess(raw, version, fail);
  return {
    raw,
    formatVersion: version,
    name,
    arch,
    latentDim,
    files,
    graphs,
    external,
    variants,
    preprocess,
  };
}

/** The `preprocess` section: required from version 2 on, absent before; null = "none". */
function checkPreprocess(raw, version, fail) {
  if (version < PREPROCESS_SINCE) {
    if ('preprocess' in raw) {
      throw fail(
        `format_version ${version} has no 'preprocess' section (it came with version ${PREPROCESS_SINCE}); set format_version to ${PREPROCESS_SINCE} or remove the section`,
      );
    }
    return null;
  }
  if (!('preprocess' in raw)) {
    throw fail(`missing required key 'preprocess' (format_version ${version})`);
  }
  let spec;
  try {
    spec = validateSpec(raw.preprocess);
  } catch (err) {
    if (err instanceof SpecError) throw fail(err.message);
    throw err;
  }
  if (spec !== null && q(spec.size) !== q(IMAGE_SHAPE.slice(1))) {
    throw fail(`preprocess.size ${q(spec.size)} must be the image's ${q(IMAGE_SHAPE.slice(1))}`);
  }
  return spec;
}

/**
 * role -> {graph, external} for `variant` (null: the default graphs). A variant's own graphs
 * are self-contained; one that reuses a default graph reads that graph's external data.
 */
export function graphPlan(manifest, variant, where) {
  let chosen = manifest.graphs;
  if (variant !== null && variant !== undefined) {
    if (!(variant in manifest.variants)) {
      const known = Object.keys(manifest.variants).sort().join(', ') || 'none';
      throw new ModelFormatError(`${where}: no variant ${q(variant)} (variants: ${known})`);
    }
    chosen = manifest.variants[variant];
  }
  const plan = {};
  for (const role of GRAPH_ROLES) {
    const graph = chosen[role];
    plan[role] = {
      graph,
      external: graph === manifest.graphs[role] ? manifest.external[role] : [],
    };
  }
  return plan;
}
