// Types of vae-onnx-web (src/index.js). Arrays are row-major Float32Arrays: images n x 784
// (28 x 28, values in [0, 1], white digit on black), latents n x L.

import type { PreprocessSpec, RawImage, Info } from './preprocess.js';
export type { PreprocessSpec, RawImage, Info } from './preprocess.js';

/** What loadVAE needs from onnxruntime-web or onnxruntime-node (pass the module itself). */
export interface OrtLike {
  InferenceSession: { create(model: Uint8Array, options?: object): Promise<unknown> };
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => unknown;
}

export interface LoadOptions {
  /** The onnxruntime module: `import * as ort from 'onnxruntime-web'` (or '-node'). */
  ort: OrtLike;
  /** A name under the manifest's `variants` (e.g. "int8", "fp16"); default: the fp32 graphs. */
  variant?: string | null;
  /** Merged into each InferenceSession's options (externalData is always set by loadVAE). */
  sessionOptions?: Record<string, unknown>;
  /** Used for URLs instead of globalThis.fetch. */
  fetch?: (url: string) => Promise<Response>;
  /** Largest batch handed to ONNX Runtime at once; larger inputs run in chunks. Default 256. */
  batchSize?: number;
  /** The preprocessing: default the manifest's declared `preprocess` section; "none" skips
   * it (model-shaped arrays as they are, raw images plainly resized); or a spec object. */
  preprocess?: PreprocessSpec | 'none';
}

/** Per call: the polarity ("auto": decided from the border; true: dark ink on light paper)
 * and the preprocessing (as LoadOptions.preprocess, overriding the model's). */
export interface PrepareOptions {
  invert?: 'auto' | boolean;
  preprocess?: PreprocessSpec | 'none';
}

/** Model-shaped pixels (n x 784, uint8 or floats in [0, 1]), one raw image, or a list of them. */
export type Images = Float32Array | Uint8Array | ArrayLike<number> | RawImage | RawImage[];

/** A seeded source of float32 standard normals (xoshiro128** + Box-Muller; docs/web.md). */
export interface Random {
  normal(): number;
  normals(count: number): Float32Array;
}

export interface SampleOptions {
  /** Seed of this package's PRNG (not numpy's: the streams differ). */
  seed?: number;
  rng?: Random;
  /** The noise itself, n x L; excludes seed and rng. */
  eps?: Float32Array | ArrayLike<number>;
}

export interface VAE {
  /** manifest.json as loaded (checked). */
  readonly manifest: Record<string, any>;
  readonly name: string;
  readonly latentDim: number;
  readonly variant: string | null;
  /** The graph files in use, relative to the model directory. */
  readonly files: { encoder: string; decoder: string };
  /** The preprocessing spec in effect (null: none). */
  readonly preprocess: PreprocessSpec | null;
  /** Model inputs (n x 784) of any input, with what was decided for each image. Options may
   * take the place of `n`. */
  prepare(
    input: Images,
    n?: number | PrepareOptions,
    options?: PrepareOptions,
  ): { pixels: Float32Array; n: number; info: Info[] };
  /** mu and logvar of q(z|x), each n x L, of prepare(input). `n` defaults to length / 784. */
  encode(
    input: Images,
    n?: number | PrepareOptions,
    options?: PrepareOptions,
  ): Promise<{ mu: Float32Array; logvar: Float32Array; info: Info[] }>;
  /** mu alone: the deterministic embedding, n x L. */
  embed(
    input: Images,
    n?: number | PrepareOptions,
    options?: PrepareOptions,
  ): Promise<Float32Array>;
  /** Means of p(x|z): n x 784 in [0, 1]. `n` defaults to z.length / L. */
  decode(z: Float32Array | ArrayLike<number>, n?: number): Promise<Float32Array>;
  /** z = mu + exp(0.5 * clamp(logvar, -30, 20)) * eps, n x L (synchronous). */
  sample(
    mu: Float32Array | ArrayLike<number>,
    logvar: Float32Array | ArrayLike<number>,
    options?: SampleOptions,
  ): Float32Array;
  /** decode(z) for n draws of z ~ N(0, I) from the seeded PRNG (no seed: fresh entropy). */
  generate(n: number, options?: { seed?: number; rng?: Random }): Promise<Float32Array>;
  /** decode(embed(input)). */
  reconstruct(
    input: Images,
    n?: number | PrepareOptions,
    options?: PrepareOptions,
  ): Promise<Float32Array>;
  /** `steps` images decoded along the line from mu(a) to mu(b), ends included; a, b: one
   * image each (784 values or a raw image). */
  interpolate(
    a: Float32Array | ArrayLike<number> | RawImage,
    b: Float32Array | ArrayLike<number> | RawImage,
    steps?: number,
    options?: PrepareOptions,
  ): Promise<Float32Array>;
  /** Frees both ONNX Runtime sessions. */
  release(): Promise<void>;
}

/**
 * Load a model directory: a folder path or file: URL (Node) or an http(s)/relative URL.
 * Checks manifest.json (format version, keys, paths) and the size and sha256 of every file
 * it uses before ONNX Runtime sees the bytes; refuses with a ModelFormatError otherwise.
 */
export function loadVAE(source: string | URL, options: LoadOptions): Promise<VAE>;

export function createRandom(seed: number): Random;

export class ModelFormatError extends Error {}
export class InputError extends Error {}
export class SpecError extends RangeError {}
/** Decodes an image file in a browser (no colour management, no premultiplied alpha, EXIF
 * orientation applied) into an ImageData for encode/prepare; refuses in Node. */
export function decodeImage(
  source: Blob | ArrayBuffer | Uint8Array,
  name?: string,
): Promise<ImageData>;

export const PIXELS: 784;
export const LOGVAR_MIN: -30;
export const LOGVAR_MAX: 20;
