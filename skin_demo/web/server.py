"""Serve the on-device page at /on-device/ on the Gradio app's own server (FastAPI/Starlette underneath).

`mount_on_device(app, models)` adds one Starlette sub-application in front of the app's routes: the page, its
scripts, the vendored runtime (the wasm sent gzip-encoded, as it is stored), manifest.json and each package's
model.onnx under a content-hashed URL (gzip-encoded, compressed once at startup; one file for all the tasks of a
package with a head per task). Only these files are served; the page never sends anything back. Every response of
the sub-application carries COOP/COEP, so the page is cross-origin isolated and ONNX Runtime Web may use threads; the
Gradio page's own responses are left as they are.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from skin_demo.modelpack import ModelPack, Models
from skin_demo.web.site import (
    RUNTIME_WASM,
    STATIC_DIR,
    build_manifest,
    compressed_wasm,
    malignancy_config,
    model_files,
    page_texts,
    runtime_dir,
    static_url,
    wasm_size,
)

log = logging.getLogger(__name__)

PATH = "/on-device"
ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
]
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidate: the page and manifest change when the models do
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}  # URLs carry a content hash or a version
MODEL_GZIP_LEVEL = 6  # zlib's default: the three bundled files compress in about 1.4 s at startup


class _WithHeaders:
    """ASGI wrapper that adds fixed headers to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def on_device_app(
    models: Iterable[ModelPack],
    *,
    texts: Mapping[str, str],
    notices: Mapping[str, str] | None = None,
    server_page: str | None = "../",
) -> ASGIApp:
    """The ASGI application that serves the page for these packages (mounted at /on-device by mount_on_device)."""
    models = list(models)
    files = {file.name: file for file in model_files(models)}
    # Sent gzip-encoded to browsers that take it (all do): float16 weights shrink by about 9 %, int8 ones by 11 %.
    compressed = {name: gzip.compress(f.path.read_bytes(), MODEL_GZIP_LEVEL) for name, f in files.items()}
    wasm_path = compressed_wasm()
    manifest = build_manifest(
        files.values(),
        malignancy=malignancy_config(models),
        texts=texts,
        wasm_bytes=wasm_size(),
        wasm_transfer_bytes=wasm_path.stat().st_size,
        model_transfer_bytes={files[name].url: len(body) for name, body in compressed.items()},
        notices=notices,
        server_page=server_page,
    )
    manifest_body = json.dumps(manifest, indent=1).encode("utf-8")

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=NO_CACHE)

    async def manifest_json(request: Request) -> Response:
        return Response(manifest_body, media_type="application/json", headers=NO_CACHE)

    async def model(request: Request) -> Response:
        file = files.get(request.path_params["name"])
        if file is None or request.path_params["digest"] != file.sha256[:16]:
            return Response("no such model", status_code=404, media_type="text/plain")
        if "gzip" in request.headers.get("accept-encoding", ""):
            return Response(compressed[file.name], media_type="application/octet-stream",
                            headers={**IMMUTABLE, "Content-Encoding": "gzip"})
        return FileResponse(file.path, media_type="application/octet-stream", headers=IMMUTABLE)

    async def wasm(request: Request) -> Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers = {**IMMUTABLE, "Content-Encoding": "gzip"}
            return FileResponse(wasm_path, media_type="application/wasm", headers=headers)
        return Response(gzip.decompress(wasm_path.read_bytes()), media_type="application/wasm", headers=IMMUTABLE)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/manifest.json", manifest_json),
            Route("/models/{name}/{digest}/model.onnx", model),
            Route("/" + static_url(runtime_dir() / RUNTIME_WASM), wasm),
            Mount("/", StaticFiles(directory=STATIC_DIR)),
        ]
    )
    log.info("on-device page: %s", ", ".join(f"{name} {f.size / 1e6:.1f} MB" for name, f in files.items()))
    return _WithHeaders(app, ISOLATION_HEADERS)


def mount_on_device(fastapi_app: Starlette, models: Models, *, texts: Mapping[str, str] | None = None,
                    server_page: str | None = "../") -> None:  # fmt: skip
    """Serve the on-device page for `models` (the packages in use, bundled or from the Hub) at /on-device/.

    fastapi_app: the app's FastAPI application (Gradio's `demo.app` after launch, or one given to
      gr.mount_gradio_app); the routes go first, so nothing of Gradio's can shadow them, and can be added to a
      running server. models: skin_demo.hub.load_models' result (its notices are passed on to the page).
    texts: the warnings; default the Gradio page's own (site.page_texts()).
    Raises site.WebError when the vendored runtime or the malignancy package is missing.
    """
    sub_app = on_device_app(models.values(), texts=texts or page_texts(), notices=models.notices,
                            server_page=server_page)  # fmt: skip

    async def add_slash(request: Request) -> Response:
        return RedirectResponse(PATH.lstrip("/") + "/")  # relative: right behind a proxy's root path too

    fastapi_app.router.routes[0:0] = [Route(PATH, add_slash), Mount(PATH, app=sub_app, name="on-device")]
