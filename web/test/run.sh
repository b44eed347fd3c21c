#!/usr/bin/env bash
# The web tests (make test-web): the package against the golden files in Node, tamper
# refusals, and the page in Chromium. Without node/npm (or Chromium, see browser.test.js)
# they are skipped with a visible reason; with VAE_ONNX_WEB_REQUIRED=1 (CI) that fails.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() {
  if [ "${VAE_ONNX_WEB_REQUIRED:-0}" = 1 ]; then
    echo "web tests: FAILED: $1 (VAE_ONNX_WEB_REQUIRED=1)" >&2
    exit 1
  fi
  echo "web tests: SKIPPED: $1"
  exit 0
}

command -v node >/dev/null || skip "node is not installed (Node.js >= 20 runs them)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || skip "node $(node --version) is too old (they need >= 20)"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  command -v npm >/dev/null || skip "npm is not installed and web/node_modules is missing"
  # --ignore-scripts: onnxruntime-node's install script downloads CUDA libraries from
  # outside the registry; the CPU binary is in the package itself.
  npm ci --ignore-scripts --no-audit --no-fund
fi
npx --no-install prettier --check . >/dev/null || { npx --no-install prettier --check .; echo "web: run `npm run format` in web/" >&2; exit 1; }
exec node --test --test-reporter=spec test/*.test.js
