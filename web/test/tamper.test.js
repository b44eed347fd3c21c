// Refusals: a model directory whose files do not match its manifest, or that asks for what
// the format forbids, is refused with a ModelFormatError naming the file and the reason.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { ModelFormatError, loadVAE } from '../src/index.js';
import { ARTIFACTS } from './helpers.js';

const SOURCE = path.join(ARTIFACTS, 'mnist-mlp-z20'); // the smallest shipped model
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-web-tamper-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

let copies = 0;
/** A fresh copy of the model; `change(dir, manifest)` edits it (return the manifest to rewrite it). */
function tampered(change) {
  const dir = path.join(scratch, `m${copies++}`);
  fs.cpSync(SOURCE, dir, { recursive: true });
  const manifestPath = path.join(dir, 'manifest.json');
  const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'));
  if (change(dir, manifest)) fs.writeFileSync(manifestPath, JSON.stringify(manifest));
  return dir;
}

function flipByte(file, offset = 1000) {
  const bytes = fs.readFileSync(file);
  bytes[offset] ^= 0x01;
  fs.writeFileSync(file, bytes);
}

async function refused(dir, pattern, options = {}) {
  await assert.rejects(loadVAE(dir, { ort, ...options }), (err) => {
    assert.ok(err instanceof ModelFormatError, `${err.name}: ${err.message}`);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('tampered model directories', () => {
  it('loads the untouched copy (the cases below differ from it in one thing)', async () => {
    const vae = await loadVAE(
      tampered(() => false),
      { ort },
    );
    await vae.release();
  });

  it('refuses a truncated checkpoint (size)', async () => {
    const dir = tampered((d) => {
      const file = path.join(d, 'checkpoints/decoder.safetensors');
      fs.truncateSync(file, fs.statSync(file).size - 4);
    });
    await refused(dir, /decoder\.safetensors: size is \d+ bytes, manifest\.json says \d+/);
  });

  it('refuses a graph with one bit changed (sha256)', async () => {
    const dir = tampered((d) => flipByte(path.join(d, 'encoder.onnx'), 200));
    await refused(dir, /encoder\.onnx: sha256 [0-9a-f]{64} does not match manifest\.json/);
  });

  it('refuses changed external data (sha256 of the checkpoint the graph reads)', async () => {
    const dir = tampered((d) => flipByte(path.join(d, 'checkpoints/encoder.safetensors'), 5000));
    await refused(dir, /encoder\.safetensors: sha256 .* does not match/);
  });

  it("checks a variant's own files, and only the files it uses", async () => {
    const dir = tampered((d) => flipByte(path.join(d, 'decoder.int8.onnx')));
    await refused(dir, /decoder\.int8\.onnx: sha256/, { variant: 'int8' });
    const fp32 = await loadVAE(dir, { ort }); // the default graphs never touch that file
    await fp32.release();
  });

  it('refuses a graph file that is not listed in the manifest', async () => {
    const dir = tampered((d, m) => {
      fs.copyFileSync(path.join(d, 'encoder.onnx'), path.join(d, 'extra.onnx'));
      m.graphs.encoder.file = 'extra.onnx';
      return true;
    });
    await refused(
      dir,
      /graphs\.encoder\.file names "extra\.onnx", which is not listed under 'files'/,
    );
  });

  it('refuses a graph whose external data the manifest does not list for it', async () => {
    const dir = tampered((d, m) => {
      m.graphs.decoder.external_data = [];
      return true;
    });
    await refused(
      dir,
      /decoder\.onnx: reads external data from "checkpoints\/decoder\.safetensors", which manifest\.json does not list under graphs\.decoder\.external_data/,
    );
  });

  it('refuses a format version it does not know', async () => {
    const dir = tampered((d, m) => {
      m.format_version = 3;
      return true;
    });
    await refused(dir, /format_version 3 is not supported/);
  });

  it('refuses a path leaving the directory', async () => {
    const dir = tampered((d, m) => {
      m.files['../outside.onnx'] = m.files['encoder.onnx'];
      return true;
    });
    await refused(dir, /file path "\.\.\/outside\.onnx" contains '\.\.'/);
  });

  it('refuses a symlink that resolves outside the directory', async () => {
    const dir = tampered((d) => {
      const outside = path.join(scratch, `outside-${copies}.onnx`);
      fs.renameSync(path.join(d, 'encoder.onnx'), outside);
      fs.symlinkSync(outside, path.join(d, 'encoder.onnx'));
    });
    await refused(dir, /encoder\.onnx: resolves to .*, outside the model directory/);
  });

  it('refuses a missing file', async () => {
    const dir = tampered((d) => fs.rmSync(path.join(d, 'decoder.onnx')));
    await refused(dir, /decoder\.onnx: missing \(listed in manifest\.json\)/);
  });

  it('refuses an unknown variant, naming those there are', async () => {
    await refused(SOURCE, /no variant "int4" \(variants: fp16, int8\)/, { variant: 'int4' });
  });

  it('refuses a folder without a manifest', async () => {
    await refused(scratch, /manifest\.json: missing; not a model directory/);
  });

  it('refuses a manifest with a mistyped key', async () => {
    const dir = tampered((d, m) => {
      m.latent_dim = '20';
      return true;
    });
    await refused(dir, /key "latent_dim" must be an integer/);
  });

  it('refuses a well-hashed graph of another model (its metadata_props disagree)', async () => {
    const dir = tampered((d, m) => {
      // conv-z2's decoder and weights, listed with their true sizes and sha256s.
      for (const rel of ['decoder.onnx', 'checkpoints/decoder.safetensors']) {
        const bytes = fs.readFileSync(path.join(ARTIFACTS, 'mnist-conv-z2', rel));
        fs.writeFileSync(path.join(d, rel), bytes);
        const sha256 = createHash('sha256').update(bytes).digest('hex');
        m.files[rel] = { ...m.files[rel], sha256, bytes: bytes.length };
      }
      return true;
    });
    await refused(
      dir,
      /decoder\.onnx: metadata_props vae_onnx\.latent_dim is "2", manifest\.json implies "20"/,
    );
  });

  it('refuses a gaussian likelihood without a usable sigma', async () => {
    const dir = tampered((d, m) => {
      m.likelihood = { name: 'gaussian', sigma: -1 };
      return true;
    });
    await refused(dir, /likelihood\.sigma must be a finite number > 0, got -1/);
  });

  it('checks over HTTP too: bytes changed in transit are refused', async () => {
    // A fetch() that serves the folder and flips one byte of the decoder on the way.
    const fakeFetch = async (url) => {
      const rel = new URL(url).pathname.replace(/^\/model\//, '');
      const bytes = fs.readFileSync(path.join(SOURCE, rel));
      if (rel === 'decoder.onnx') bytes[300] ^= 0x01;
      return new Response(bytes);
    };
    await refused(
      'http://127.0.0.1:9/model',
      /^http:\/\/127\.0\.0\.1:9\/model\/decoder\.onnx: sha256/,
      { fetch: fakeFetch },
    );
  });
});
