#!/usr/bin/env bash
# Vendor the ONNX Runtime Web files the on-device page needs into skin_demo/web/static/vendor/, so the Space and the
# static build need no npm at run time. Run after changing the version in package.json (npm then updates the lockfile).
#
# What is copied (the wasm-only ES module build; no WebGL/WebGPU, no bundled glue):
#   ort.wasm.min.mjs              the JavaScript API (imports the glue below from env.wasm.wasmPaths)
#   ort-wasm-simd-threaded.mjs    the Emscripten glue, also the worker script when the page runs threads
#   ort-wasm-simd-threaded.wasm   the runtime (SIMD, threads used where the page is cross-origin isolated),
#                                 stored gzip-compressed (.wasm.gz): 14 MB raw is over the repository's 10 MB file
#                                 limit, 3.7 MB compressed. The server sends it as Content-Encoding: gzip and the
#                                 static build writes it out uncompressed.
#   LICENSE                       the package's declared licence (it ships no LICENSE file)
# SHA256SUMS records the checksum of every vendored file and of the uncompressed wasm.
set -euo pipefail
cd "$(dirname "$0")/.."

npm ci --ignore-scripts --no-audit --no-fund
version=$(node -p "require('./node_modules/onnxruntime-web/package.json').version")
dist=node_modules/onnxruntime-web/dist
out=skin_demo/web/static/vendor/onnxruntime-web-$version

rm -rf skin_demo/web/static/vendor
mkdir -p "$out"
cp "$dist/ort.wasm.min.mjs" "$dist/ort-wasm-simd-threaded.mjs" "$out/"
# The npm package ships no LICENSE file; record its declared licence and origin next to the files.
node -p "const p = require('./node_modules/onnxruntime-web/package.json');
  p.name + ' ' + p.version + ', ' + p.license + ' licence, (c) Microsoft Corporation; https://www.npmjs.com/package/' + p.name" > "$out/LICENSE"
gzip -9 -n -c "$dist/ort-wasm-simd-threaded.wasm" > "$out/ort-wasm-simd-threaded.wasm.gz"

(
  cd "$out"
  sha256sum ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm.gz LICENSE
  (cd "$OLDPWD/$dist" && sha256sum ort-wasm-simd-threaded.wasm)
) > "$out/SHA256SUMS"

# The compressed copy must decompress to exactly the file npm installed (npm ci checked it against the lockfile).
if [ "$(gunzip -c "$out/ort-wasm-simd-threaded.wasm.gz" | sha256sum)" != "$(sha256sum < "$dist/ort-wasm-simd-threaded.wasm")" ]; then
  echo "the compressed wasm does not round-trip" >&2; exit 1
fi
ls -l "$out"
for f in "$out"/*; do
  if [ "$(stat -c %s "$f")" -gt $((10 * 1024 * 1024)) ]; then echo "$f is over 10 MB" >&2; exit 1; fi
done
