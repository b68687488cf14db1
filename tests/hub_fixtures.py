"""The `hub` fixture: a HubStandin that the real huggingface_hub client talks to, for one test.

huggingface_hub 2.4.0 reads its settings (HF_ENDPOINT, HF_HUB_DISABLE_XET, HF_HOME, HF_HUB_OFFLINE, ...) once, when
it is first imported, and builds then the module-level `HfApi` behind `huggingface_hub.upload_folder` & co. A test
module has usually imported it before any fixture runs, so setting the environment is not enough: the values it
already read are patched as well. The environment is set too, for subprocesses and fresh imports.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Iterator

import pytest

from tests.hub_standin import HubStandin


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Iterator[HubStandin]:
    """A started HubStandin, with huggingface_hub pointed at it and its cache and token under this test's HF_HOME.

    The client's retry back-off sleeps (1, 2, 4, 8, 8 s) are skipped, so a fault fails a call in milliseconds
    instead of ~23 s; the retries themselves still happen and show in `hub.requests`.
    """
    from huggingface_hub import constants, file_download, hf_api
    from huggingface_hub.utils import _http

    standin = HubStandin(tmp_path / "hub_standin").start()
    home = os.environ.get("HF_HOME") or str(tmp_path / "hf_home")  # the conftest's isolated home, when it ran
    monkeypatch.setenv("HF_ENDPOINT", standin.endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # the stand-in speaks LFS, not Xet: see hub_standin.py
    monkeypatch.setattr(constants, "ENDPOINT", standin.endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", standin.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_api.api, "endpoint", standin.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # With telemetry on, the first request of a process also fetches an "agent harnesses" list from the endpoint.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", os.path.join(home, "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", os.path.join(home, "token"))
    no_sleep_time = types.SimpleNamespace(**{**vars(time), "sleep": lambda seconds: None})
    monkeypatch.setattr(_http, "time", no_sleep_time)
    monkeypatch.setattr(file_download, "time", no_sleep_time)
    yield standin
    standin.stop()
