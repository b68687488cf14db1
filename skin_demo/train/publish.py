"""Publish a model package to the Hugging Face Hub.

`python -m skin_demo.train publish PACKAGE --repo ORG/NAME [--revision BRANCH] [--private] [--dry-run]`

PACKAGE is a single-task package (models/lesion_check, runs/RUN/packages/<task>) or one with a head per task that
`combine` made (models/classifiers). It is validated with the serving loader first (a package the app would refuse
is never uploaded). A single-task package's model card is regenerated from config.json and the per-source
evaluation in eval/metrics.json (a lesion-check package keeps the card its own training wrote). A package with
several heads keeps the card `combine` (or `evaluate`) wrote, and each head's evaluation, eval/<task>/metrics.json,
must match that head's config. model.onnx, config.json, README.md and everything under eval/ go up in one commit;
eval/ on the Hub then mirrors eval/ here. The command prints the commit sha: pin the app to it (SKIN_DEMO_<TASK>_REPO and
SKIN_DEMO_<TASK>_REVISION for every task the package answers), never to a branch that can move.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from skin_demo.config import PackageConfig
from skin_demo.modelpack import CONFIG_FILE, MODEL_FILE, README_FILE, PackageError, load_package
from skin_demo.train.card import render_model_card
from skin_demo.train.evaluate import EVAL_DIR, recorded_metrics
from skin_demo.train.results import Evaluation
from skin_demo.train.report import METRICS_FILE, read_evaluation
from skin_demo.settings import ENV_PREFIX

# huggingface_hub matches these with fnmatch, whose `*` spans `/`: `eval/*` takes eval/<task>/* too.
UPLOAD_PATTERNS = [MODEL_FILE, CONFIG_FILE, README_FILE, f"{EVAL_DIR}/*"]
IGNORE_PATTERNS = ["*/.*"]  # hidden files and folders (.DS_Store, .ipynb_checkpoints/) anywhere below eval/
# eval/ on the Hub mirrors eval/ here: plots of an older evaluation must not linger next to new numbers.
DELETE_PATTERNS = [f"{EVAL_DIR}/*"]
CARD_TASKS = ("lesion_type", "malignancy")  # whose card card.py renders; other packages bring their own README.md


class PublishError(RuntimeError):
    """The package cannot be published as it is; the message says why and what to do."""


@dataclass(frozen=True)
class PublishResult:
    """What was (or, for a dry run, would be) published."""

    repo_id: str
    branch: str
    files: tuple[str, ...]  # paths inside the repo
    commit_sha: str | None  # None for a dry run
    commit_url: str | None
    card_changed: bool  # README.md was (would be) regenerated
    tasks: tuple[str, ...]  # the tasks the package answers, in head order

    @property
    def pinned(self) -> str | None:
        """`repo_id@sha`: the exact revision to load."""
        return f"{self.repo_id}@{self.commit_sha}" if self.commit_sha else None


def publish_package(
    package_dir: Path | str,
    repo_id: str,
    *,
    branch: str | None = None,
    private: bool = False,
    token: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    allow_unevaluated: bool = False,
    commit_message: str | None = None,
) -> PublishResult:
    """Validate, regenerate the card of (a single-task package), and upload the package in `package_dir` to the
    model repo `repo_id`.

    branch: the branch to commit to (default "main"; created from main if missing).
    token: a Hub token; default HF_TOKEN or the saved login. endpoint: default HF_ENDPOINT or huggingface.co.
    dry_run: check everything and list the files, but write and upload nothing.
    allow_unevaluated: publish a package without eval/metrics.json (eval/<task>/metrics.json per head; refused by
    default: a public model needs its held-out numbers on its card).
    Raises PublishError for a package the app would refuse, a missing evaluation or card, or a missing token; Hub
    errors (huggingface_hub's HfHubHTTPError and friends) propagate.
    """
    package_dir = Path(package_dir)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo must be ORG/NAME (a model repo id), got {repo_id!r}")
    try:
        packs = load_package(package_dir, threads=1)
    except PackageError as exc:
        raise PublishError(f"refusing to publish a broken package: {exc}") from None
    configs = [pack.config for pack in packs.values()]
    if len(configs) == 1:
        card = _single_task_card(configs[0], package_dir, repo_id, allow_unevaluated)
    else:
        card = _heads_card(configs, package_dir, allow_unevaluated)
    readme = package_dir / README_FILE
    card_changed = not readme.is_file() or readme.read_text() != card
    files = (MODEL_FILE, CONFIG_FILE, README_FILE, *eval_files(package_dir))
    branch = branch or "main"
    tasks = tuple(packs)
    if dry_run:
        return PublishResult(repo_id, branch, files, None, None, card_changed, tasks)

    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise PublishError("no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`")
    if card_changed:
        readme.write_text(card)
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if branch != "main":
        api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=package_dir,
        revision=branch,
        allow_patterns=UPLOAD_PATTERNS,
        ignore_patterns=list(IGNORE_PATTERNS),  # a copy: upload_folder appends its own defaults to the list
        delete_patterns=DELETE_PATTERNS,
        commit_message=commit_message or _default_message(configs),
    )
    return PublishResult(repo_id, branch, files, info.oid, info.commit_url, card_changed, tasks)


def eval_files(package_dir: Path) -> list[str]:
    """The repo paths of the files under eval/ (eval/<task>/ included) that the upload takes, sorted."""
    from huggingface_hub.utils import filter_repo_objects

    local = sorted(p.relative_to(package_dir).as_posix() for p in (package_dir / EVAL_DIR).rglob("*") if p.is_file())
    return list(filter_repo_objects(local, allow_patterns=UPLOAD_PATTERNS, ignore_patterns=IGNORE_PATTERNS))


def settings_lines(task: str, result: PublishResult) -> list[str]:
    """The environment variables that point the app at exactly this upload."""
    prefix = f"{ENV_PREFIX}{task.upper()}"
    return [f"{prefix}_REPO={result.repo_id}", f"{prefix}_REVISION={result.commit_sha}"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `publish` subcommand."""
    parser = subparsers.add_parser(
        "publish",
        help="upload a validated package with its model card to the Hugging Face Hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "package", type=Path, help="package folder, e.g. models/classifiers (a head per task) or models/lesion_check"
    )
    parser.add_argument("--repo", required=True, help="model repo id, ORG/NAME (created if missing)")
    parser.add_argument("--revision", help="branch to commit to (default: main; created if missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private (if it is new)")
    parser.add_argument("--dry-run", action="store_true", help="validate and list the files; upload nothing")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN, then the saved `hf auth login`)")
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT, then https://huggingface.co)")
    parser.add_argument("--message", help="commit message")
    parser.add_argument(
        "--allow-unevaluated",
        action="store_true",
        help="publish even without eval/metrics.json, or a head's eval/<task>/metrics.json (not recommended)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """The `publish` command; returns the process exit code."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        result = publish_package(
            args.package,
            args.repo,
            branch=args.revision,
            private=args.private,
            token=args.token,
            endpoint=args.endpoint,
            dry_run=args.dry_run,
            allow_unevaluated=args.allow_unevaluated,
            commit_message=args.message,
        )
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (HfHubHTTPError, OSError) as exc:
        print(f"error: the Hub refused or could not be reached: {exc}", file=sys.stderr)
        return 1
    card_note = " (README.md regenerated)" if result.card_changed else ""
    if result.commit_sha is None:
        print(f"dry run: would upload to {result.repo_id} (branch {result.branch}){card_note}:")
        for name in result.files:
            print(f"  {name}")
        return 0
    print(f"published {len(result.files)} files to {result.repo_id} (branch {result.branch}){card_note}")
    print(f"commit: {result.commit_sha}")
    if result.commit_url:
        print(f"url: {result.commit_url}")
    print(f"pinned revision: {result.pinned}")
    print("app settings (environment):")
    for task in result.tasks:
        for line in settings_lines(task, result):
            print(f"  {line}")
    return 0


def _single_task_card(config: PackageConfig, package_dir: Path, repo_id: str, allow_unevaluated: bool) -> str:
    """The card to publish: rendered from config.json and eval/ for a CARD_TASKS package, else its own README.md."""
    readme = package_dir / README_FILE
    if config.task in CARD_TASKS:
        evaluation = _checked_evaluation(config, package_dir / EVAL_DIR, str(package_dir / CONFIG_FILE),
                                         "re-run evaluate")  # fmt: skip
        if evaluation is None and not allow_unevaluated:
            raise PublishError(
                f"{package_dir / EVAL_DIR / METRICS_FILE} not found: run `python -m skin_demo.train evaluate "
                f"{package_dir} --ham ... --split ... --isic2017 ...` first (or pass --allow-unevaluated)"
            )
        return render_model_card(config, evaluation, repo_id=repo_id)
    if not readme.is_file():
        raise PublishError(f"{readme} not found: a {config.task} package brings its own model card")
    if not (package_dir / EVAL_DIR / METRICS_FILE).is_file() and not allow_unevaluated:
        raise PublishError(f"{package_dir / EVAL_DIR / METRICS_FILE} not found (or pass --allow-unevaluated)")
    return readme.read_text()


def _heads_card(configs: list[PackageConfig], package_dir: Path, allow_unevaluated: bool) -> str:
    """The card `combine` wrote, once each head's evaluation (eval/<task>/) is there and matches its config."""
    for config in configs:
        task = config.task
        folder = package_dir / EVAL_DIR / task
        remedy = f"evaluate the {task} package and combine again"
        if task in CARD_TASKS:
            config_name = f"{package_dir / CONFIG_FILE} ({task} head)"
            found = _checked_evaluation(config, folder, config_name, remedy) is not None
        else:
            found = (folder / METRICS_FILE).is_file()
        if not found and not allow_unevaluated:
            raise PublishError(f"{folder / METRICS_FILE} not found: {remedy} (or pass --allow-unevaluated)")
    readme = package_dir / README_FILE
    if not readme.is_file():
        parts = " ".join(f"<{config.task} package>" for config in configs)
        raise PublishError(
            f"{readme} not found: a package with several heads publishes the card `combine` writes; run "
            f"`python -m skin_demo.train combine {parts} --out {package_dir}` again"
        )
    return readme.read_text()


def _checked_evaluation(config: PackageConfig, folder: Path, config_name: str, remedy: str) -> Evaluation | None:
    """The evaluation in `folder`, checked against `config` (named `config_name` in errors); None if there is none."""
    try:
        evaluation = read_evaluation(folder)
    except ValueError as exc:
        raise PublishError(f"{exc}: {remedy}") from None
    if evaluation is None:
        return None
    source = folder / METRICS_FILE
    if evaluation.task != config.task or tuple(evaluation.labels) != tuple(config.labels):
        raise PublishError(
            f"{source} is for task {evaluation.task!r} with labels {list(evaluation.labels)}, "
            f"but the package is {config.task!r} with {list(config.labels)}: {remedy}"
        )
    measured = json.loads(json.dumps(recorded_metrics(evaluation)))
    if config.metrics != measured:
        raise PublishError(
            f"{config_name} metrics (sources {sorted(config.metrics)}) do not match {source} "
            f"(sources {sorted(measured)}, or different numbers): {remedy}"
        )
    return evaluation


def _default_message(configs: list[PackageConfig]) -> str:
    if len(configs) > 1:
        tasks = " + ".join(config.task for config in configs)
        return f"skin-demo {tasks} package ({configs[0].architecture}, a head per task)"
    (config,) = configs
    numbers = ", ".join(
        f"{source} {key} {headline[key]}"
        for source, headline in config.metrics.items() if isinstance(headline, dict)
        for key in ("balanced_accuracy", "roc_auc") if headline.get(key) is not None
    )
    return f"skin-demo {config.task} package ({config.architecture})" + (f": {numbers}" if numbers else "")
