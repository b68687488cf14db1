"""The Hub stand-in, driven by the real huggingface_hub client: if these pass, tests of our Hub code are meaningful."""

from __future__ import annotations

import hashlib

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


REPO = "skin-demo/lesion-type"
ONNX_BYTES = bytes(range(256)) * 1024  # binary (NUL bytes) and *.onnx: goes through LFS


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _gets_of(hub, filename: str) -> list[tuple[str, str]]:
    return [(method, path) for method, path in hub.requests if method == "GET" and path.endswith("/" + filename)]


def test_download_by_branch_tag_and_commit_sha(hub):
    first = hub.add_commit(REPO, {"config.json": b'{"v": 1}'}, message="v1")
    hub.create_tag(REPO, "v1", first)
    hub.add_commit(REPO, {"config.json": b'{"v": 2}'}, message="v2")

    assert _read(hf_hub_download(REPO, "config.json", revision="main")) == b'{"v": 2}'
    assert _read(hf_hub_download(REPO, "config.json", revision="v1")) == b'{"v": 1}'
    assert _read(hf_hub_download(REPO, "config.json", revision=first)) == b'{"v": 1}'


def test_pinned_sha_is_served_from_cache_without_a_request(hub):
    sha = hub.add_commit(REPO, {"model.onnx": ONNX_BYTES})
    hf_hub_download(REPO, "model.onnx", revision=sha)
    assert len(_gets_of(hub, "model.onnx")) == 1

    served_before = len(hub.requests)
    assert _read(hf_hub_download(REPO, "model.onnx", revision=sha)) == ONNX_BYTES
    assert len(hub.requests) == served_before  # a commit sha never changes: no request at all

    hf_hub_download(REPO, "model.onnx", revision="main")
    assert len(_gets_of(hub, "model.onnx")) == 1  # a branch costs a HEAD, the ETag matches: no second body


def test_missing_repo_revision_and_file_raise_the_hub_exceptions(hub):
    hub.add_commit(REPO, {"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("skin-demo/no-such-repo", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "model.onnx")


def test_snapshot_download_model_info_and_list_repo_files(hub):
    sha = hub.add_commit(REPO, {"config.json": b"{}", "model.onnx": ONNX_BYTES, "docs/README.md": b"# card"})
    hub.create_tag(REPO, "v1", sha)

    folder = snapshot_download(REPO, revision="v1")
    assert _read(f"{folder}/model.onnx") == ONNX_BYTES
    assert _read(f"{folder}/docs/README.md") == b"# card"
    assert HfApi().model_info(REPO, revision="v1").sha == sha
    assert HfApi().list_repo_files(REPO) == [".gitattributes", "config.json", "docs/README.md", "model.onnx"]


def test_publish_sends_the_token_and_uploads_regular_and_lfs_files(hub, tmp_path):
    package = tmp_path / "package"
    package.mkdir()
    (package / "config.json").write_text('{"task": "lesion_type"}')
    (package / "model.onnx").write_bytes(ONNX_BYTES)
    api = HfApi(token="hf_publish_token")

    api.create_repo(REPO, private=True, exist_ok=True)
    api.create_repo(REPO, private=True, exist_ok=True)  # exists already: fine with exist_ok
    api.create_branch(REPO, branch="candidate")
    commit = api.upload_folder(folder_path=package, repo_id=REPO, revision="candidate", commit_message="publish")
    api.create_tag(REPO, tag="v1", revision=commit.oid)

    assert set(hub.auth_headers) == {"Bearer hf_publish_token"}
    assert ("PUT", f"/lfs-upload/{hashlib.sha256(ONNX_BYTES).hexdigest()}") in hub.requests  # the LFS path
    published = hub.repo_files(REPO, "v1")
    assert sorted(published) == [".gitattributes", "config.json", "model.onnx"]  # the Hub's own .gitattributes
    assert published["config.json"] == b'{"task": "lesion_type"}' and published["model.onnx"] == ONNX_BYTES
    assert _read(hf_hub_download(REPO, "model.onnx", revision="v1", token="hf_publish_token")) == ONNX_BYTES
    with pytest.raises(RepositoryNotFoundError):  # private: without a token the Hub pretends it does not exist
        hf_hub_download(REPO, "config.json", revision="v1", token=False)
    with pytest.raises(HfHubHTTPError, match="401"):  # writes need a token
        HfApi(token=False).create_repo("skin-demo/other")


def test_fault_down_refuses_connections_until_cleared(hub):
    hub.add_commit(REPO, {"config.json": b"{}"})
    hub.set_fault("down")
    with pytest.raises(LocalEntryNotFoundError) as raised:
        hf_hub_download(REPO, "config.json")
    assert isinstance(raised.value.__cause__, httpx2.ConnectError)
    with pytest.raises(httpx2.ConnectError):
        HfApi().model_info(REPO)

    hub.set_fault(None)
    assert _read(hf_hub_download(REPO, "config.json")) == b"{}"


def test_fault_error500_fails_after_the_clients_retries(hub):
    hub.add_commit(REPO, {"config.json": b"{}"})
    hub.set_fault("error500")
    with pytest.raises(LocalEntryNotFoundError) as raised:
        hf_hub_download(REPO, "config.json")
    assert raised.value.__cause__.response.status_code == 500
    assert len(hub.requests) > 1  # the client retries a HEAD that got a 5xx before giving up
    with pytest.raises(HfHubHTTPError, match="500"):
        HfApi(token="hf_token").upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO)


def test_fault_slow_times_out_and_a_cached_file_is_used(hub):
    hub.add_commit(REPO, {"config.json": b"{}"})
    cached = hf_hub_download(REPO, "config.json")
    hub.set_fault("slow", delay_s=2.0)
    with pytest.raises(httpx2.TimeoutException):
        HfApi().model_info(REPO, timeout=0.2)
    # The metadata HEAD times out, so the client falls back to what the cache holds for "main".
    assert hf_hub_download(REPO, "config.json", etag_timeout=0.2) == cached


def test_fault_truncate_fails_the_size_check_then_recovers(hub):
    hub.add_commit(REPO, {"model.onnx": ONNX_BYTES})
    hub.set_fault("truncate")
    with pytest.raises(OSError, match="Consistency check failed"):
        hf_hub_download(REPO, "model.onnx")

    hub.set_fault(None)
    assert _read(hf_hub_download(REPO, "model.onnx")) == ONNX_BYTES
