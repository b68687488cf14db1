"""Uploaded photos: whose each one is, and when it goes. Gradio-free; skin_demo.ui wires it to Gradio.

Gradio stores an upload under the hash of its bytes and its name, and its own cleanup (`delete_cache`) walks the set
of every upload path from a worker thread while the upload route adds to that set: under load the task dies with
"Set changed size during iteration" (gradio 6.31.0, `route_utils.delete_files_created_by_app`, which iterates the
live set its comment says it copies) and from then on nothing is deleted until restart. This app does not use that
cleanup. Instead, when Gradio's upload route answers, `Uploads.adopt` moves each new file to a folder of its own with
a random name (so only its uploader can name it: the content-addressed path let anyone holding the same photo
analyse, and so delete, someone else's upload) and registers it. Each upload is then deleted by the first of:

- the API request that analysed it ending (`take` at its start, `discard` at its end);
- the page session it belongs to ending (`end_session`, from Gradio's unload event): a page upload belongs to the
  first session that analyses it, and another session cannot use it;
- its own timer running out (`lifetime_s` after upload; one timer per upload on the server's event loop, so no
  sweep that one error could stop);
- the server shutting down.

`sweep_leftovers` removes what never became an upload (a refused file name, a body cut off mid-upload).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class UploadGone(OSError):
    """An upload Gradio reported is no longer on disk (an identical upload took it a moment before)."""


@dataclass
class _Upload:
    stored_as: str  # the path Gradio stored it under (content-addressed): identical uploads share it
    session: str | None = None  # the page session it belongs to, once one has analysed it


class Uploads:
    """The live uploads of one app: path -> owner, each deleted on its own (see the module docstring).

    folder: Gradio's upload folder. lifetime_s: how long an upload may stay unanalysed, and a page photo at most (its
    preview needs it for a while). forget: called with each path Gradio stored, once it is moved (Gradio's own set of
    upload paths would otherwise grow by one per upload). Thread-safe: the upload route runs on the event loop, the
    handlers in worker threads.
    """

    def __init__(self, folder: str | os.PathLike, *, lifetime_s: float,
                 forget: Callable[[str], None] = lambda path: None) -> None:  # fmt: skip
        self.folder = os.path.abspath(folder)
        self.lifetime_s = lifetime_s
        self._forget = forget
        self._lock = threading.RLock()  # take() claims under the same lock
        self._live: dict[str, _Upload] = {}

    def adopt(self, stored: Iterable[str]) -> list[str]:
        """Take over the files Gradio's upload route just stored: move each to a random folder, register it and start
        its timer. Returns the new paths, in order. Call on the event loop. Raises UploadGone when a file is missing
        and no live copy of the same bytes is left to copy; ValueError for a path outside the upload folder."""
        loop = asyncio.get_running_loop()
        moved = []
        for path in stored:
            if os.path.dirname(os.path.dirname(path)) != self.folder or os.path.normpath(path) != path:
                raise ValueError("the upload route reported a path outside the upload folder")
            private = self._move(path)
            with self._lock:
                self._live[private] = _Upload(stored_as=path)
            loop.call_later(self.lifetime_s, self._expire, private)
            moved.append(private)
        return moved

    def _move(self, path: str) -> str:
        folder = os.path.join(self.folder, secrets.token_hex(16))
        os.mkdir(folder)
        private = os.path.join(folder, os.path.basename(path))
        try:
            os.rename(path, private)
        except FileNotFoundError:
            # Two identical uploads at once: both were stored at the same path, and the other's adoption moved the
            # file already. Same path, same bytes: copy a live one.
            with self._lock:
                twins = [p for p, upload in self._live.items() if upload.stored_as == path]
            for twin in twins:
                try:
                    shutil.copyfile(twin, private)
                    break
                except OSError:
                    continue
            else:
                os.rmdir(folder)
                raise UploadGone("the upload is gone") from None
        else:
            _remove_empty(os.path.dirname(path))
        self._forget(path)
        return private

    def claim(self, path: object, session: str | None) -> bool:
        """For the page: whether `session` may analyse the upload at `path` (registered, and not another session's);
        the upload then belongs to `session` until its timer or the session ends."""
        with self._lock:
            upload = self._live.get(path) if isinstance(path, str) else None
            if upload is None or upload.session not in (None, session):
                return False
            upload.session = session
            return True

    def take(self, path: object, session: str | None) -> bool:
        """For the API: `claim`, and unregister it so that nobody else can use it; the caller must `discard` it once
        analysed."""
        with self._lock:
            if not self.claim(path, session):
                return False
            del self._live[path]
            return True

    def discard(self, path: str) -> None:
        """Delete an upload's file and its folder now (registered or taken)."""
        with self._lock:
            self._live.pop(path, None)
        _delete(path)

    def end_session(self, session: str | None) -> int:
        """Delete every upload that belongs to `session` (its page was closed). Returns how many."""
        with self._lock:
            mine = [p for p, upload in self._live.items() if session is not None and upload.session == session]
            for path in mine:
                del self._live[path]
        for path in mine:
            _delete(path)
        return len(mine)

    def paths(self) -> set[str]:
        """The registered uploads' paths (a copy)."""
        with self._lock:
            return set(self._live)

    def close(self) -> None:
        """Delete every registered upload (the server is stopping)."""
        with self._lock:
            paths, self._live = list(self._live), {}
        for path in paths:
            _delete(path)

    def _expire(self, path: str) -> None:
        with self._lock:
            upload = self._live.pop(path, None)
        if upload is not None:  # still registered: never analysed by the API, or a page photo past its lifetime
            _delete(path)

    def lifespan(self, *, sweep_every_s: float):
        """A FastAPI lifespan: every `sweep_every_s` seconds `sweep_leftovers` removes what Gradio's upload route left
        untracked for longer than `lifetime_s`; at shutdown every upload and every file that arrived in the folder
        while the server ran is deleted."""

        @asynccontextmanager
        async def lifespan(app):
            since = time.time()

            async def sweep_forever():
                while True:
                    await asyncio.sleep(sweep_every_s)
                    try:
                        await asyncio.to_thread(sweep_leftovers, Path(self.folder), self.paths(),
                                                older_than_s=self.lifetime_s, since=since)  # fmt: skip
                    except Exception as exc:  # one failed pass must not end the sweeping
                        log.warning("upload folder sweep failed (%s); next pass in %g s", type(exc).__name__,
                                    sweep_every_s)  # fmt: skip

            task = asyncio.create_task(sweep_forever())
            try:
                yield
            finally:
                task.cancel()
                self.close()
                sweep_leftovers(Path(self.folder), (), older_than_s=-1.0, since=since)

        return lifespan


def sweep_leftovers(folder: Path, tracked: Iterable[str], *, older_than_s: float, since: float) -> int:
    """Delete files under `folder` that are not `tracked`, changed after `since` and more than `older_than_s`
    seconds ago (a refused or aborted upload's temp file), and the folders they leave empty. Files from before
    `since` (another process's) are left alone. Returns how many files were deleted."""
    tracked = {os.path.abspath(p) for p in tracked}
    now, deleted = time.time(), 0
    for path in deepest_first(folder):
        try:
            info = path.lstat()
            if path.is_dir():
                if info.st_ctime >= since and not any(path.iterdir()):
                    path.rmdir()
            elif str(path) not in tracked and since <= info.st_ctime < now - older_than_s:
                path.unlink()
                deleted += 1
        except OSError:
            continue  # gone already, or being written: the next sweep sees it
    return deleted


def deepest_first(folder: Path) -> list[Path]:
    """Every file and folder below `folder`, the deepest first. os.walk passes over folders that vanish while it
    walks; Path.rglob raised instead, and one upload deleted during a pass failed the whole sweep (seen under load)."""
    found = [Path(root) / name for root, dirs, files in os.walk(folder) for name in (*dirs, *files)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _delete(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not delete an upload (%s)", type(exc).__name__)
    _remove_empty(os.path.dirname(path))


def _remove_empty(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty (another upload of the same bytes, another name), or gone
