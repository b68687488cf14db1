"""Where the model packages come from: the bundled folder, or a Hugging Face Hub repo pinned to a commit, and the
fallback between them.

`load_models(settings)` fills each task's slot (predictor.TASKS) from the Hub where the settings name a repo, else
(or when the Hub fails) from the bundled folder, and says why a configured Hub package is not in use. A broken
bundled package is a startup error. A package may answer several tasks (one network with a head per task): tasks
that name the same Hub repo and revision, or the same bundled folder, share one load and one session.

`load_from_hub` downloads config.json, model.onnx and README.md of one commit into huggingface_hub's cache, within
bounds a hostile or broken Hub cannot stretch: each file and the whole package have a byte cap, checked against the
sizes the Hub declares before anything is downloaded and against the bytes as they arrive; the whole download has a
deadline, after which the transfer stops and its partial files are removed. huggingface_hub waits without a timeout
for its repo lookups and retries a failing Hub with back-off, so one request with a short timeout first asks the Hub
for the commit and the file sizes. If the Hub does not answer, a copy of the same revision already in the cache is
used (and said so).

What reaches a visitor (a package's `source`, the notices) names repos, revisions and files in the repo, never a
path on this server or the Hub's URL; the log has the details.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx2
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from skin_demo.config import CONFIG_FILE, MODEL_FILE, PACKAGE_FILES, ConfigError, package_heads, parse_json
from skin_demo.hub_limits import (
    Budget,
    HubError,
    Limits,
    check_sizes,
    remove_partial_downloads,
    run_with_deadline,
)
from skin_demo.modelpack import ModelPack, Models, PackageError, load_package
from skin_demo.predictor import TASKS, slot_problem
from skin_demo.settings import DEFAULT_HUB_TIMEOUT_S, HubSource, Settings, is_commit_sha

log = logging.getLogger(__name__)


def load_models(settings: Settings) -> Models:
    """Load one package per task as `settings` say, falling back to the bundled package when the Hub one fails.

    Raises PackageError (naming the file) when a bundled package that is needed is missing or invalid.
    """
    packages = _Packages(settings)
    packs: dict[str, ModelPack] = {}
    notices: dict[str, str] = {}
    for task in TASKS:
        packs[task], notice = _load_task(task, settings, packages)
        if notice:
            notices[task] = notice
    return Models(packs, notices)


class _Packages:
    """The packages one `load_models` call has loaded, by where they came from: the tasks one package answers
    share its load and its session."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loaded: dict[tuple[str, str, str], dict[str, ModelPack]] = {}
        self._bundled_folders: dict[str, Path] | None = None

    def from_hub(self, source: HubSource) -> dict[str, ModelPack]:
        settings = self.settings
        key = ("hub", source.repo_id, source.revision)
        if key not in self._loaded:
            limits = Limits(settings.hub_max_file_bytes, settings.hub_max_package_bytes, settings.hub_deadline_s)
            self._loaded[key] = load_from_hub(source.repo_id, source.revision, threads=settings.ort_threads,
                                              endpoint=settings.hub_endpoint, timeout_s=settings.hub_timeout_s,
                                              limits=limits, allow_unpinned=settings.allow_unpinned)  # fmt: skip
        return self._loaded[key]

    def bundled_folder(self, task: str) -> Path:
        if self._bundled_folders is None:
            self._bundled_folders = bundled_folders(self.settings.models_dir)
        if task not in self._bundled_folders:
            raise PackageError(f"{self.settings.models_dir}: no bundled package answers {task} (a package folder's "
                               f"{CONFIG_FILE} names the tasks it answers)")  # fmt: skip
        return self._bundled_folders[task]

    def bundled(self, folder: Path) -> dict[str, ModelPack]:
        key = ("bundled", str(folder), "")
        if key not in self._loaded:
            self._loaded[key] = load_package(folder, source=f"bundled {_public_folder(folder)}",
                                             threads=self.settings.ort_threads)  # fmt: skip
        return self._loaded[key]


def bundled_folders(models_dir: Path) -> dict[str, Path]:
    """The bundled package folder of each task: the folders of `models_dir` with a config.json, each answering the
    tasks its config names (one, or one per head). Raises PackageError for a config that cannot be read and for two
    folders answering one task."""
    folders: dict[str, Path] = {}
    for folder in sorted(p for p in Path(models_dir).iterdir() if (p / CONFIG_FILE).is_file()):
        try:
            tasks = package_heads(parse_json((folder / CONFIG_FILE).read_text(encoding="utf-8", errors="replace")))
        except ConfigError as exc:
            raise PackageError(f"{folder / CONFIG_FILE}: {exc}") from None
        for task in tasks:
            if task in folders:
                raise PackageError(f"{folder / CONFIG_FILE}: answers {task}, as {folders[task] / CONFIG_FILE} does; "
                                   "one bundled package per task")  # fmt: skip
            folders[task] = folder
    return folders


def _load_task(task: str, settings: Settings, packages: _Packages) -> tuple[ModelPack, str | None]:
    source = settings.hub.get(task)
    problem = settings.hub_problems.get(task)
    name = task.replace("_", "-")
    if source is not None:
        try:
            pack = _slot(packages.from_hub(source), task, f"hub {source}")
        except PackageError as exc:
            problem = str(exc)
        else:
            log.info("%s: using %s", task, pack.source)
            if source.pinned:
                return pack, None
            log.warning("%s: revision %r is not a commit sha; what it serves can change without notice", task,
                        source.revision)  # fmt: skip
            return pack, (f"The {name} model comes from the Hub at revision {source.revision[:60]!r}, which is not "
                          "pinned to a commit: what it serves can change without notice.")  # fmt: skip
    bundled = packages.bundled_folder(task)
    pack = _slot(packages.bundled(bundled), task, str(bundled / CONFIG_FILE))
    if problem:
        log.warning("%s: falling back to %s: %s", task, pack.source, problem)
        return pack, f"The {name} model from the Hub is not in use ({problem}); using the bundled model."
    log.info("%s: using %s", task, pack.source)
    return pack, None


def _slot(package: dict[str, ModelPack], task: str, where: str) -> ModelPack:
    """The head of `package` that fills the `task` slot; PackageError (prefixed by `where`) if it cannot."""
    if task not in package:
        raise PackageError(f"{where}: the package answers {sorted(package)}, expected {task!r} for this slot")
    if (wrong := slot_problem(package[task], task)) is not None:
        raise PackageError(f"{where}: {wrong}")
    return package[task]


def _public_folder(folder: Path) -> str:
    """A bundled package's folder as a visitor may see it: its last two parts (models/classifiers), not where the
    server keeps it."""
    return "/".join(Path(folder).resolve().parts[-2:])


def load_from_hub(
    repo_id: str,
    revision: str,
    *,
    threads: int | None = None,
    endpoint: str | None = None,
    cache_dir: Path | str | None = None,
    timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
    limits: Limits = Limits(),
    token: str | bool | None = None,
    allow_unpinned: bool = False,
) -> dict[str, ModelPack]:
    """Download a package at a commit (within `limits`) and load it: a ModelPack per task it answers.

    revision: a 40-hex commit sha; a branch or tag (which can move) only with allow_unpinned. Files go to the
    Hugging Face cache (HF_HUB_CACHE / HF_HOME, read when called), so a second load of a commit is served from disk
    without any request. HF_HUB_OFFLINE=1 uses the cache only; endpoint defaults to HF_ENDPOINT. `timeout_s` bounds
    each request's wait for an answer (HF_HUB_ETAG_TIMEOUT overrides it for file metadata), HF_HUB_DOWNLOAD_TIMEOUT a
    stall while a file downloads.
    Raises HubError if the Hub cannot be reached, lacks the files or exceeds a limit, PackageError if the package is
    invalid; both without server paths or URLs.
    """
    label = f"{repo_id or '?'}@{revision or '?'}"
    if not repo_id or not revision:
        raise HubError(f"hub {label}: a Hub package needs a repo id and a pinned revision")
    if not allow_unpinned and not is_commit_sha(revision):
        raise HubError(f"hub {label}: the revision is not a 40-hex commit sha (a branch or tag can move)")
    # huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, at import; read them per call instead
    # so that a settings change (and each test's isolated HF_HOME) is honoured.
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    cache = str(cache_dir or _hub_cache_dir() or constants.HF_HUB_CACHE)
    options: dict[str, Any] = {"cache_dir": cache, "endpoint": endpoint, "token": token, "etag_timeout": timeout_s}
    stop = threading.Event()

    def download() -> tuple[Path, str]:
        # Privacy: with telemetry on, huggingface_hub's first request also fetches an agent-detection list from
        # huggingface.co. Xet transfers run in native code that no byte budget can stop: plain HTTP downloads
        # instead, which the Hub serves for every file. huggingface_hub reads both flags at call time.
        constants.HF_HUB_DISABLE_TELEMETRY = True
        constants.HF_HUB_DISABLE_XET = True
        if offline or is_commit_sha(revision):
            try:  # an immutable commit already cached needs no request at all
                return _cached(repo_id, revision, options), ""
            except LocalEntryNotFoundError:
                if offline:
                    raise
        try:
            info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, timeout=timeout_s,
                                                                    files_metadata=True)  # fmt: skip
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise  # the Hub answered: no such repo or revision, and the cache cannot change that
        except (httpx2.TransportError, HfHubHTTPError) as exc:
            if _is_client_error(exc):
                raise
            try:
                snapshot = _cached(repo_id, revision, options)
            except LocalEntryNotFoundError:
                raise exc from None
            log.warning("hub %s: the Hub did not answer (%s); using the cached copy", label, _detail(exc))
            return snapshot, "from the cache; the Hub did not answer"
        declared = {f.rfilename: f.lfs.size if f.lfs else f.size for f in info.siblings or ()
                    if f.rfilename in PACKAGE_FILES}  # fmt: skip
        _check_is_package(declared, label)
        check_sizes(declared, limits, label)
        budget = Budget(limits, stop, label)
        # Every file of the one commit the Hub named (a branch could move between two files).
        paths = [hf_hub_download(repo_id, name, revision=info.sha, tqdm_class=budget.meter(name, size), **options)
                 for name, size in sorted(declared.items())]  # fmt: skip
        if revision != info.sha:
            _remember_ref(Path(cache), repo_id, revision, info.sha)
        return Path(paths[0]).parent, ""

    started = time.time()
    try:
        snapshot, note = run_with_deadline(download, limits.deadline_s, stop)
    except TimeoutError:
        removed = remove_partial_downloads(Path(cache), repo_id, since=started)
        log.warning("hub %s: no package within %g s; stopped the transfer, removed %d partial file(s)", label,
                    limits.deadline_s, removed)  # fmt: skip
        raise HubError(f"hub {label}: download did not finish within {limits.deadline_s:g} s") from None
    except PackageError:
        raise
    except Exception as exc:
        log.warning("hub %s: download failed: %s", label, _detail(exc))
        raise HubError(f"hub {label}: download failed ({_public_reason(exc)})") from None
    on_disk = {name: (snapshot / name).stat().st_size for name in PACKAGE_FILES if (snapshot / name).is_file()}
    _check_is_package(on_disk, label)
    check_sizes(on_disk, limits, label)
    commit = snapshot.name
    source = f"hub {repo_id}@{commit}" if revision == commit else f"hub {repo_id}@{commit} (revision {revision})"
    source = f"{source} ({note})" if note else source
    try:
        return load_package(snapshot, source=source, threads=threads)
    except PackageError as exc:
        # The package's own problem, with its files named as they are in the repo rather than in this server's cache.
        raise PackageError(f"hub {label}: {str(exc).replace(str(snapshot) + os.sep, '')}") from None


def _cached(repo_id: str, revision: str, options: dict[str, Any]) -> Path:
    """The cached copy of a revision; LocalEntryNotFoundError if there is none or it lacks a required file (a
    download stopped at the deadline leaves the files that had finished)."""
    cached = {key: options[key] for key in ("cache_dir", "endpoint", "token")}
    snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(PACKAGE_FILES),
                                      local_files_only=True, **cached))  # fmt: skip
    if not all((snapshot / name).is_file() for name in (CONFIG_FILE, MODEL_FILE)):
        raise LocalEntryNotFoundError("the cached copy is incomplete")
    return snapshot


def _remember_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    """Record which commit a branch or tag named, as huggingface_hub's cache does (`refs/<revision>`), so that the
    cached copy serves when the Hub is down. Downloads go by commit, which records no ref."""
    refs = cache / f"models--{repo_id.replace('/', '--')}" / "refs"
    ref = (refs / revision).resolve()
    if ref.is_relative_to(refs.resolve()):  # a revision is a name, not a way out of the cache
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)


def _check_is_package(files: dict[str, Any], label: str) -> None:
    missing = [name for name in (CONFIG_FILE, MODEL_FILE) if name not in files]
    if missing:
        raise HubError(f"hub {label}: the repo has no {' or '.join(missing)} at this revision (not a model package)")


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


def _public_reason(exc: BaseException) -> str:
    """Why a download failed, in words fit for a visitor: the kind of failure, never a URL or a path."""
    if isinstance(exc, RepositoryNotFoundError):
        return "the Hub has no such repository, or it is private"
    if isinstance(exc, RevisionNotFoundError):
        return "the repository has no such revision"
    if isinstance(exc, LocalEntryNotFoundError):
        return "the Hub could not be reached and the cache has no copy"
    if isinstance(exc, httpx2.TimeoutException):
        return "the Hub did not answer in time"
    if isinstance(exc, httpx2.TransportError):
        return "the Hub could not be reached"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is not None:
        return f"the Hub answered HTTP {status}"
    if isinstance(exc, OSError):
        return "a file arrived incomplete or could not be stored"
    return type(exc).__name__


def _detail(exc: BaseException) -> str:
    """For the log: the error's type and first line, with its cause when that says more."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(cause).__name__ not in text:
        detail = f"{type(cause).__name__}: {' '.join(str(cause).split())[:200]}"
        text = f"{text} [{detail}]" if text else detail
    return f"{name}: {text}"[:300]
