"""skin-demo: a research demo that classifies dermoscopy images with two ONNX models. Not a diagnosis.

Importing the package sets, before any library reads it, the environment every entry point needs (app.py,
`python -m skin_demo.train`, the benchmarks): each library below reads its setting once, when it is imported.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout (or the Space's folder): models/, examples/

# Privacy: no usage analytics or telemetry of any library. The only outbound requests are the configured Hub
# downloads. ONNX Runtime's Python package otherwise looks up mobile.events.data.microsoft.com seconds after
# start; tests/test_no_outbound.py traces the app's connections to keep it so.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
# Memory: Pillow allocates a large image in 16 MB blocks by default, which glibc serves from heap arenas that keep
# freed memory, so each worker thread that once decoded a large upload went on holding ~200 MB. Blocks above
# glibc's largest mmap threshold (32 MB) are mapped and unmapped instead (benchmarks/bench_decode.py, flood).
if not os.environ.get("PILLOW_BLOCK_SIZE"):
    os.environ["PILLOW_BLOCK_SIZE"] = "64m"
