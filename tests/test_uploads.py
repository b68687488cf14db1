"""skin_demo.uploads without a server: each upload gets a path of its own, belongs to one session, and is deleted by
its request, its session, its own timer or shutdown, whatever else fails (issue 20, items 1 and 6)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from skin_demo.uploads import UploadGone, Uploads


def stored_by_gradio(folder: Path, data: bytes, name: str = "photo.jpg") -> str:
    """A file where Gradio's upload route stores it: <folder>/<content hash>/<name>."""
    path = folder / hashlib.sha256(data).hexdigest() / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def adopt(uploads: Uploads, paths: list[str]) -> list[str]:
    async def run():
        return uploads.adopt(paths)

    return asyncio.run(run())


def test_each_upload_moves_to_a_random_folder_and_gradio_forgets_its_path(tmp_path):
    forgotten: list[str] = []
    uploads = Uploads(tmp_path, lifetime_s=60, forget=forgotten.append)
    stored = stored_by_gradio(tmp_path, b"one")
    (private,) = adopt(uploads, [stored])
    assert Path(private).read_bytes() == b"one" and Path(private).name == "photo.jpg"
    assert len(Path(private).parent.name) == 32 and Path(private).parent.parent == tmp_path
    assert not os.path.exists(stored) and not os.path.exists(os.path.dirname(stored))
    assert forgotten == [stored] and uploads.paths() == {private}


def test_identical_uploads_at_the_same_moment_each_get_their_own_copy(tmp_path):
    """Gradio stores both at one path; the first adoption moves the file, the second copies the first's."""
    uploads = Uploads(tmp_path, lifetime_s=60)
    stored = stored_by_gradio(tmp_path, b"same")

    async def run():
        first = uploads.adopt([stored])
        second = uploads.adopt([stored])  # Gradio answered the second request with the same path
        return first + second

    first, second = asyncio.run(run())
    assert first != second and Path(first).read_bytes() == Path(second).read_bytes() == b"same"
    assert uploads.take(first, "a") and Path(second).is_file()
    uploads.discard(first)
    assert Path(second).is_file()


def test_an_upload_gone_before_its_adoption_is_reported_not_invented(tmp_path):
    uploads = Uploads(tmp_path, lifetime_s=60)
    with pytest.raises(UploadGone):
        adopt(uploads, [str(tmp_path / ("0" * 64) / "gone.jpg")])
    assert list(tmp_path.iterdir()) == []  # no empty folder left behind
    with pytest.raises(ValueError):
        adopt(uploads, ["/etc/passwd"])


def test_an_api_upload_is_taken_once_and_a_page_upload_belongs_to_its_session(tmp_path):
    uploads = Uploads(tmp_path, lifetime_s=60)
    api, page = adopt(uploads, [stored_by_gradio(tmp_path, b"api"), stored_by_gradio(tmp_path, b"page")])
    assert uploads.take(api, "a") and not uploads.take(api, "a") and not uploads.claim(api, "a")
    uploads.discard(api)
    assert not os.path.exists(api) and not os.path.exists(os.path.dirname(api))
    assert uploads.claim(page, "b") and uploads.claim(page, "b") and not uploads.claim(page, "c")
    assert not uploads.claim("/etc/passwd", "b") and not uploads.take(None, "b")
    assert uploads.end_session("c") == 0 and uploads.end_session("b") == 1 and not os.path.exists(page)


def test_every_upload_has_its_own_timer(tmp_path):
    """Never analysed, claimed by a page session, or one whose deletion failed: each goes at its own time."""
    uploads = Uploads(tmp_path, lifetime_s=0.2)

    async def run():
        first, second, third = uploads.adopt([stored_by_gradio(tmp_path, bytes([i])) for i in range(3)])
        uploads.claim(second, "session")
        os.unlink(third)  # replaced by a folder, which unlink cannot delete: the others must not care
        os.mkdir(third)
        await asyncio.sleep(0.5)
        return first, second, third

    first, second, third = asyncio.run(run())
    assert not os.path.exists(first) and not os.path.exists(second)
    assert uploads.paths() == set() and os.path.isdir(third)


def test_shutdown_deletes_every_upload(tmp_path):
    uploads = Uploads(tmp_path, lifetime_s=60)
    paths = adopt(uploads, [stored_by_gradio(tmp_path, bytes([i])) for i in range(3)])
    uploads.claim(paths[0], "session")
    uploads.close()
    assert not any(os.path.exists(p) for p in paths) and list(tmp_path.iterdir()) == []
