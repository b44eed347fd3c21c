export const SIDE: 28;

/**
 * The model input (784 floats in [0, 1], white digit on black) of an RGBA image such as a
 * canvas's ImageData. `spec`: the model's declared preprocess section (see preprocess.js).
 */
export function toModelInput(
  image: { data: ArrayLike<number>; width: number; height: number },
  spec?: object,
): Float32Array;
