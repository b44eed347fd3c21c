// Reading a model directory's files, from a folder (Node) or a URL (browser or Node), and
// checking size and sha256 against the manifest before anyone else sees the bytes.

import { ModelFormatError } from './errors.js';

const isNode = typeof process !== 'undefined' && Boolean(process.versions?.node);

/** True when `source` is a URL to fetch rather than a folder to read. */
function isUrl(source) {
  if (source instanceof URL) return source.protocol !== 'file:';
  if (!isNode) return true; // in a browser every source is a URL, relative ones included
  return /^https?:\/\//i.test(source);
}

/** A folder (Node): reads files below it, refusing any that resolve outside it. */
async function folderSource(dir) {
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  const { fileURLToPath } = await import('node:url');
  const isFileUrl = dir instanceof URL || /^file:/i.test(String(dir));
  const root = path.resolve(isFileUrl ? fileURLToPath(dir) : String(dir));
  let realRoot;
  try {
    realRoot = await fs.realpath(root);
  } catch {
    throw new ModelFormatError(`${root}: model directory does not exist`);
  }
  return {
    describe: (rel) => path.join(root, rel),
    async read(rel) {
      const file = path.join(root, rel);
      let real;
      try {
        real = await fs.realpath(file);
      } catch (err) {
        if (err.code === 'ENOENT') return null;
        throw new ModelFormatError(`${file}: cannot resolve (${err.message})`);
      }
      if (real !== realRoot && !real.startsWith(realRoot + path.sep)) {
        throw new ModelFormatError(
          `${file}: resolves to ${real}, outside the model directory (symlink?)`,
        );
      }
      try {
        return new Uint8Array(await fs.readFile(real));
      } catch (err) {
        throw new ModelFormatError(`${file}: not readable (${err.message})`);
      }
    },
  };
}

/** A base URL: files are fetched relative to it (a trailing '/' is added). */
function urlSource(base, fetchImpl) {
  const here = typeof location !== 'undefined' ? location.href : undefined;
  const text = String(base);
  const root = new URL(text.endsWith('/') ? text : `${text}/`, here);
  return {
    describe: (rel) => new URL(rel, root).href,
    async read(rel) {
      const url = new URL(rel, root);
      let response;
      try {
        response = await fetchImpl(url.href);
      } catch (err) {
        throw new ModelFormatError(`${url.href}: cannot fetch (${err.message})`);
      }
      if (response.status === 404) return null;
      if (!response.ok) throw new ModelFormatError(`${url.href}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

/**
 * Where a model directory's files come from.
 * @param {string | URL} source folder path (Node) or base URL
 * @param {typeof fetch} [fetchImpl]
 */
export async function openSource(source, fetchImpl) {
  if (isUrl(source)) {
    const impl = fetchImpl ?? globalThis.fetch;
    if (typeof impl !== 'function') throw new ModelFormatError('no fetch() here to read URLs with');
    return urlSource(source, impl);
  }
  return folderSource(source);
}

async function sha256Hex(bytes) {
  if (isNode) {
    const { createHash } = await import('node:crypto');
    return createHash('sha256').update(bytes).digest('hex');
  }
  if (!globalThis.crypto?.subtle) {
    throw new ModelFormatError(
      'WebCrypto (crypto.subtle) is unavailable: serve the page over https or from localhost',
    );
  }
  const digest = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The bytes of `rel` once their size and sha256 match the manifest; what is checked is
 * what is returned (and later handed to ONNX Runtime).
 */
export async function readVerified(source, manifest, rel) {
  const entry = manifest.files.get(rel);
  const where = source.describe(rel);
  const data = await source.read(rel);
  if (data === null) throw new ModelFormatError(`${where}: missing (listed in manifest.json)`);
  if (data.length !== entry.bytes) {
    throw new ModelFormatError(
      `${where}: size is ${data.length} bytes, manifest.json says ${entry.bytes} (truncated or modified)`,
    );
  }
  const digest = await sha256Hex(data);
  if (digest !== entry.sha256) {
    throw new ModelFormatError(
      `${where}: sha256 ${digest} does not match manifest.json (${entry.sha256}); the file was modified or corrupted`,
    );
  }
  return data;
}
