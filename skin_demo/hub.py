"""Model packages from the Hugging Face Hub: one `snapshot_download` of a pinned revision, with a fallback.

`load_from_hub` fetches config.json, model.onnx and README.md (if any) at a revision into huggingface_hub's
cache and loads them with `ModelPack.load`. huggingface_hub itself waits without a timeout for its repo lookups
and retries a failing Hub with back-off, so a Hub that does not answer could hold startup for minutes; here one
request with a short timeout first checks that the Hub answers, and a whole package has a deadline. If the Hub
does not answer, a copy of the same revision already in the cache is used (and said so); settings.load_models
falls back to the bundled package when this raises.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from skin_demo.config import CONFIG_FILE, MODEL_FILE, PACKAGE_FILES
from skin_demo.modelpack import ModelPack, PackageError

log = logging.getLogger(__name__)

DEFAULT_HUB_TIMEOUT_S = 5.0  # per HTTP request: a Hub that does not answer within this is treated as down
DEFAULT_HUB_DEADLINE_S = 60.0  # for a whole package (about 15 MB for the bundled architecture)

T = TypeVar("T")


class HubError(PackageError):
    """A package could not be downloaded from the Hub (unreachable, timed out, missing repo/revision/file)."""


def load_from_hub(
    repo_id: str,
    revision: str,
    *,
    threads: int | None = None,
    endpoint: str | None = None,
    cache_dir: Path | str | None = None,
    timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
    deadline_s: float = DEFAULT_HUB_DEADLINE_S,
    token: str | bool | None = None,
) -> ModelPack:
    """Download a package at a pinned revision and load it.

    revision: a commit sha (best: never changes) or a tag; the source string names the resolved commit.
    Files go to the Hugging Face cache (HF_HUB_CACHE / HF_HOME, read when called), so a second load of a commit
    sha is served from disk without any request. HF_HUB_OFFLINE=1 uses the cache only. endpoint defaults to
    HF_ENDPOINT. `timeout_s` bounds the first request and each file's metadata request (huggingface_hub's
    `etag_timeout`; HF_HUB_ETAG_TIMEOUT overrides it), HF_HUB_DOWNLOAD_TIMEOUT a stall while a file downloads,
    `deadline_s` the whole download.
    Raises HubError if the Hub cannot be reached or lacks the files, PackageError if the package is invalid.
    """
    if not repo_id or not revision:
        raise HubError(f"hub {repo_id or '?'}@{revision or '?'}: a Hub package needs a repo id and a pinned revision")
    label = f"{repo_id}@{revision}"
    # huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; read them per call instead
    # so that a settings change (and each test's isolated HF_HOME) is honoured.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    options: dict[str, Any] = {
        "revision": revision,
        "allow_patterns": list(PACKAGE_FILES),
        "cache_dir": cache_dir or _hub_cache_dir(),
        "endpoint": endpoint,
        "token": token,
        "etag_timeout": timeout_s,
    }

    def download() -> tuple[Path, str]:
        # Privacy: with telemetry on, huggingface_hub's first request also fetches an agent-detection list from
        # huggingface.co. It reads this flag at call time; the environment variable only at import.
        constants.HF_HUB_DISABLE_TELEMETRY = True
        if offline or _is_commit_sha(revision):
            try:  # an immutable commit already cached needs no request at all
                return Path(snapshot_download(repo_id, local_files_only=True, **options)), ""
            except LocalEntryNotFoundError:
                if offline:
                    raise
        try:
            HfApi(endpoint=endpoint, token=token).repo_info(repo_id, revision=revision, timeout=timeout_s)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise  # the Hub answered: no such repo or revision, and the cache cannot change that
        except (httpx2.TransportError, HfHubHTTPError) as exc:
            if _is_client_error(exc):
                raise
            try:
                snapshot = Path(snapshot_download(repo_id, local_files_only=True, **options))
            except LocalEntryNotFoundError:
                raise exc from None
            return snapshot, f"from the cache; the Hub did not answer: {_describe_hub_error(exc)}"
        return Path(snapshot_download(repo_id, **options)), ""

    try:
        snapshot, note = _with_deadline(download, deadline_s, f"hub {label}")
    except PackageError:
        raise
    except Exception as exc:
        raise HubError(f"hub {label}: download failed ({_describe_hub_error(exc)})") from None
    missing = [name for name in (CONFIG_FILE, MODEL_FILE) if not (snapshot / name).is_file()]
    if missing:
        raise HubError(f"hub {label}: the repo has no {' or '.join(missing)} at this revision (not a model package)")
    commit = snapshot.name
    source = f"hub {repo_id}@{commit}" if revision == commit else f"hub {repo_id}@{commit} (revision {revision})"
    if note:
        log.warning("%s: %s", source, note)
        source = f"{source} ({note})"
    try:
        return ModelPack.load(snapshot, source=source, threads=threads)
    except PackageError as exc:
        raise PackageError(f"hub {label}: {exc}") from None


def _is_commit_sha(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _is_client_error(exc: BaseException) -> bool:
    """True when the Hub answered with a client error (4xx: no access, bad request): the cache cannot help."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return status is not None and 400 <= status < 500


def _hub_cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None  # huggingface_hub's default


def _with_deadline(fn: Callable[[], T], deadline_s: float, what: str) -> T:
    """Run fn in a daemon thread and give up after deadline_s (the HTTP timeouts bound each read, not a whole
    slow download; a thread that overruns finishes or fails on its own and only ever writes to the cache)."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller below
            result["error"] = exc

    thread = threading.Thread(target=target, name="hub-download", daemon=True)
    thread.start()
    thread.join(deadline_s)
    if thread.is_alive():
        raise HubError(f"{what}: download did not finish within {deadline_s:g} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _describe_hub_error(exc: BaseException) -> str:
    """The error's type and first line, with its cause when that says more (ConnectError under a Hub error)."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ not in text:
        detail = f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
        text = f"{text} [{detail}]" if text else detail
    return f"{name}: {text}"[:300]
