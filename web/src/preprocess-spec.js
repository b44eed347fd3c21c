// The declarative preprocessing spec (the manifest's `preprocess` section), checked as
// runtime/vae_runtime/preprocess_spec.py checks it: "none", or an object naming every step
// (docs/preprocessing.md). A fault is a SpecError naming the section and parameter.

export const SPEC_VERSION = 1;
export const NONE = 'none';
/** The steps, in the order they run; all required except `sharpen`. */
export const SECTIONS = [
  'version',
  'size',
  'alpha',
  'polarity',
  'reduce',
  'background',
  'ink',
  'crop',
  'fit',
  'sharpen',
  'center',
  'stretch',
  'quantize',
];
const OPTIONAL = new Set(['sharpen']);

export class SpecError extends RangeError {
  constructor(message) {
    super(message);
    this.name = 'SpecError';
  }
}

const q = JSON.stringify;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function number(value, where, lo, hi, integer = false) {
  const ok = typeof value === 'number' && Number.isFinite(value);
  if (!ok || (integer && !Number.isInteger(value))) {
    throw new SpecError(
      `${where}: must be ${integer ? 'an integer' : 'a number'}, got ${q(value)}`,
    );
  }
  if (!(lo <= value && value <= hi)) {
    throw new SpecError(`${where}: must lie in [${lo}, ${hi}], got ${q(value)}`);
  }
}
const unit =
  (lo = 0, hi = 1) =>
  (v, w) =>
    number(v, w, lo, hi);
const int = (lo, hi) => (v, w) => number(v, w, lo, hi, true);
const oneOf =
  (...choices) =>
  (v, w) => {
    if (!choices.includes(v))
      throw new SpecError(`${w}: must be one of ${q(choices)}, got ${q(v)}`);
  };
const pair = (lo, hi, integer) => (v, w) => {
  if (!Array.isArray(v) || v.length !== 2) {
    throw new SpecError(`${w}: must be a list of two numbers, got ${q(v)}`);
  }
  v.forEach((x, i) => number(x, `${w}[${i}]`, lo, hi, integer));
};

/** An object whose keys are exactly those of `fields`, each checked by its function. */
function object(value, where, fields) {
  if (!isObject(value)) throw new SpecError(`${where}: must be an object, got ${q(value)}`);
  const keys = Object.keys(fields);
  const unknown = Object.keys(value)
    .filter((k) => !keys.includes(k))
    .sort();
  const missing = keys.filter((k) => !(k in value)).sort();
  if (unknown.length)
    throw new SpecError(`${where}: unknown parameter(s) ${q(unknown)}; known: ${q(keys.sort())}`);
  if (missing.length) throw new SpecError(`${where}: missing parameter(s) ${q(missing)}`);
  for (const [key, check] of Object.entries(fields)) check(value[key], `${where}.${key}`);
}
const fields = (f) => (v, w) => object(v, w, f);
/** An object whose `method` picks the parameters it must have. */
const variant = (methods) => (value, where) => {
  const method = isObject(value) ? value.method : undefined;
  if (typeof method !== 'string' || !(method in methods)) {
    throw new SpecError(
      `${where}.method: must be one of ${q(Object.keys(methods))}, got ${q(method ?? null)}`,
    );
  }
  object(value, where, { method: oneOf(method), ...methods[method] });
};
const odd = (lo, hi) => (v, w) => {
  number(v, w, lo, hi, true);
  if (v % 2 === 0) throw new SpecError(`${w}: must be odd, got ${v}`);
};

const CHECKS = {
  size: pair(1, 4096, true),
  alpha: oneOf('ink', 'black', 'white'),
  polarity: fields({ border: unit(0, 0.5), quantile: unit(), threshold: unit() }),
  reduce: fields({ max_side: int(8, 8192) }),
  background: variant({
    blocks: { grid: int(1, 64), quantile: unit(), filter: odd(1, 15), rank: unit() },
    plane: {},
    none: {},
  }),
  ink: fields({
    threshold: (v, w) => v === 'otsu' || number(v, w, 0, 1),
    noise_threshold: unit(0, 100),
    relative: unit(),
    min_contrast: unit(),
    noise_factor: unit(0, 100),
    levels: variant({ ramp: { low: unit() }, keep: {} }),
  }),
  crop: variant({ mass: { trim: unit(0, 0.1) } }),
  fit: fields({ box: int(1, 4096), down: oneOf('area'), up: oneOf('linear', 'area') }),
  sharpen: fields({ sigma: unit(0.1, 10), radius: int(1, 10), amount: unit(0, 10) }),
  center: variant({ mass: { target: pair(0, 4096, false) }, box: {} }),
  stretch: oneOf('max', 'none'),
  quantize: (v, w) => v === null || number(v, w, 2, 65535, true),
};

/**
 * `spec` checked: null for "none", else the spec itself; a SpecError names the fault.
 * @param {unknown} spec
 * @param {string} [where] how messages name it
 */
export function validateSpec(spec, where = 'preprocess') {
  if (spec === NONE) return null;
  if (!isObject(spec)) {
    throw new SpecError(`${where}: must be "none" or an object, got ${q(spec)}`);
  }
  const unknown = Object.keys(spec)
    .filter((k) => !SECTIONS.includes(k))
    .sort();
  if (unknown.length) {
    throw new SpecError(`${where}: unknown step(s) ${q(unknown)}; known: ${q(SECTIONS)}`);
  }
  const missing = SECTIONS.filter((s) => !(s in spec) && !OPTIONAL.has(s));
  if (missing.length) throw new SpecError(`${where}: missing step(s) ${q(missing)}`);
  if (spec.version !== SPEC_VERSION) {
    throw new SpecError(`${where}.version: must be ${SPEC_VERSION}, got ${q(spec.version)}`);
  }
  for (const name of SECTIONS.slice(1)) {
    if (name in spec) CHECKS[name](spec[name], `${where}.${name}`);
  }
  const [height, width] = spec.size;
  if (spec.fit.box > Math.min(height, width)) {
    throw new SpecError(
      `${where}.fit.box: ${spec.fit.box} does not fit in size ${height}x${width}`,
    );
  }
  if (spec.center.method === 'mass') {
    const [ty, tx] = spec.center.target;
    if (!(ty >= 0 && ty <= height - 1 && tx >= 0 && tx <= width - 1)) {
      throw new SpecError(
        `${where}.center.target: ${q(spec.center.target)} lies outside the ${height}x${width} canvas`,
      );
    }
  }
  return spec;
}
