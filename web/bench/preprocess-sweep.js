// The JS preprocessing against Python on many images (scripts/web_preprocess_sweep.py
// writes them): how many pixels and decisions differ, and CPU time per image.
//   node web/bench/preprocess-sweep.js /tmp/sweep.json
// Not a test: nothing is asserted (web/test/preprocess.test.js is the test).

import fs from 'node:fs';
import zlib from 'node:zlib';
import { info, prepare } from '../src/preprocess.js';

const { specs, cases } = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
let worst = 0;
let pixels = 0;
let images = 0;
let decisions = 0;
let cpu = 0;
let pythonCpu = 0;
for (const c of cases) {
  const data = new Uint8Array(zlib.inflateSync(Buffer.from(c.pixels, 'base64')));
  const image = { data, width: c.width, height: c.height, channels: c.channels };
  const start = process.cpuUsage();
  const result = prepare(image, specs[c.spec]);
  const used = process.cpuUsage(start);
  cpu += (used.user + used.system) / 1e6;
  pythonCpu += c.cpu_s;
  const bytes = new Uint8Array(Buffer.from(c.output, 'base64'));
  const want = new Float32Array(bytes.buffer, 0, bytes.length / 4);
  let differ = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(result.image[i] - want[i]);
    worst = Math.max(worst, d);
    if (d > 0) differ++;
  }
  pixels += differ;
  if (differ) images++;
  if (JSON.stringify(info(result)) !== JSON.stringify(c.info)) {
    decisions++;
    console.log(
      `${c.name}: decisions ${JSON.stringify(info(result))} vs ${JSON.stringify(c.info)}`,
    );
  }
}
const ms = (s) => ((1000 * s) / cases.length).toFixed(1);
console.log(
  `${cases.length} images: max abs difference ${worst}, ${pixels} pixels differ in ${images} images, ${decisions} decisions differ`,
);
console.log(`CPU per image: JS ${ms(cpu)} ms (includes warm-up), Python ${ms(pythonCpu)} ms`);
