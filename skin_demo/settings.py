"""Where the three models come from, and the serving knobs: environment variables and an optional settings file.

Default: the packages bundled in `models/malignancy`, `models/lesion_type` and `models/lesion_check` (the check
that an image is a skin-lesion close-up at all). Per task a Hugging Face Hub repo
and a pinned revision may be configured instead; if the Hub cannot be reached or serves an invalid package the
app falls back to the bundled package and says why (log and UI). A broken bundled package is a startup error.

Environment variables (they override the settings file):
  SKIN_DEMO_SETTINGS                  path of a TOML settings file (default: none)
  SKIN_DEMO_MODELS_DIR                folder with the bundled `malignancy/`, `lesion_type/`, `lesion_check/`
  SKIN_DEMO_MALIGNANCY_REPO           Hub repo id of the malignancy package, e.g. org/skin-demo-malignancy
  SKIN_DEMO_MALIGNANCY_REVISION       its pinned revision: a commit sha (best) or a tag
  SKIN_DEMO_LESION_TYPE_REPO          same for the lesion-type package
  SKIN_DEMO_LESION_TYPE_REVISION
  SKIN_DEMO_LESION_CHECK_REPO         same for the lesion-check package
  SKIN_DEMO_LESION_CHECK_REVISION
  SKIN_DEMO_HUB_ENDPOINT              Hub URL (default: HF_ENDPOINT, else https://huggingface.co)
  SKIN_DEMO_HUB_TIMEOUT               seconds per Hub HTTP request before the Hub counts as down (default 5)
  SKIN_DEMO_HUB_DEADLINE              seconds for downloading one whole package (default 60)
  SKIN_DEMO_THREADS                   ONNX Runtime intra-op threads per model (default: cores, at most 4)
  SKIN_DEMO_CONCURRENCY               requests analysed at the same time (default: cores // threads, at least 1)
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

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skin_demo.examples import DEFAULT_EXAMPLES_DIR
from skin_demo.hub import DEFAULT_HUB_DEADLINE_S, DEFAULT_HUB_TIMEOUT_S, load_from_hub
from skin_demo.modelpack import ModelPack, PackageError, available_cpus, default_threads
from skin_demo.postprocess import DOMAIN_LABELS, LESION_LABEL, NOT_LESION, is_lesion_check

log = logging.getLogger(__name__)

TASKS = ("malignancy", "lesion_type", "lesion_check")
MIN_CONCURRENCY = 4
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS_DIR = REPO_ROOT / "models"
ENV_PREFIX = "SKIN_DEMO_"


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names the setting."""


@dataclass(frozen=True)
class HubSource:
    """A model package on the Hugging Face Hub, pinned to one revision."""

    repo_id: str
    revision: str

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class Settings:
    """Everything configurable about serving. Build with `Settings.from_env()` or directly (tests)."""

    models_dir: Path = DEFAULT_MODELS_DIR
    # Per task: a Hub source, or None for the bundled package. An incomplete source (repo without revision)
    # is kept as a message, so the app can fall back and say why.
    hub: Mapping[str, HubSource | None] = field(default_factory=dict)
    hub_problems: Mapping[str, str] = field(default_factory=dict)
    hub_endpoint: str | None = None
    hub_timeout_s: float = DEFAULT_HUB_TIMEOUT_S
    hub_deadline_s: float = DEFAULT_HUB_DEADLINE_S
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

    def bundled_dir(self, task: str) -> Path:
        return Path(self.models_dir) / task

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings file named by SKIN_DEMO_SETTINGS (if any), then the SKIN_DEMO_* variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        settings_file = env.get(ENV_PREFIX + "SETTINGS")
        if settings_file:
            values = _read_settings_file(Path(settings_file))

        def get(name: str) -> Any:
            return env.get(ENV_PREFIX + name.upper()) or values.get(name)

        hub: dict[str, HubSource | None] = {}
        problems: dict[str, str] = {}
        for task in TASKS:
            section = values.get(task, {}) if isinstance(values.get(task), dict) else {}
            repo = env.get(f"{ENV_PREFIX}{task.upper()}_REPO") or section.get("repo")
            revision = env.get(f"{ENV_PREFIX}{task.upper()}_REVISION") or section.get("revision")
            hub[task] = None
            if repo and revision:
                hub[task] = HubSource(str(repo), str(revision))
            elif repo or revision:
                problems[task] = (
                    f"{ENV_PREFIX}{task.upper()}_REPO and {ENV_PREFIX}{task.upper()}_REVISION must both be set "
                    f"(got repo={repo!r}, revision={revision!r}); a Hub model is always pinned to a revision"
                )
        models_dir = get("models_dir")
        examples_dir = get("examples_dir")
        return cls(
            models_dir=Path(models_dir) if models_dir else DEFAULT_MODELS_DIR,
            hub=hub,
            hub_problems=problems,
            hub_endpoint=get("hub_endpoint") or None,
            hub_timeout_s=_number(get("hub_timeout"), "hub_timeout", DEFAULT_HUB_TIMEOUT_S),
            hub_deadline_s=_number(get("hub_deadline"), "hub_deadline", DEFAULT_HUB_DEADLINE_S),
            threads=_positive_int(get("threads"), "threads"),
            concurrency=_positive_int(get("concurrency"), "concurrency"),
            examples_dir=Path(examples_dir) if examples_dir else DEFAULT_EXAMPLES_DIR,
        )


@dataclass(frozen=True)
class LoadedModels:
    """The three packages in use, and for each task why the configured Hub package is not in use (if it is not)."""

    malignancy: ModelPack
    lesion_type: ModelPack
    lesion_check: ModelPack
    notices: Mapping[str, str] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.malignancy, self.lesion_type, self.lesion_check))


def load_models(settings: Settings | None = None) -> LoadedModels:
    """Load the three packages as configured, falling back to the bundled package when the Hub one fails.

    Raises PackageError (naming the file) when a bundled package that is needed is missing or invalid.
    """
    settings = settings or Settings.from_env()
    packs: dict[str, ModelPack] = {}
    notices: dict[str, str] = {}
    for task in TASKS:
        packs[task], notice = _load_task(task, settings)
        if notice:
            notices[task] = notice
    return LoadedModels(**packs, notices=notices)


def _load_task(task: str, settings: Settings) -> tuple[ModelPack, str | None]:
    source = settings.hub.get(task)
    problem = settings.hub_problems.get(task)
    if source is not None:
        try:
            pack = load_from_hub(
                source.repo_id,
                source.revision,
                threads=settings.ort_threads,
                endpoint=settings.hub_endpoint,
                timeout_s=settings.hub_timeout_s,
                deadline_s=settings.hub_deadline_s,
            )
            _check_task(pack, task, where=f"hub {source}")
            log.info("%s: using %s", task, pack.source)
            return pack, None
        except PackageError as exc:
            problem = str(exc)
    bundled = settings.bundled_dir(task)
    pack = ModelPack.load(bundled, source=f"bundled {_display_path(bundled)}", threads=settings.ort_threads)
    _check_task(pack, task, where=str(bundled / "config.json"))
    if problem:
        notice = f"The {task.replace('_', '-')} model from the Hub is not in use ({problem}); using the bundled model."
        log.warning("%s: falling back to %s: %s", task, pack.source, problem)
        return pack, notice
    log.info("%s: using %s", task, pack.source)
    return pack, None


def _check_task(pack: ModelPack, task: str, where: str) -> None:
    if pack.config.task != task:
        raise PackageError(f"{where}: task is {pack.config.task!r}, expected {task!r} for this slot")
    if task == "malignancy" and not pack.config.malignant_labels:
        raise PackageError(f"{where}: a malignancy package needs malignant_labels")
    if task == "lesion_check" and not is_lesion_check(pack.config):
        raise PackageError(f"{where}: a lesion_check package needs the labels {list(DOMAIN_LABELS)} (or, in its older "
                           f"form, {[LESION_LABEL, NOT_LESION]}); it has {list(pack.config.labels)}")


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_settings_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML ({exc})") from None


def _number(value: Any, name: str, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number of seconds, got {value!r}") from None
    if number <= 0:
        raise SettingsError(f"{name} must be > 0, got {value!r}")
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
