"""The real app (build_app + launch with the app's defaults) on tiny packages, for tests that talk to it over HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pytest

from skin_demo.hub import load_models
from skin_demo.modelpack import Models
from skin_demo.settings import Settings
from skin_demo.ui import build_app, launch, uploads_of
from skin_demo.uploads import Uploads, deepest_first
from tests.tiny_packages import make_models_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Served:
    """A launched app: its page URL, its Blocks, the models it serves and its Gradio temp (upload) folder."""

    url: str
    demo: gr.Blocks
    models: Models
    temp_dir: Path

    @property
    def uploads(self) -> Uploads:
        return uploads_of(self.demo)

    def files_left(self) -> list[Path]:
        return sorted(p for p in deepest_first(self.temp_dir) if p.is_file())  # the sweep may delete meanwhile


@contextmanager
def serve(root: Path, *, settings: Settings | None = None, **models_dir_kwargs) -> Iterator[Served]:
    """Launch the app with its Gradio temp folder under `root`; tiny packages unless `settings` name others."""
    with pytest.MonkeyPatch.context() as mp:
        temp_dir = root / "gradio_tmp"
        mp.setenv("GRADIO_TEMP_DIR", str(temp_dir))
        if settings is None:
            settings = Settings(models_dir=make_models_dir(root / "models", **models_dir_kwargs),
                                examples_dir=root / "no_examples", threads=1)  # fmt: skip
        models = load_models(settings)
        demo = build_app(settings, models=models)
        _, url, _ = launch(demo, models, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                           quiet=True)  # fmt: skip
        try:
            yield Served(url, demo, models, temp_dir)
        finally:
            demo.close()
