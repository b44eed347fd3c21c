// Types of src/preprocess.js: raw images -> model inputs by the declared spec.

export const SIDE: 28;

/** The manifest's `preprocess` section (docs/preprocessing.md lists every step). */
export interface PreprocessSpec {
  version: 1;
  size: [number, number];
  alpha: 'ink' | 'black' | 'white';
  polarity: { border: number; quantile: number; threshold: number };
  reduce: { max_side: number };
  background: { method: 'blocks' | 'plane' | 'none'; [key: string]: unknown };
  ink: Record<string, unknown>;
  crop: { method: 'mass'; trim: number };
  fit: { box: number; down: 'area'; up: 'linear' | 'area' };
  sharpen?: { sigma: number; radius: number; amount: number };
  center: { method: 'mass'; target: [number, number] } | { method: 'box' };
  stretch: 'max' | 'none';
  quantize: number | null;
}

/** A raw image: an ImageData (RGBA), or row-major pixels with `channels` 1 (grey), 2 (grey +
 * alpha), 3 (RGB) or 4 (RGBA; default: data.length / (width x height)); uint8, uint16 or
 * floats in [0, 1]. */
export interface RawImage {
  data: Uint8Array | Uint8ClampedArray | Uint16Array | Float32Array | Float64Array | number[];
  width: number;
  height: number;
  channels?: 1 | 2 | 3 | 4;
}

export interface Flag {
  /** Stable: "no_ink". */
  code: string;
  message: string;
}

export interface Prepared {
  /** 28 x 28 floats in [0, 1], white ink on black. */
  image: Float32Array;
  inverted: boolean;
  /** The polarity was decided from the image (invert "auto"). */
  decided: boolean;
  /** The border statistic compared with polarity.threshold (null without a spec). */
  border: number | null;
  /** A model-sized input: only the polarity step applied. */
  passthrough: boolean;
  flags: Flag[];
}

/** As Prepared.info in Python: polarity "auto" | "forced" ("none" without a spec). */
export interface Info {
  inverted: boolean;
  polarity: 'auto' | 'forced' | 'none';
  border: number | null;
  passthrough: boolean;
  flags: string[];
}

export class SpecError extends RangeError {}
/** `spec` checked: null for "none", else the spec; throws a SpecError naming the fault. */
export function validateSpec(spec: unknown, where?: string): PreprocessSpec | null;
/** One image through a checked spec's steps. */
export function prepare(
  image: RawImage,
  spec: PreprocessSpec,
  options?: { invert?: 'auto' | boolean },
): Prepared;
/** One image through `spec` ("none" / undefined: a plain resize of the whole image). */
export function preprocess(
  image: RawImage,
  spec?: PreprocessSpec | 'none' | null,
  options?: { invert?: 'auto' | boolean },
): Prepared;
/** preprocess(image, spec, options).image */
export function toModelInput(
  image: RawImage,
  spec?: PreprocessSpec | 'none' | null,
  options?: { invert?: 'auto' | boolean },
): Float32Array;
/** The whole image averaged down to 28 x 28, luminance x alpha (no spec). */
export function plainResize(image: RawImage): Float32Array;
export function greyAlpha(image: RawImage): {
  grey: Float32Array;
  alpha: Float32Array | null;
  width: number;
  height: number;
};
export function otsu(values: ArrayLike<number>): number;
export function info(result: Prepared): Info;
