"""The vendored ONNX Runtime Web files are what scripts/vendor_onnxruntime_web.sh copied from the pinned package."""

from __future__ import annotations

import gzip
import hashlib
import json

from skin_demo.web.site import COMPRESSED_SUFFIX, RUNTIME_MODULE, RUNTIME_WASM, runtime_dir, wasm_size
from tests.conftest import REPO_ROOT

MAX_VENDORED_BYTES = 10 * 1024 * 1024  # the repository's file limit (and well under the 20 MB a file may have)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_vendored_runtime_matches_its_checksums_and_the_pinned_version():
    folder = runtime_dir()
    sums = dict(reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines())
    for name in (RUNTIME_MODULE, "ort-wasm-simd-threaded.mjs", RUNTIME_WASM + COMPRESSED_SUFFIX, "LICENSE"):
        data = (folder / name).read_bytes()
        assert _sha256(data) == sums[name], f"{name} differs from SHA256SUMS; rerun scripts/vendor_onnxruntime_web.sh"
        assert len(data) < MAX_VENDORED_BYTES
    wasm = gzip.decompress((folder / (RUNTIME_WASM + COMPRESSED_SUFFIX)).read_bytes())
    assert _sha256(wasm) == sums[RUNTIME_WASM] and len(wasm) == wasm_size()
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    pinned = json.loads((REPO_ROOT / "package.json").read_text())["dependencies"]["onnxruntime-web"]
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == pinned
    assert folder.name == f"onnxruntime-web-{pinned}"
