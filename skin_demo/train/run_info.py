"""What a training command records next to what it produced: the code commit and its arguments as JSON."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """The checkout's HEAD commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def jsonable(values: dict) -> dict:
    """argparse values as JSON-able data: paths as strings, the sub-command's function left out."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if k != "func"}
