"""Hugging Face Space entry point: `python app.py` serves the demo on the bundled models (or as configured).

Configuration is by environment variables (see README.md, "Configuration", and skin_demo/settings.py); the
Space's host and port come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, which Gradio reads itself.
"""

import logging
import signal
import sys

# No usage analytics or telemetry: importing skin_demo sets the switches before any library reads them.
from skin_demo.hub import load_models
from skin_demo.modelpack import PackageError
from skin_demo.settings import Settings, SettingsError
from skin_demo.ui import build_app, launch


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
        models = load_models(settings)
        demo = build_app(settings, models=models)
    except (PackageError, SettingsError) as exc:
        # A broken bundled package or setting is a startup error: say which file or setting, without a traceback.
        print(f"skin-demo cannot start: {exc}", file=sys.stderr)
        return 1
    # A Space is stopped with SIGTERM: shut down as on Ctrl-C (SIGINT), which closes the server and deletes every
    # file visitors uploaded, instead of dying with them on disk.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    launch(demo, models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
