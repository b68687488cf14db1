"""`python -m skin_demo.web build OUT`: the on-device page as a self-contained static folder.

The folder holds the page, the runtime (the wasm uncompressed: a static host cannot mark a file gzip-encoded),
manifest.json, the model files of the packages the app would use (as configured: bundled or Hub) and a README.md that
is a Hugging Face static-Space card. It works from any static host, e.g. `python -m http.server` inside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import shutil
import sys
from pathlib import Path

from skin_demo.hub import load_models
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.settings import Settings, SettingsError
from skin_demo.web.site import (
    COMPRESSED_SUFFIX,
    STATIC_DIR,
    WebError,
    build_manifest,
    malignancy_config,
    model_files,
    page_texts,
    wasm_size,
)

SPACE_CARD = """---
title: Skin lesion classifier on this device
emoji: 🔬
colorFrom: blue
colorTo: yellow
sdk: static
app_file: index.html
pinned: false
license: cc-by-nc-4.0
short_description: Research demo that runs in your browser, no upload
tags:
  - onnxruntime-web
  - dermatology
  - research-demo
custom_headers:
  cross-origin-embedder-policy: require-corp
  cross-origin-opener-policy: same-origin
  cross-origin-resource-policy: cross-origin
---

# Skin lesion classifier, on this device (research demo)

**{disclaimer}**

This page runs the skin-demo model packages ({tasks}) in the visitor's browser with ONNX Runtime Web
(WebAssembly). The photo is analysed on the device and never uploaded; the page loads files from its own origin only,
and after the first visit ({megabytes:.1f} MB) it works offline.

Built by `python -m skin_demo.web build` from the skin-demo repository. Models:

{models}

The COOP/COEP headers above make the page cross-origin isolated, so the runtime can use several threads. To publish
this folder as a static Space: `huggingface_hub.HfApi().upload_folder(folder_path=".", repo_id="ORG/NAME",
repo_type="space")` (it stores the model files, over 10 MB each, as large files).
"""


def build_static(
    out: Path, models: list[ModelPack], *, texts: dict[str, str], notices: dict[str, str] | None = None
) -> Path:
    """Write the static site for `models` into `out` (created; must not exist or be empty) and return it."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise WebError(f"{out}: not empty; give a new or empty folder")
    files = model_files(models)
    shutil.copytree(STATIC_DIR, out, dirs_exist_ok=True, ignore=_skip_compressed)
    for packed in STATIC_DIR.rglob("*" + COMPRESSED_SUFFIX):
        target = out / packed.relative_to(STATIC_DIR).with_suffix("")
        with gzip.open(packed, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    for file in files:
        target = out / file.url
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.path, target)
    size = wasm_size()
    manifest = build_manifest(files, malignancy=malignancy_config(models), texts=texts, wasm_bytes=size,
                              wasm_transfer_bytes=size, notices=notices, server_page=None)  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    total = size + sum(f.size for f in files)
    card = SPACE_CARD.format(
        disclaimer=texts["disclaimer"],
        tasks=", ".join(task for f in files for task in f.tasks),
        megabytes=total / 1e6,
        models="\n".join(f"- `{f.name}`: {f.source}, sha256 `{f.sha256}`" for f in files),
    )
    (out / "README.md").write_text(card, encoding="utf-8")
    return out


def _skip_compressed(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n.endswith(COMPRESSED_SUFFIX)]


def packages_in_use(settings: Settings) -> tuple[list[ModelPack], dict[str, str]]:
    """The packages the app would serve with these settings, and its notices about them."""
    models = load_models(settings)
    return list(models.values()), dict(models.notices)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skin_demo.web", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the on-device page as a static folder")
    build.add_argument("out", type=Path, help="a new or empty folder")
    build.add_argument("--models-dir", type=Path, help="bundled packages (default: SKIN_DEMO_MODELS_DIR or models/)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.models_dir:
            settings = dataclasses.replace(settings, models_dir=args.models_dir)
        packs, notices = packages_in_use(settings)
        out = build_static(args.out, packs, texts=page_texts(), notices=notices)
    except (PackageError, SettingsError, WebError) as exc:
        print(f"skin_demo.web build: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({', '.join(p.config.task for p in packs)}); serve it with: cd {out} && python -m http.server")
    return 0
