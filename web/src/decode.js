// Image files (PNG, JPEG, WebP, ... whatever the browser decodes) as raw pixels for the
// preprocessing, in a browser. The pixels must be the file's own values: no colour
// management and no premultiplied alpha (either would change grey levels), EXIF
// orientation applied, as the Python runtime decodes (docs/preprocessing.md, step 0).

import { InputError } from './errors.js';

/**
 * Decode an image file into an ImageData ({data: RGBA Uint8ClampedArray, width, height}).
 * @param {Blob | ArrayBuffer | Uint8Array} source the file's bytes (a File is a Blob)
 * @param {string} [name] how errors name it
 * @returns {Promise<ImageData>}
 */
export async function decodeImage(source, name = 'image') {
  if (typeof createImageBitmap !== 'function') {
    throw new InputError(
      `${name}: decoding image files needs a browser (createImageBitmap); in Node pass decoded pixels ({data, width, height})`,
    );
  }
  const blob = source instanceof Blob ? source : new Blob([source]);
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, {
      colorSpaceConversion: 'none',
      premultiplyAlpha: 'none',
      imageOrientation: 'from-image',
    });
  } catch (err) {
    throw new InputError(`${name}: not an image this browser can decode (${err.message ?? err})`);
  }
  try {
    const { width, height } = bitmap;
    const canvas =
      typeof OffscreenCanvas === 'function'
        ? new OffscreenCanvas(width, height)
        : Object.assign(document.createElement('canvas'), { width, height });
    const ctx = canvas.getContext('2d', { willReadFrequently: true, colorSpace: 'srgb' });
    ctx.drawImage(bitmap, 0, 0);
    return ctx.getImageData(0, 0, width, height, { colorSpace: 'srgb' });
  } finally {
    bitmap.close();
  }
}
