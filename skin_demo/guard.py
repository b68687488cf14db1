"""What a request may bring, checked before Gradio reads it.

`RequestGuard` is an ASGI middleware in front of the whole app (the page, `/predict`, `/on-device/`):
- Every request body is capped before it is read: a Content-Length over the limit is refused at once with 413,
  and a body sent without one (chunked) is cut off with 413 as soon as it passes the limit. File uploads
  (multipart) may be as large as one image file; anything else (JSON event calls) is small, so a 150 MB data URL
  never reaches the JSON parser.
- An image reaches the models only as a file that Gradio's own upload route stored: every input of this app's
  events is an image, so each `data` item of an event call must be null or a Gradio file object whose path lies
  in Gradio's upload folder (checked on the string, without touching the disk). A server path the client chose, a
  URL (which Gradio would download) or a data URL (which it would decode into a new file) is refused with one
  message that says nothing about the server's disk, before Gradio opens, downloads or logs anything. The event
  handlers then accept only an upload that skin_demo.uploads has registered for this client.
- The upload route's answer goes through `adopt_uploads` (skin_demo.uploads.Uploads.adopt), which moves each file to
  a path of its own; the client gets that path.
- An event call's `event_data` (what was clicked) passes only in the form the handlers use: for an event that takes
  it, an object with a whole-number `index` (its `value` is dropped); for any other, none. A malformed one (null, a
  string index, an out-of-range value) is refused, before Gradio builds its event object from it and logs a
  traceback per request. Events a client cannot trigger itself (the page's unload) cannot be called.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REFUSED_FILE = (
    "no image was uploaded for this request: send the image file itself (gradio_client's handle_file does, or "
    "POST it to /gradio_api/upload and pass the path it returns); each upload is analysed once, and server paths, "
    "URLs and data URLs are not accepted"
)
NOT_JSON = "the request body is not valid JSON"
UNKNOWN_EVENT = "this request does not name an event of this app with its inputs"
BAD_EVENT_DATA = "this request does not say what was selected (event_data needs a whole-number index)"
UPLOAD_AGAIN = "the upload could not be stored; send it again"
FILE_META = {"_type": "gradio.FileData"}
MULTIPART = b"multipart/form-data"
MAX_INDEX = 1 << 31


def too_large(limit: int) -> str:
    return f"the request is larger than {limit / 1e6:.2f} MB, the most this server reads; upload a smaller photo"


@dataclass(frozen=True)
class Event:
    """What an event call must bring: how many inputs, and whether the handler reads event_data (a select)."""

    inputs: int
    takes_event_data: bool = False


NO_SUCH_EVENT = Event(inputs=1 << 30)  # more inputs than any request sends: refused


class RequestGuard:
    """ASGI middleware: body caps for every request, only Gradio uploads as event inputs, uploads adopted as they
    arrive (see module doc).

    upload_limit: the most bytes a multipart (file upload) body may have.
    json_limit: the most bytes any other body may have.
    upload_folder: the folder Gradio's upload route stores files in.
    events: for a request path and its parsed body, the event it calls (None when it calls none); see
      `gradio_events`.
    upload_route: the path of Gradio's upload route; adopt_uploads: called (on the event loop) with the paths of
      each successful upload, returns the paths the client gets instead; it may raise OSError (answered with 503).
    """

    def __init__(self, app, *, upload_limit: int, json_limit: int, upload_folder: str,
                 events: Callable[[str, Any], Event | None], upload_route: str,
                 adopt_uploads: Callable[[list[str]], list[str]]) -> None:  # fmt: skip
        self.app = app
        self.upload_limit = upload_limit
        self.json_limit = json_limit
        self.upload_folder = os.path.abspath(upload_folder)
        self.events = events
        self.upload_route = upload_route
        self.adopt_uploads = adopt_uploads

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        is_upload = headers.get(b"content-type", b"").split(b";")[0].strip().lower() == MULTIPART
        limit = self.upload_limit if is_upload else self.json_limit
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _respond(send, 400, "the Content-Length header is not a number")
                return
            if declared > limit:
                await _respond(send, 413, too_large(limit))
                return
        if is_upload:
            if scope["path"].rstrip("/") == self.upload_route and scope.get("method") == "POST":
                send = self._adopting(send)
            await self._stream_capped(scope, receive, send, limit)
        else:
            await self._checked_body(scope, receive, send, limit)

    def _adopting(self, send):
        """`send` for the upload route: hold its answer, and give the client the adopted paths instead of Gradio's."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def adopting_send(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body" or not start:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            if start.get("status") == 200:
                try:
                    stored = json.loads(body)
                    if isinstance(stored, list) and all(isinstance(p, str) for p in stored):
                        body = json.dumps(self.adopt_uploads(stored)).encode()
                except (OSError, ValueError):
                    await _respond(send, 503, UPLOAD_AGAIN)
                    return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        return adopting_send

    async def _stream_capped(self, scope, receive, send, limit: int) -> None:
        """Pass a (large) upload body through while counting; past the limit, answer 413 and stop reading."""
        received = 0
        refused = False
        response_started = False

        async def capped_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not response_started:
                        await _respond(send, 413, too_large(limit))
                    return {"type": "http.disconnect"}  # the app stops parsing; its temp file is swept
            return message

        async def guarded_send(message):
            nonlocal response_started
            if refused:
                return  # we have answered already
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app may raise on the disconnect we simulated; the client already has its 413.

    async def _checked_body(self, scope, receive, send, limit: int) -> None:
        """Read a small body in full (at most `limit` bytes), check its file objects, then hand it to the app."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _respond(send, 413, too_large(limit))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        received = b"".join(chunks)
        body, problem = self._checked(scope["path"], received) if received else (received, None)
        if problem == REFUSED_FILE:
            await _refuse_input(send, problem)
            return
        if problem:
            await _respond(send, 400, problem)
            return
        if body is not received:  # rewritten: the app must not read a stale Content-Length
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _checked(self, path: str, body: bytes) -> tuple[bytes, str | None]:
        """The body to hand on (event_data reduced to what the handlers use), or a reason to refuse it."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            return body, NOT_JSON
        folder = self.upload_folder
        event = self.events(path, payload)
        if event is not None:
            # Gradio answers an event call with too few inputs with a traceback in the log; refuse it here.
            data = payload.get("data") if isinstance(payload, dict) else None
            if not isinstance(data, list) or len(data) < event.inputs:
                return body, UNKNOWN_EVENT
            if event.takes_event_data or payload.get("event_data") is not None:
                event_data = _selection(payload.get("event_data")) if event.takes_event_data else None
                if event.takes_event_data and event_data is None:
                    return body, BAD_EVENT_DATA
                payload = {**payload, "event_data": event_data}
                body = json.dumps(payload).encode()
        if isinstance(payload, dict) and isinstance(payload.get("data"), list):
            if not all(item is None or _is_upload(item, folder) for item in payload["data"]):
                return body, REFUSED_FILE
        if any(not _is_upload(obj, folder) for obj in _file_like(payload)):
            return body, REFUSED_FILE
        return body, None


def _selection(event_data: Any) -> dict[str, Any] | None:
    """A select event's event_data as the handlers use it (a whole-number index, no value), or None if malformed."""
    index = event_data.get("index") if isinstance(event_data, dict) else None
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < MAX_INDEX:
        return {"index": index, "value": None}
    return None


def gradio_events(fns: Mapping[int, Any], api_prefix: str) -> Callable[[str, Any], Event | None]:
    """`events` for a Gradio app whose event functions are `fns` (Blocks.fns): the page's queue calls name their
    event by `fn_index`, API calls by the name in their path (/call/NAME, /run/NAME, /api/NAME). An unknown event,
    one only the server triggers (the page's unload), and Gradio's keyword form /call/v2/NAME are refused."""
    callable_fns = {index: fn for index, fn in fns.items()
                    if not any(target[1] == "unload" for target in fn.targets)}  # fmt: skip
    by_name = {fn.api_name: _event(fn) for fn in callable_fns.values() if isinstance(fn.api_name, str)}

    def by_index(index: Any) -> Event:
        fn = callable_fns.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        return NO_SUCH_EVENT if fn is None else _event(fn)

    def events(path: str, payload: Any) -> Event | None:
        route = path.removeprefix(api_prefix).strip("/").split("/")
        index = payload.get("fn_index") if isinstance(payload, dict) else None
        if route == ["queue", "join"]:
            return by_index(index)
        if route[:2] == ["call", "v2"]:
            return NO_SUCH_EVENT  # keyword arguments instead of `data`: not a form this app's events are called in
        if len(route) == 2 and route[0] in ("call", "run", "api"):
            # As Gradio does: a fn_index in the body wins over the name (the page's unqueued events use /run/predict).
            return by_name.get(route[1], NO_SUCH_EVENT) if index is None else by_index(index)
        return None

    return events


def _event(fn: Any) -> Event:
    return Event(inputs=len(fn.inputs), takes_event_data=bool(fn.collects_event_data))


def _is_upload(item: Any, folder: str) -> bool:
    """A Gradio file object whose path is a plain absolute path inside the upload folder, without a data: URL.

    (Gradio ignores an http(s) `url` of an input file; the page sends its own /file= URL there.)"""
    if not isinstance(item, dict) or item.get("meta") != FILE_META:
        return False
    path, url = item.get("path"), item.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        return False
    return isinstance(path, str) and _inside(path, folder)


def _inside(path: str, folder: str) -> bool:
    plain = "\0" not in path and os.path.isabs(path) and os.path.normpath(path) == path
    return plain and path.startswith(folder + os.sep)


def _file_like(payload: Any, depth: int = 0):
    """Every dict in a parsed JSON body that could be taken for a file object (has a path, a url or file meta)."""
    if depth > 64:
        yield payload  # deeper than any real event call: not an upload
        return
    if isinstance(payload, dict):
        if "path" in payload or "url" in payload or payload.get("meta") == FILE_META:
            yield payload
        for value in payload.values():
            yield from _file_like(value, depth + 1)
    elif isinstance(payload, list):
        for value in payload:
            yield from _file_like(value, depth + 1)


async def _refuse_input(send, message: str) -> None:
    """422 with `message` in the form Gradio's own input validation answers in, so gradio_client raises a
    ValidationError that carries it (for any other status it raises a bare HTTP error and the message is lost)."""
    detail = [{"__type__": "validate", "is_valid": False, "parameter_name": "image", "message": message}]
    await _send_json(send, 422, {"detail": detail})


async def _respond(send, status: int, message: str) -> None:
    await _send_json(send, status, {"detail": message})


async def _send_json(send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
