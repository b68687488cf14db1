"""Serving never imports torch or timm: the Space installs requirements.txt only (see DESIGN.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT


def test_serving_modules_and_app_import_without_torch_or_timm():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["timm"] = None
        import importlib
        for name in ["skin_demo.imaging", "skin_demo.modelpack", "skin_demo.predictor", "skin_demo.charts",
                     "skin_demo.settings", "skin_demo.examples", "skin_demo.ui", "app"]:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "torchvision")
                        and sys.modules[m] is not None)
        assert not loaded, loaded
        assert "skin_demo.train" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
