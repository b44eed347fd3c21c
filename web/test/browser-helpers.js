// Starting `vae-run web` and Debian's Chromium for the browser test and the benchmark; both
// are stopped by their own handles (the server by its PID), never by name.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO } from './helpers.js';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const VAE_RUN = process.env.VAE_RUN ?? path.join(REPO, '.venv', 'bin', 'vae-run');
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** What is missing for the browser test here (empty when it can run). */
export function missingForBrowser() {
  return [CHROMIUM, VAE_RUN].filter((p) => !fs.existsSync(p));
}

/** `vae-run web --port 0` on 127.0.0.1; resolves to {url, stop} once it prints its URL. */
export function startServer(args = []) {
  const child = spawn(VAE_RUN, ['web', '--port', '0', ...args], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      process.kill(child.pid, 'SIGTERM');
    });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`vae-run web printed no URL in 30 s: ${output}`));
    }, 30000);
    const read = (chunk) => {
      output += chunk;
      const match = output.match(/http:\/\/127\.0\.0\.1:\d+\//);
      if (match) {
        clearTimeout(timer);
        resolve({ url: match[0], stop, pid: child.pid });
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vae-run web exited (${code}): ${output}`));
    });
  });
}

/** Chromium with a fresh profile; resolves to {context, close}. */
export async function launchBrowser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vae-web-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1280, height: 1000 },
    deviceScaleFactor: 1,
  });
  const close = async () => {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/** Opens the page and waits until it has loaded its models and drawn its first images. */
export async function openDemo(context, url, query = '') {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${url}demo/${query}`);
  await page.evaluate(() => window.vaeDemo.ready);
  return { page, errors };
}
