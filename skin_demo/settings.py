"""The serving settings: environment variables and an optional settings file, read and checked, nothing loaded.

Which package each task uses (the bundled folder, or a Hugging Face Hub repo pinned to a commit) and how the Hub is
reached are settings; loading the packages and falling back from the Hub is skin_demo.hub's job.

Environment variables (they override the settings file):
  SKIN_DEMO_SETTINGS                  path of a TOML settings file (default: none)
  SKIN_DEMO_MODELS_DIR                folder of the bundled packages: one folder per package, each answering the
                                      tasks its config.json names (malignancy, lesion_type, lesion_check)
  SKIN_DEMO_MALIGNANCY_REPO           Hub repo id of the malignancy package, e.g. org/skin-demo-malignancy
  SKIN_DEMO_MALIGNANCY_REVISION       its revision: a 40-hex commit sha (a branch or tag can move under the app)
  SKIN_DEMO_LESION_TYPE_REPO          same for the lesion-type package
  SKIN_DEMO_LESION_TYPE_REVISION
  SKIN_DEMO_LESION_CHECK_REPO         same for the lesion-check package
  SKIN_DEMO_LESION_CHECK_REVISION
  SKIN_DEMO_ALLOW_UNPINNED            1: accept a branch or tag as revision (the page then says the model is unpinned)
  SKIN_DEMO_HUB_ENDPOINT              Hub URL (default: HF_ENDPOINT, else https://huggingface.co)
  SKIN_DEMO_HUB_TIMEOUT               seconds per Hub HTTP request before the Hub counts as down (default 5)
  SKIN_DEMO_HUB_DEADLINE              seconds for downloading one whole package (default 60)
  SKIN_DEMO_HUB_MAX_FILE_MB           the largest file of a Hub package, in MB (default 200)
  SKIN_DEMO_HUB_MAX_PACKAGE_MB        the largest Hub package, all its files together, in MB (default 300)
  SKIN_DEMO_THREADS                   ONNX Runtime intra-op threads per model (default: cores, at most 4)
  SKIN_DEMO_CONCURRENCY               requests analysed at the same time (default: cores // threads, at least 4)
  SKIN_DEMO_EXAMPLES_DIR              folder with the example images and manifest.csv
  HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN are honoured as huggingface_hub documents them.

The settings file uses the same names in lower case without the prefix, e.g.

    models_dir = "models"
    hub_timeout = 5
    [malignancy]
    repo = "org/skin-demo-malignancy"
    revision = "0123456789abcdef0123456789abcdef01234567"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skin_demo import REPO_ROOT
from skin_demo.examples import DEFAULT_EXAMPLES_DIR
from skin_demo.modelpack import available_cpus, default_threads
from skin_demo.predictor import TASKS

MIN_CONCURRENCY = 4
DEFAULT_MODELS_DIR = REPO_ROOT / "models"
ENV_PREFIX = "SKIN_DEMO_"
DEFAULT_HUB_TIMEOUT_S = 5.0  # per HTTP request: a Hub that does not answer within this is treated as down
DEFAULT_HUB_DEADLINE_S = 60.0  # for a whole package (about 15 MB for the bundled architectures)
# The bundled packages are 5-10 MB each; a package hundreds of MB large is a mistake or an attack, and without a
# cap a repo declaring a 4 GB model.onnx filled the cache before ONNX Runtime refused it.
DEFAULT_HUB_MAX_FILE_MB = 200.0
DEFAULT_HUB_MAX_PACKAGE_MB = 300.0
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names the setting."""


@dataclass(frozen=True)
class HubSource:
    """A model package on the Hugging Face Hub at one revision (a commit sha unless unpinned revisions are allowed)."""

    repo_id: str
    revision: str

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"

    @property
    def pinned(self) -> bool:
        """Whether the revision is a commit sha, the only kind of revision that cannot change under the app."""
        return is_commit_sha(self.revision)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about serving. Build with `Settings.from_env()` or directly (tests)."""

    models_dir: Path = DEFAULT_MODELS_DIR
    # Per task: a Hub source, or None for the bundled package. A source the app must not use (a repo without a
    # revision, a branch name while unpinned revisions are not allowed) is kept as a message instead, so the app can
    # fall back and say why.
    hub: Mapping[str, HubSource | None] = field(default_factory=dict)
    hub_problems: Mapping[str, str] = field(default_factory=dict)
    allow_unpinned: bool = False
    hub_endpoint: str | None = None
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S
    hub_max_file_bytes: int = int(DEFAULT_HUB_MAX_FILE_MB * 1e6)
    hub_max_package_bytes: int = int(DEFAULT_HUB_MAX_PACKAGE_MB * 1e6)
    threads: int | None = None
    concurrency: int | None = None
    examples_dir: Path = DEFAULT_EXAMPLES_DIR

    @property
    def ort_threads(self) -> int:
        """ONNX Runtime intra-op threads per model session."""
        return self.threads or default_threads()

    @property
    def concurrency_limit(self) -> int:
        """How many requests run at once: enough to keep every core busy with `ort_threads` each, and at least
        MIN_CONCURRENCY. A request waiting for imaging's one large-decode slot holds its worker, so with a single
        worker an ordinary photo queued behind a flood of huge PNGs for seconds (measured: 12.8 s p95); memory
        stays bounded by that slot whatever the concurrency."""
        return self.concurrency or max(MIN_CONCURRENCY, available_cpus() // self.ort_threads)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings file named by SKIN_DEMO_SETTINGS (if any), then the SKIN_DEMO_* variables.

        Raises SettingsError naming the setting whose value cannot be used."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        settings_file = env.get(ENV_PREFIX + "SETTINGS")
        if settings_file:
            values = _read_settings_file(Path(settings_file))

        def get(name: str) -> Any:
            return env.get(ENV_PREFIX + name.upper()) or values.get(name)

        allow_unpinned = _flag(get("allow_unpinned"), "allow_unpinned")
        hub: dict[str, HubSource | None] = {}
        problems: dict[str, str] = {}
        for task in TASKS:
            section = values.get(task, {}) if isinstance(values.get(task), dict) else {}
            repo = env.get(f"{ENV_PREFIX}{task.upper()}_REPO") or section.get("repo")
            revision = env.get(f"{ENV_PREFIX}{task.upper()}_REVISION") or section.get("revision")
            hub[task] = None
            name = f"{ENV_PREFIX}{task.upper()}_REVISION"
            if repo and revision and (allow_unpinned or is_commit_sha(str(revision))):
                hub[task] = HubSource(str(repo), str(revision))
            elif repo and revision:
                problems[task] = (
                    f"{name} is {str(revision)[:60]!r}, not a 40-hex commit sha; a branch or tag can change under the "
                    f"app, so a Hub model is pinned to a commit (set {ENV_PREFIX}ALLOW_UNPINNED=1 to accept it anyway)"
                )
            elif repo or revision:
                problems[task] = (
                    f"{ENV_PREFIX}{task.upper()}_REPO and {name} must both be set; a Hub model is always pinned to a "
                    "revision"
                )
        models_dir = get("models_dir")
        examples_dir = get("examples_dir")
        return cls(
            models_dir=Path(models_dir) if models_dir else DEFAULT_MODELS_DIR,
            hub=hub,
            hub_problems=problems,
            allow_unpinned=allow_unpinned,
            hub_endpoint=get("hub_endpoint") or None,
            hub_timeout_s=_number(get("hub_timeout"), "hub_timeout", DEFAULT_HUB_TIMEOUT_S),
            hub_deadline_s=_number(get("hub_deadline"), "hub_deadline", DEFAULT_HUB_DEADLINE_S),
            hub_max_file_bytes=int(1e6 * _number(get("hub_max_file_mb"), "hub_max_file_mb", DEFAULT_HUB_MAX_FILE_MB)),
            hub_max_package_bytes=int(
                1e6 * _number(get("hub_max_package_mb"), "hub_max_package_mb", DEFAULT_HUB_MAX_PACKAGE_MB)
            ),
            threads=_positive_int(get("threads"), "threads"),
            concurrency=_positive_int(get("concurrency"), "concurrency"),
            examples_dir=Path(examples_dir) if examples_dir else DEFAULT_EXAMPLES_DIR,
        )


def is_commit_sha(revision: str) -> bool:
    """Whether `revision` is a full commit sha (40 lower-case hex digits), as the Hub names commits."""
    return COMMIT_SHA.fullmatch(revision) is not None


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None


def _flag(value: Any, name: str) -> bool:
    if value in (None, "", False):
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0, got {value!r}")


def _number(value: Any, name: str, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise SettingsError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def _positive_int(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise SettingsError(f"{name} must be at least 1, got {value!r}")
    return number
