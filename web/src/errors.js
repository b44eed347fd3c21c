// The two kinds of refusal, named as in the Python runtime (vae_runtime.errors).

/** A model directory that breaks docs/model-format.md: the message names the file and why. */
export class ModelFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ModelFormatError';
  }
}

/** Bad arguments to encode/decode/sample/generate (shape, type, range). */
export class InputError extends Error {
  constructor(message) {
    super(message);
    this.name = 'InputError';
  }
}
