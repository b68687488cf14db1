"""A stand-in for the Hugging Face Hub: a real HTTP server on 127.0.0.1 for the real `huggingface_hub` client.

Why: the code that loads models from the Hub and publishes them must be tested against the client's actual HTTP
traffic (cache headers, error codes, LFS uploads), with no internet, and with the faults the real Hub only shows on
bad days. This server speaks the part of the Hub API that huggingface_hub 2.4.0 uses for model repos:

- downloads: HEAD/GET `/{repo}/resolve/{revision}/{path}` by branch, tag or full commit sha, with the headers the
  client caches on (X-Repo-Commit, ETag, X-Linked-Etag/X-Linked-Size for LFS files, Content-Length), and 404/401
  answers carrying `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the client raises its own
  exceptions;
- `model_info`, `list_repo_tree`/`list_repo_files` (hence `snapshot_download`);
- publishing: `/api/repos/create`, `/preupload`, `/commit` (NDJSON with base64 "regular" files and "lfsFile"
  references), the git-LFS batch API with a basic PUT upload served here too, `/branch`, `/tag`, `/validate-yaml`.

It does not speak Xet: the client picks Xet on its own when `hf_xet` is installed, so it must run with
`HF_HUB_DISABLE_XET` (the `hub` fixture in hub_fixtures.py sets it). Repo ids must be `namespace/name`; only model
repos exist. Like the real Hub, a new repo starts with a commit holding `.gitattributes`; writes need a token (any
`Bearer` value is accepted), and private repos answer 401 RepoNotFound to requests without one.

Fault modes (`set_fault`): "down" closes the listening socket (connections are refused; the URL stays the same and
comes back with `set_fault(None)`), "slow" waits `delay_s` before answering each request, "error500" answers every
request with HTTP 500, "truncate" sends file bodies (GET .../resolve/...) cut to half their length with a matching
Content-Length, while HEAD still announces the full size: the client's size check then fails. "drip" sends file
bodies in 64 kB pieces `delay_s` apart (a transfer still running at a deadline); "oversend" sends them without a
Content-Length and `extra_bytes` more bytes than the file has (a Hub that lies about a size).

A file may be `Generated(size)`: its bytes are made as they are sent, never stored, so a repo can declare a 4 GB
model.onnx at no cost. `sent` counts the body bytes sent per request path, for tests of what a client stopped.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

FAULT_MODES = (None, "down", "slow", "truncate", "error500", "drip", "oversend")
CHUNK = 64 * 1024

# What the Hub stores through LFS: the patterns of its default .gitattributes, anything of 10 MB or more, and any
# file that looks binary (git's own test: a NUL byte in the first bytes). Everything else is a regular git blob.
LFS_PATTERNS = ("*.onnx", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.h5", "*.npz", "*.zip", "*.tar.gz")
LFS_MIN_SIZE = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS).encode()


def _git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (`git hash-object`): what the Hub uses as ETag and oid of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _stored_as_lfs(path: str, size: int, sample: bytes) -> bool:
    return (
        any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern) for pattern in LFS_PATTERNS)
        or size >= LFS_MIN_SIZE
        or b"\0" in sample
    )


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """What git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Generated:
    """A file of `size` bytes, each `fill`, that the stand-in makes as it sends it (stored as LFS, never on disk)."""

    size: int
    fill: bytes = b"\0"


@dataclass(frozen=True)
class _Blob:
    """One file version. Its bytes live on disk under `blobs/<sha256>`, or are `generated` as they are sent."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str  # git object id of what git stores (the file, or its LFS pointer): the Hub's oid and ETag
    generated: bytes | None = None  # the fill byte of a Generated file


@dataclass
class _Repo:
    private: bool
    commits: dict[str, dict[str, _Blob]] = field(default_factory=dict)  # commit sha -> {path: blob}
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Branch, tag or full commit sha -> commit sha (None if unknown), the order the Hub uses."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        return revision if revision in self.commits else None


class _HubError(Exception):
    """An error answer, with the headers huggingface_hub turns into its exception types."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    blob: _Blob | None = None  # a file body, sent in pieces: the only thing the file faults change


def _json(obj: object, status: int = 200, content_type: str = "application/json") -> _Response:
    return _Response(status, {"Content-Type": content_type}, json.dumps(obj).encode())


_REPO = r"(?P<repo>[^/]+/[^/]+)"


class HubStandin:
    """A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub API for huggingface_hub."""

    def __init__(self, storage_dir: Path):
        self.storage_dir = Path(storage_dir)
        (self.storage_dir / "blobs").mkdir(parents=True, exist_ok=True)
        self.endpoint = ""
        self.requests: list[tuple[str, str]] = []  # (method, path without query), as the client sent them
        self.auth_headers: list[str] = []
        self.fault: str | None = None
        self.delay_s = 0.0
        self.extra_bytes = 0
        self.sent: dict[str, int] = {}  # request path -> file body bytes sent
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.RLock()
        self._n_commits = 0
        self._server: ThreadingHTTPServer | None = None
        self._wake = threading.Event()  # set on stop/down so "slow" handlers do not outlive the server
        self._routes = [
            ("HEAD GET", rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)", self._api_resolve),
            ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<revision>[^/]+))?", self._api_model_info),
            ("GET", rf"/api/models/{_REPO}/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?", self._api_tree),
            ("POST", r"/api/repos/create", self._api_create_repo),
            ("POST", rf"/api/models/{_REPO}/preupload/(?P<revision>[^/]+)", self._api_preupload),
            ("POST", rf"/api/models/{_REPO}/commit/(?P<revision>[^/]+)", self._api_commit),
            ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", self._api_create_branch),
            ("POST", rf"/api/models/{_REPO}/tag/(?P<revision>[^/]+)", self._api_create_tag),
            ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", self._api_lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._api_lfs_upload),
            ("POST", r"/api/validate-yaml", self._api_validate_yaml),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HubStandin:
        """Serve on a free port, in a daemon thread; `endpoint` is valid from now on."""
        self._listen(port=0)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        self._wake.set()
        self._close()

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def set_fault(self, mode: str | None, *, delay_s: float = 0.0, extra_bytes: int = 0) -> None:
        """Misbehave from now on (see the module docstring); None restores normal service on the same URL."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}: use one of {FAULT_MODES}")
        self.fault, self.delay_s, self.extra_bytes = mode, delay_s, extra_bytes
        if mode == "down":
            self._wake.set()
            self._close()
        elif self._server is None and self.endpoint:
            self._wake.clear()
            self._listen(port=int(self.endpoint.rsplit(":", 1)[1]))

    def _listen(self, port: int) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        server.hub = self
        # A short poll interval keeps stop() and the "down" fault quick: shutdown() waits for the next poll.
        threading.Thread(target=server.serve_forever, args=(0.05,), name="hub-standin", daemon=True).start()
        self._server = server

    def _close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ direct access for tests

    def add_commit(
        self, repo_id: str, files: dict[str, bytes | Path | Generated], *, message: str = "", branch: str = "main"
    ) -> str:
        """Commit `files` on top of `branch` (made from main if new; the repo is made if new); returns the sha."""
        with self._lock:
            if repo_id not in self._repos:
                self._create_repo(repo_id, private=False)
            repo = self._repos[repo_id]
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            changes = {}
            for path, content in files.items():
                if isinstance(content, Generated):
                    sha256 = hashlib.sha256(b"generated %d %r" % (content.size, content.fill)).hexdigest()
                    pointer = _lfs_pointer(sha256, content.size)
                    changes[path] = _Blob(sha256, content.size, True, _git_blob_sha1(pointer), generated=content.fill)
                    continue
                data = content.read_bytes() if isinstance(content, Path) else content
                changes[path] = self._store(data, lfs=_stored_as_lfs(path, len(data), data[:512]))
            return self._commit(repo_id, branch, changes, message)

    def create_tag(self, repo_id: str, tag: str, revision: str) -> None:
        with self._lock:
            repo = self._repos[repo_id]
            repo.tags[tag] = self._revision(repo, revision)

    def repo_files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> content of every file at `revision` (including the `.gitattributes` every repo starts with)."""
        with self._lock:
            repo = self._repos[repo_id]
            files = repo.commits[self._revision(repo, revision)]
        return {path: self._read(blob) for path, blob in files.items()}

    # ------------------------------------------------------------------ storage

    def _store(self, data: bytes, *, lfs: bool) -> _Blob:
        sha256 = hashlib.sha256(data).hexdigest()
        (self.storage_dir / "blobs" / sha256).write_bytes(data)
        return self._blob(sha256, len(data), lfs=lfs, data=data)

    @staticmethod
    def _blob(sha256: str, size: int, *, lfs: bool, data: bytes = b"") -> _Blob:
        git_oid = _git_blob_sha1(_lfs_pointer(sha256, size) if lfs else data)
        return _Blob(sha256=sha256, size=size, lfs=lfs, git_oid=git_oid)

    def _read(self, blob: _Blob) -> bytes:
        if blob.generated is not None:
            return blob.generated * blob.size
        return (self.storage_dir / "blobs" / blob.sha256).read_bytes()

    def _pieces(self, blob: _Blob, size: int):
        """The first `size` bytes of a file (past its end: more of its fill, or zeros), in pieces of CHUNK bytes."""
        sent = 0
        if blob.generated is None:
            with (self.storage_dir / "blobs" / blob.sha256).open("rb") as f:
                while sent < size and (piece := f.read(min(CHUNK, size - sent))):
                    sent += len(piece)
                    yield piece
        fill = blob.generated or b"\0"
        while sent < size:
            piece = fill * min(CHUNK, size - sent)
            sent += len(piece)
            yield piece

    def _create_repo(self, repo_id: str, *, private: bool) -> None:
        self._repos[repo_id] = _Repo(private=private, branches={"main": ""})
        self._commit(repo_id, "main", {".gitattributes": self._store(GITATTRIBUTES, lfs=False)}, "initial commit")

    def _commit(self, repo_id: str, branch: str, changes: dict[str, _Blob | None], message: str) -> str:
        """New commit on `branch`: `changes` maps a path to its new blob, or to None to delete it."""
        repo = self._repos[repo_id]
        parent = repo.branches[branch]
        files = dict(repo.commits.get(parent, {}))
        for path, blob in changes.items():
            if blob is None:
                files.pop(path, None)
            else:
                files[path] = blob
        self._n_commits += 1
        tree = "".join(f"{path}:{blob.git_oid}\n" for path, blob in sorted(files.items()))
        sha = hashlib.sha1(f"{repo_id}\n{parent}\n{message}\n{self._n_commits}\n{tree}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.branches[branch] = sha
        return sha

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str, raw_path: str, headers, body: bytes) -> _Response:
        """Route one request; a _HubError becomes the error answer the Hub would give."""
        url = urlsplit(raw_path)
        self.requests.append((method, url.path))
        auth = headers.get("Authorization")
        if auth:
            self.auth_headers.append(auth)
        if self.fault == "slow":
            self._wake.wait(self.delay_s)
        if self.fault == "error500":
            return _Response(500, {"X-Error-Message": "stand-in fault: error500"}, b'{"error": "Internal Error"}')
        for methods, pattern, handler in self._routes:
            match = re.fullmatch(pattern, url.path)
            if method in methods.split() and match:
                params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                try:
                    with self._lock:
                        return handler(auth=auth, body=body, query=parse_qs(url.query), **params)
                except _HubError as error:
                    error_headers = {"X-Error-Message": error.message, **error.headers}
                    if error.code:
                        error_headers["X-Error-Code"] = error.code
                    return _Response(error.status, error_headers, json.dumps({"error": error.message}).encode())
        return _Response(404, {"X-Error-Message": "no such route in the stand-in"}, b'{"error": "Not Found"}')

    def _repo(self, repo_id: str, auth: str | None) -> _Repo:
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and not auth):
            raise _HubError(404 if repo is None else 401, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _revision(self, repo: _Repo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    @staticmethod
    def _require_token(auth: str | None) -> None:
        if not (auth or "").startswith("Bearer "):
            raise _HubError(401, "Invalid username or password.")

    def _api_resolve(self, *, repo: str, revision: str, path: str, auth: str | None, **_) -> _Response:
        repo_obj = self._repo(repo, auth)
        sha = self._revision(repo_obj, revision)
        blob = repo_obj.commits[sha].get(path)
        if blob is None:
            raise _HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": sha}
        if blob.lfs:
            headers.update({"ETag": f'"{blob.sha256}"', "X-Linked-Etag": f'"{blob.sha256}"'})
            headers["X-Linked-Size"] = str(blob.size)
        else:
            headers["ETag"] = f'"{blob.git_oid}"'
        return _Response(200, headers, blob=blob)

    def _api_model_info(self, *, repo: str, auth: str | None, query, revision: str = "main", **_) -> _Response:
        repo_obj = self._repo(repo, auth)
        sha = self._revision(repo_obj, revision)
        siblings = [{"rfilename": path} for path in sorted(repo_obj.commits[sha])]
        if query.get("blobs", ["false"])[0].lower() == "true":  # files_metadata=True: sizes, as the Hub declares them
            for sibling in siblings:
                blob = repo_obj.commits[sha][sibling["rfilename"]]
                sibling.update(size=blob.size, blobId=blob.git_oid)
                if blob.lfs:
                    pointer_size = len(_lfs_pointer(blob.sha256, blob.size))
                    sibling["lfs"] = {"sha256": blob.sha256, "size": blob.size, "pointerSize": pointer_size}
        return _json({"id": repo, "author": repo.split("/")[0], "sha": sha, "private": repo_obj.private,
                      "siblings": siblings, "tags": []})

    def _api_tree(self, *, repo: str, revision: str, auth: str | None, query, path: str = "", **_) -> _Response:
        repo_obj = self._repo(repo, auth)
        sha = self._revision(repo_obj, revision)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for file_path, blob in sorted(repo_obj.commits[sha].items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix):].split("/")
            if recursive:
                folders.update(prefix + "/".join(parts[:depth]) for depth in range(1, len(parts)))
            elif len(parts) > 1:
                folders.add(prefix + parts[0])
                continue
            entry = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": file_path}
            if blob.lfs:
                pointer_size = len(_lfs_pointer(blob.sha256, blob.size))
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": pointer_size}
            entries.append(entry)
        if not entries and not folders and prefix:
            raise _HubError(404, f"{path} not found at {revision}", "EntryNotFound")
        # A git tree id per folder is never used by the client beyond identity, so a stable hash stands in for it.
        entries += [
            {"type": "directory", "oid": hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest(), "size": 0,
             "path": folder}
            for folder in sorted(folders)
        ]
        return _json(entries)

    def _api_create_repo(self, *, body: bytes, auth: str | None, **_) -> _Response:
        self._require_token(auth)
        payload = json.loads(body)
        if not payload.get("organization") or payload.get("type", "model") != "model":
            raise _HubError(400, "the stand-in only hosts model repos named namespace/name")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.endpoint}/{repo_id}"
        if repo_id in self._repos:  # create_repo(exist_ok=True) reads the url from this 409 answer
            return _json({"error": "You already created this model repo", "url": url}, status=409)
        self._create_repo(repo_id, private=payload.get("visibility") == "private")
        return _json({"url": url, "name": repo_id, "id": repo_id})

    def _api_preupload(self, *, repo: str, revision: str, body: bytes, auth: str | None, **_) -> _Response:
        repo_obj = self._repo(repo, auth)
        files_now = repo_obj.commits[self._revision(repo_obj, revision)]
        answers = []
        for file in json.loads(body)["files"]:
            sample = base64.b64decode(file["sample"])
            answer = {"path": file["path"], "shouldIgnore": False,
                      "uploadMode": "lfs" if _stored_as_lfs(file["path"], file["size"], sample) else "regular"}
            if (existing := files_now.get(file["path"])) is not None:
                # The client skips a file whose oid it already matches: sha256 for LFS, the git oid otherwise.
                answer["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            answers.append(answer)
        return _json({"files": answers})

    def _api_lfs_batch(self, *, repo: str, body: bytes, auth: str | None, **_) -> _Response:
        self._require_token(auth)
        self._repo(repo, auth)
        objects = []
        for obj in json.loads(body)["objects"]:
            answer = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not (self.storage_dir / "blobs" / obj["oid"]).exists():  # already stored: nothing to upload
                answer["actions"] = {"upload": {"href": f"{self.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(answer)
        return _json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def _api_lfs_upload(self, *, oid: str, body: bytes, **_) -> _Response:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, "uploaded content does not match its sha256 oid")
        (self.storage_dir / "blobs" / oid).write_bytes(body)
        return _Response()

    def _api_commit(self, *, repo: str, revision: str, body: bytes, auth: str | None, query, **_) -> _Response:
        self._require_token(auth)
        repo_obj = self._repo(repo, auth)
        if "create_pr" in query:
            raise _HubError(400, "the stand-in does not do pull requests")
        if revision not in repo_obj.branches:
            raise _HubError(404, f"Invalid rev id: {revision} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        parent = header.get("parentCommit")
        if parent and parent != repo_obj.branches[revision]:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        files_now = repo_obj.commits[repo_obj.branches[revision]]
        changes: dict[str, _Blob | None] = {}
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                changes[value["path"]] = self._store(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                stored = self.storage_dir / "blobs" / value["oid"]
                if not stored.exists():
                    raise _HubError(400, f"LFS object {value['oid']} was never uploaded")
                changes[value["path"]] = self._blob(value["oid"], stored.stat().st_size, lfs=True)
            elif key == "deletedFile":
                if value["path"] not in files_now:
                    raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                changes[value["path"]] = None
            elif key == "deletedFolder":
                folder = value["path"].rstrip("/") + "/"
                changes.update({path: None for path in files_now if path.startswith(folder)})
        message = header["summary"] + (f"\n\n{header['description']}" if header.get("description") else "")
        sha = self._commit(repo, revision, changes, message)
        return _json({"commitUrl": f"{self.endpoint}/{repo}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

    def _api_create_branch(self, *, repo: str, branch: str, body: bytes, auth: str | None, **_) -> _Response:
        self._require_token(auth)
        repo_obj = self._repo(repo, auth)
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        if branch in repo_obj.branches:
            raise _HubError(409, f"Branch {branch} already exists")
        repo_obj.branches[branch] = self._revision(repo_obj, start)
        return _json({})

    def _api_create_tag(self, *, repo: str, revision: str, body: bytes, auth: str | None, **_) -> _Response:
        self._require_token(auth)
        repo_obj = self._repo(repo, auth)
        tag = json.loads(body)["tag"]
        if tag in repo_obj.tags:
            raise _HubError(409, f"Tag {tag} already exists")
        repo_obj.tags[tag] = self._revision(repo_obj, revision)
        return _json({})

    def _api_validate_yaml(self, **_) -> _Response:
        """The client validates a README.md's metadata here before committing it; the stand-in accepts any."""
        return _json({"errors": [], "warnings": []})


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, lets the HubStandin answer it, writes the answer, one request per connection.

    HTTP/1.0 (the default) closes each connection after its answer, so the client never holds a pooled
    connection that would outlive a "down" fault.
    """

    server: ThreadingHTTPServer

    def _serve(self) -> None:
        hub: HubStandin = self.server.hub
        response = hub._handle(self.command, self.path, self.headers, self._read_body())
        blob, fault = response.blob, hub.fault if self.command == "GET" else None
        length: int | None = len(response.body) if blob is None else blob.size
        if blob is not None and fault == "truncate":
            length = blob.size // 2
        body_size = length
        if blob is not None and fault == "oversend":
            length, body_size = None, blob.size + hub.extra_bytes
        path = urlsplit(self.path).path
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            if blob is None:
                self.wfile.write(response.body)
                return
            for piece in hub._pieces(blob, body_size):
                if fault == "drip" and hub._wake.wait(hub.delay_s):
                    return  # the stand-in is stopping
                self.wfile.write(piece)
                hub.sent[path] = hub.sent.get(path, 0) + len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first (a "slow" fault, a transfer it stopped): nothing left to answer

    do_HEAD = do_GET = do_POST = do_PUT = _serve

    def _read_body(self) -> bytes:
        """huggingface_hub sends every body with a Content-Length (httpx2 sizes file uploads too)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args) -> None:
        """Quiet: tests read `HubStandin.requests`, not an access log on stderr."""
