"""Shared pytest fixtures: an isolated Hugging Face cache, no telemetry, and the real datasets when present."""

from __future__ import annotations

import http.server
import os
import tempfile
import threading
from pathlib import Path

import pytest

# huggingface_hub and gradio read these once, at import, which can happen while tests are collected: point
# them at a throw-away home before anything imports them, so no test touches a developer's cache or token.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="skin-demo-hf-home-")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.pop("HF_TOKEN", None)
os.environ.pop("HF_ENDPOINT", None)

from benchmarks.common import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (after the environment above)
from skin_demo import REPO_ROOT  # noqa: E402

pytest_plugins = ["tests.hub_fixtures"]

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
HAM10000_DIR = SHARED_DATA / "ham10000"
MALIGNANT_VS_BENIGN_DIR = SHARED_DATA / "malignant_vs_benign"


@pytest.fixture(autouse=True)
def isolated_hf_home(tmp_path_factory, monkeypatch):
    """Every test gets its own HF cache and token-less, telemetry-free Hub client and Gradio."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    return home


@pytest.fixture
def ham10000_dir() -> Path:
    """The real HAM10000 copy in ../shared/data; tests that need it skip on a machine without it."""
    if not (HAM10000_DIR / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real HAM10000 data not found at {HAM10000_DIR} (present in CI, absent on a fresh machine)")
    return HAM10000_DIR


@pytest.fixture
def malignant_vs_benign_dir() -> Path:
    """The real ISIC malignant-vs-benign copy in ../shared/data; skips where absent."""
    if not (MALIGNANT_VS_BENIGN_DIR / "fanconi_to_ham10000_map.csv").is_file():
        pytest.skip(f"malignant-vs-benign data not found at {MALIGNANT_VS_BENIGN_DIR}")
    return MALIGNANT_VS_BENIGN_DIR




@pytest.fixture(scope="module")
def playwright():
    """Playwright, for the browser tests; skips where Debian's chromium is not installed."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as instance:
        yield instance


@pytest.fixture(scope="module")
def browser(playwright):
    """One headless Chromium per test module."""
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def local_site():
    """An HTTP server on 127.0.0.1 that records every request: a third party that the server must never fetch and
    the page must never make a visitor's browser contact. Yields (its URL, the paths requested)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
