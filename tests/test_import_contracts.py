"""The import contracts in pyproject.toml hold (import-linter): serving never imports training, torch or timm, and
the layers of DESIGN.md ("Layout") only import downwards, so no import circle can come back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    result = subprocess.run([shutil.which("lint-imports"), "--no-cache"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
