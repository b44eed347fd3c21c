// The 2-D model's test-set embeddings (the page's scatter) as a nearest-neighbour classifier:
// "which digit is this" by the model's own embeddings.

import fs from 'node:fs';
import path from 'node:path';
import { WEB } from './helpers.js';

export function loadScatter(name = 'mnist-conv-z2') {
  const s = JSON.parse(
    fs.readFileSync(path.join(WEB, 'demo', 'assets', `${name}.embeddings.json`), 'utf8'),
  );
  return { x: s.x, y: s.y, labels: Array.from(s.labels, Number), count: s.count };
}

function nearest(scatter, z, k) {
  const d = scatter.x.map((x, i) => [(x - z[0]) ** 2 + (scatter.y[i] - z[1]) ** 2, i]);
  d.sort((a, b) => a[0] - b[0]);
  return d.slice(0, k).map(([, i]) => scatter.labels[i]);
}

/** The majority label of the k nearest test means (ties: the nearer label). */
export function classify(scatter, z, k = 5) {
  const labels = nearest(scatter, z, k);
  const votes = new Map();
  for (const l of labels) votes.set(l, (votes.get(l) ?? 0) + 1);
  return [...votes.entries()].sort(
    (a, b) => b[1] - a[1] || labels.indexOf(a[0]) - labels.indexOf(b[0]),
  )[0][0];
}

/** A point deep inside class `label`: of every 20th member, the one whose 25 neighbours agree most. */
export function heartOf(scatter, label) {
  let best = null;
  const members = scatter.labels.map((l, i) => (l === label ? i : -1)).filter((i) => i >= 0);
  for (let m = 0; m < members.length; m += 20) {
    const i = members[m];
    const z = [scatter.x[i], scatter.y[i]];
    const purity = nearest(scatter, z, 25).filter((l) => l === label).length;
    if (!best || purity > best.purity) best = { z, purity };
  }
  return best.z;
}
