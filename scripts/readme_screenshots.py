"""The README's screenshots: the app on the bundled models, an example photo analysed, at phone and desktop size.

    python scripts/readme_screenshots.py [--out docs/screenshots]

Launches the app as `python app.py` serves it, drives headless Chromium (/usr/bin/chromium) with Playwright,
uploads the example melanoma photo, switches "where the model looked" on for the malignancy answer on the phone,
and writes phone.png (390x844) and desktop.png (1366x900): what a visitor sees after the page scrolled to the result.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT  # noqa: E402
from skin_demo.hub import load_models  # noqa: E402
from skin_demo.settings import Settings  # noqa: E402
from skin_demo.ui import build_app, launch  # noqa: E402

PHOTO = REPO_ROOT / "examples" / "ISIC_0024496.jpg"  # a HAM10000 test-split melanoma (examples/manifest.csv)
VIEWS = {
    "phone": dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True),
    "desktop": dict(viewport={"width": 1366, "height": 900}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "screenshots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    models = load_models(settings)
    demo = build_app(settings, models=models)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = launch(demo, models, prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            for name, view in VIEWS.items():
                page = browser.new_context(**view).new_page()
                page.goto(url, wait_until="load")
                page.locator("#image-input input[type=file]").set_input_files(str(PHOTO))
                page.wait_for_selector("#lesion-type-chart img")
                page.wait_for_selector("#headline .photo img")
                if name == "phone":
                    page.locator("#headline label[for=map-malignancy]").click()
                page.wait_for_timeout(500)  # the scroll to the result
                page.screenshot(path=str(args.out / f"{name}.png"))
                print(f"wrote {args.out / f'{name}.png'}")
                page.context.close()
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
