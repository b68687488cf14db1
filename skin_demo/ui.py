"""The Gradio page and the `/predict` API endpoint. The only module that imports gradio; no model logic here.

`build_app(settings)` loads the models and builds the page; `launch(demo, models)` serves it with this app's
defaults (request guard, upload limit, upload lifetimes, no monitoring, the on-device page). Handlers map widget
values to one `Predictor.predict` call and return dicts keyed by component.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
import traceback
import typing
import weakref
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData
from gradio.route_utils import API_PREFIX
from PIL import Image
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from skin_demo import charts, guard, page
from skin_demo.api_schema import PredictionJSON
from skin_demo.examples import read_manifest
from skin_demo.imaging import MAX_FILE_BYTES, ImageError
from skin_demo.hub import load_models
from skin_demo.modelpack import Models
from skin_demo.predictor import Prediction, Predictor
from skin_demo.settings import Settings
from skin_demo.texts import DISCLAIMER, DISCLAIMER_SHORT, flag_words, percentage
from skin_demo.uploads import Uploads
from skin_demo.web.server import mount_on_device

log = logging.getLogger(__name__)

TITLE = "Skin lesion classifier (research demo)"
QUEUE_MAX_SIZE = 64  # requests waiting beyond this get an immediate "queue full" instead of a long wait
# An upload lives at most a minute (the page's photo long enough for the browser to show its preview; an API upload
# goes as soon as it has been analysed); what never became an upload is swept every 30 s (skin_demo.uploads).
UPLOAD_LIFETIME_S = 60.0
LEFTOVER_SWEEP_S = 30.0
SESSION_CAPACITY = 200  # Gradio keeps per-visitor page state for at most this many recent sessions
JSON_BODY_LIMIT = 64 * 1024  # an event call names an upload; it never carries an image itself
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and part headers around one image file
PAGE_GONE = "this photo is no longer on the server (photos are deleted a minute after upload); upload it again"
NO_EXAMPLE = "this example is not on the page; tap one of the examples shown"
_UPLOADS: weakref.WeakKeyDictionary[gr.Blocks, Uploads] = weakref.WeakKeyDictionary()  # each app's uploads

SYSTEM_FONTS = ("system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif")
SYSTEM_MONO_FONTS = ("ui-monospace", "Consolas", "monospace")
SCROLL_TO_RESULT = "() => document.querySelector('#result')?.scrollIntoView({block: 'start'})"
PAGE_URL_JS = (  # the API snippet names the URL the visitor is on
    "element.querySelectorAll('[data-page-url]')"
    ".forEach(e => { e.textContent = location.origin + location.pathname; });"
)


def build_app(settings: Settings | None = None, *, models: Models | None = None) -> gr.Blocks:
    """Load the models (bundled or Hub, as `settings` say) and build the page and the /predict endpoint.

    settings: defaults to Settings.from_env() (SKIN_DEMO_* environment variables).
    models: already loaded packages (skips loading; for tests and benchmarks).
    Raises modelpack.PackageError when a needed bundled package is missing or invalid (a startup error).
    Serve the result with `launch(demo, models)`.
    """
    settings = settings or Settings.from_env()
    models = models or load_models(settings)
    predictor = Predictor.from_models(models)
    examples = read_manifest(settings.examples_dir)

    # No delete_cache: Gradio's sweep dies under load (skin_demo.uploads says how); uploads are this app's own.
    demo = gr.Blocks(title=TITLE, analytics_enabled=False)
    uploads = _UPLOADS[demo] = Uploads(get_upload_folder(), lifetime_s=UPLOAD_LIFETIME_S,
                                       forget=demo.upload_file_set.discard)  # fmt: skip
    with demo:
        gr.Markdown(f"# {TITLE}", elem_id="title")
        gr.HTML(f"<details><summary>⚠️ {DISCLAIMER_SHORT}</summary><p>{html.escape(DISCLAIMER)}</p></details>",
                elem_id="disclaimer")  # fmt: skip
        if models.notices:
            gr.Markdown("\n\n".join(f"**Model notice:** {page.markdown_text(n)}" for n in models.notices.values()),
                        elem_id="model-notice")  # fmt: skip
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(
                    label="Close-up photo of one skin lesion",
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    image_mode=None,
                    height=300,
                    elem_id="image-input",
                    placeholder="Drop a photo here, or tap to choose or take one",
                    webcam_options=gr.WebcamOptions(
                        mirror=False, constraints={"video": {"facingMode": "environment"}}
                    ),  # the rear camera on phones
                    buttons=["fullscreen"],
                )
                with gr.Row(elem_id="analyse-row"):
                    analyse_btn = gr.Button("Analyse", variant="primary", elem_id="analyse")
                    clear_btn = gr.Button("Clear", elem_id="clear")
                gr.HTML(f'<a href="{page.ON_DEVICE_PATH}">Analyse on this device: your photo is not uploaded</a>',
                        elem_id="on-device-link")  # fmt: skip
            with gr.Column(scale=2, min_width=300, elem_id="result"):
                view = _ResultView.build(models)
                example_copies: list[str] = []  # Gradio's kept copy of each example image, as the input shows it
                if examples:  # beside the photo on a desktop (no blank half before the first photo), below on phones
                    gr.Markdown(page.examples_intro(examples))
                    gallery = gr.Gallery(
                        value=[(str(e.path), e.caption) for e in examples],
                        label="Examples",
                        columns=4,
                        fit_columns=False,
                        height="auto",
                        object_fit="cover",
                        allow_preview=False,
                        interactive=False,
                        buttons=[],  # no download or share buttons over the examples
                        elem_id="examples",
                    )
                    example_copies = [item["image"]["path"] for item in gallery.value]
        example_by_copy = {path: index for index, path in enumerate(example_copies)}
        with gr.Accordion("What the lesion types mean", open=False):
            gr.Markdown(page.classes_markdown(models["lesion_type"].config))
        with gr.Accordion("About the models", open=False):
            gr.Markdown(page.models_markdown(models), elem_id="models")
            view.status.render()
        with gr.Accordion("Privacy and API", open=False):
            gr.HTML(page.privacy_api_html(), js_on_load=PAGE_URL_JS, elem_id="privacy-api")

        result, show, say = view.components, view.show, view.say

        def analyse_upload(payload: dict | None, request: gr.Request) -> dict[Any, Any]:
            path = (payload or {}).get("path")
            if path is None:
                return say("Upload, photograph or paste a photo first.")
            if path in example_by_copy:  # Analyse pressed again on a tapped example
                return analyse_example(example_by_copy[path])
            if not uploads.claim(path, request.session_hash):
                return say(f"**Cannot analyse this photo:** {PAGE_GONE}.")
            try:
                return show(*_predict(predictor, path))
            except ImageError as exc:  # the preview goes too: a refused file is often not an image at all
                return {image: None, **say(f"**Cannot analyse this file:** {html.escape(str(exc))}.")}

        def analyse_example(index: int) -> dict[Any, Any]:
            if not 0 <= index < len(examples):
                return say(f"**Cannot analyse this example:** {NO_EXAMPLE}.")
            try:
                return show(*_predict(predictor, examples[index].path))
            except ImageError as exc:
                return say(f"**Cannot analyse this example:** {html.escape(str(exc))}.")

        def predict(image: FileData, request: gr.Request) -> PredictionJSON:
            """Analyse one close-up photo of a skin lesion. Research demo, not a diagnosis.

            Send the image file itself (gradio_client's handle_file); URLs, data URLs and server paths are refused.
            Returns each model's probabilities, the image domain (dermoscopy, ordinary photo or not a lesion), the
            malignancy call for that domain, the lesion check and where the models looked; the README's API section
            describes every field.
            """
            path = (image or {}).get("path")  # Gradio hands the file object over as it came (no preprocessing)
            if not uploads.take(path, request.session_hash):
                raise gr.Error(guard.REFUSED_FILE, title="Cannot analyse this request", print_exception=False)
            try:
                prediction, _ = _predict(predictor, path)
            except ImageError as exc:
                raise gr.Error(str(exc), title="Cannot analyse this file", print_exception=False) from None
            finally:
                uploads.discard(path)  # an API upload is analysed once, then deleted
            return _result_json(prediction, models)

        def end_session(request: gr.Request) -> None:
            uploads.end_session(request.session_hash)  # the page was closed: its photos go

        # The page's events stay out of the API (api_visibility="private"). They take gr.Image's validated file
        # object as it is (preprocess=False): imaging.load_image, not gr.Image's own Pillow pass, is the one
        # decoding gate (size, memory and time limits, our error messages).
        page_event = dict(inputs=[image], outputs=[image, *result], preprocess=False, api_visibility="private")
        image.upload(analyse_upload, **page_event).then(None, js=SCROLL_TO_RESULT)
        analyse_btn.click(analyse_upload, **page_event).then(None, js=SCROLL_TO_RESULT)
        image.clear(lambda: say(""), None, result, api_visibility="private", queue=False)
        clear_btn.click(lambda: {image: None, **say("")}, None, [image, *result], api_visibility="private",
                        queue=False)  # fmt: skip
        view.show_anyway.click(view.reveal, None, [view.numbers, view.show_anyway], api_visibility="private",
                               queue=False)  # fmt: skip
        if examples:
            def select_example(evt: gr.SelectData) -> dict[Any, Any]:
                if not 0 <= evt.index < len(examples):  # the request guard lets whole numbers through
                    return analyse_example(evt.index)
                return {image: example_copies[evt.index], **analyse_example(evt.index)}

            gallery.select(select_example, None, [image, *result], api_visibility="private").then(
                None, js=SCROLL_TO_RESULT
            )
        # The API endpoint, typed from predict's signature and documented by its docstring (view_api shows both).
        # gr.api reads the return type with inspect.signature, which leaves this module's (postponed) annotations
        # as strings: evaluated here, so the answer's fields are documented too.
        predict.__annotations__ = typing.get_type_hints(predict)
        gr.api(predict, api_name="predict")

        demo.unload(end_session)

    # api_open=False: every analysis goes through the queue (and its concurrency limit), as on a Space.
    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=QUEUE_MAX_SIZE, api_open=False)
    return demo


def uploads_of(demo: gr.Blocks) -> Uploads:
    """The uploads of an app that build_app made."""
    return _UPLOADS[demo]


def launch(demo: gr.Blocks, models: Models, **overrides: Any):
    """Serve `demo` with this app's defaults (any of which `overrides` may replace), and the on-device page for
    `models` at /on-device/; returns what gr.Blocks.launch returns. Blocks until the server stops unless
    prevent_thread_lock=True."""
    uploads = uploads_of(demo)
    options: dict[str, Any] = dict(
        max_file_size=MAX_FILE_BYTES,  # the same limit imaging.load_image enforces
        css=page.CSS,
        # The device's own fonts: no font files to download on a slow link, and none of the bundled web font's
        # glitches (its bold capitals came out in a fallback font: "Analyse" and the verdict began mid-font).
        theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS),
        ssr_mode=False,  # no Node server: faster start on a small CPU, one process
        show_error=False,  # only our own gr.Error messages reach users, never internals
        pwa=False,
        enable_monitoring=False,  # /monitoring would print a URL with its key into the log
        run_history=False,  # Gradio would keep each visitor's inputs and results in their browser
        footer_links=["gradio", "settings"],  # the page's own "Privacy and API" section documents the API
        state_session_capacity=SESSION_CAPACITY,
        app_kwargs={
            "middleware": [Middleware(guard.RequestGuard, upload_limit=MAX_FILE_BYTES + MULTIPART_OVERHEAD,
                                      json_limit=JSON_BODY_LIMIT, upload_folder=uploads.folder,
                                      events=guard.gradio_events(demo.fns, API_PREFIX),
                                      upload_route=f"{API_PREFIX}/upload", adopt_uploads=uploads.adopt)],  # fmt: skip
            "lifespan": uploads.lifespan(sweep_every_s=LEFTOVER_SWEEP_S),
        },
    )
    if not os.environ.get("GRADIO_SERVER_NAME") and os.environ.get("SPACE_ID"):
        options["server_name"] = "0.0.0.0"  # a Space must listen on all interfaces
    options.update(overrides)
    prevent_thread_lock = options.pop("prevent_thread_lock", False)
    result = demo.launch(prevent_thread_lock=True, **options)
    mount_on_device(demo.app, models)  # routes may join a running server; they go before Gradio's
    if not prevent_thread_lock:
        demo.block_thread()
    return result


def _predict(predictor: Predictor, path: str | Path) -> tuple[Prediction, Image.Image]:
    """predictor.predict_with_image, with unexpected failures logged without their message (it may quote a file
    name)."""
    try:
        return predictor.predict_with_image(path)
    except ImageError:
        raise
    except Exception as exc:
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("prediction failed with %s at\n%s", type(exc).__name__, frames)
        raise gr.Error("Something went wrong while analysing this image. Please try another photo.",
                       print_exception=False) from None  # fmt: skip


def _result_json(prediction: Prediction, models: Models) -> dict[str, Any]:
    result = prediction.to_json()
    result["models"] = {task: pack.describe() for task, pack in models.items()}
    result["notices"] = dict(models.notices)
    result["disclaimer"] = DISCLAIMER
    return result


@dataclasses.dataclass(frozen=True)
class _ResultView:
    """The result column's components, and what they show for a prediction or a message."""

    models: Models
    message: gr.Markdown
    headline: gr.HTML
    numbers: gr.Column  # caveat, donuts, text version, all numbers: hidden while the lesion check fails
    caveat: gr.HTML  # the image domain's plain warning, above the donuts (ordinary photos)
    malignancy_chart: gr.HTML
    lesion_type_chart: gr.HTML
    per_class: gr.Markdown
    result_json: gr.JSON
    show_anyway: gr.Button
    status: gr.Markdown  # the time taken: a developer figure, rendered under "About the models"

    @classmethod
    def build(cls, models: Models) -> _ResultView:
        """Create the components in page order (inside the caller's layout context)."""
        message = gr.Markdown("", visible=False, elem_id="message")
        headline = gr.HTML("", elem_id="headline")
        with gr.Column(visible=False, elem_id="numbers") as numbers:
            caveat = gr.HTML("", elem_id="caveat")
            with gr.Row(elem_id="charts-row"):
                malignancy_chart = gr.HTML("", elem_id="malignancy-chart", elem_classes=["donut"])
                lesion_type_chart = gr.HTML("", elem_id="lesion-type-chart", elem_classes=["donut"])
            with gr.Accordion("All numbers", open=False, elem_id="all-numbers"):
                per_class = gr.Markdown("", elem_id="per-class")
                result_json = gr.JSON(label="As the API returns them", elem_id="result-json")
        show_anyway = gr.Button("Show the numbers anyway", size="sm", visible=False, elem_id="show-anyway")
        status = gr.Markdown("", elem_id="status", render=False)
        return cls(models, message, headline, numbers, caveat, malignancy_chart, lesion_type_chart, per_class,
                   result_json, show_anyway, status)  # fmt: skip

    @property
    def components(self) -> list[Any]:
        return [getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "models"]

    def say(self, text: str) -> dict[Any, Any]:
        """Only a message (or nothing): no numbers."""
        return {self.message: gr.Markdown(text, visible=bool(text)), self.headline: "",
                self.numbers: gr.Column(visible=False), self.caveat: "",
                self.malignancy_chart: "", self.lesion_type_chart: "", self.per_class: "",
                self.result_json: None, self.show_anyway: gr.Button(visible=False), self.status: ""}  # fmt: skip

    def reveal(self) -> dict[Any, Any]:
        """"Show the numbers anyway" after a failed lesion check."""
        return {self.numbers: gr.Column(visible=True), self.show_anyway: gr.Button(visible=False)}

    def show(self, prediction: Prediction, photo: Image.Image) -> dict[Any, Any]:
        """One card: the photo (with "where the model looked"), the image domain, the verdict and what the threshold
        means; the domain's caveat above the donuts, whose centres carry the one number each; every number behind a
        disclosure, the charts' text version in their alt text. When the lesion check fails, its message replaces
        the result and the numbers stay one tap away."""
        rendered = charts.render(prediction)
        timings = dict(prediction.timings_ms, charts=rendered.ms)
        timings["total"] = prediction.timings_ms["total"] + rendered.ms
        prediction = dataclasses.replace(prediction, timings_ms=timings)
        flag, check = prediction.malignancy_flag, prediction.lesion_check
        passed = check is None or check.passed
        mal_alt = ", ".join(f"{s.label} {percentage(s.probability)}" for s in charts.malignancy_slices(prediction))
        type_alt = ", ".join(f"{s.label} {percentage(s.probability)}" for s in charts.lesion_type_slices(prediction))
        words = flag_words(flag.flagged, flag.domain, self.models["malignancy"].config)
        return {
            self.message: gr.Markdown("" if passed else f"**{html.escape(check.message)}**", visible=not passed),
            self.headline: page.headline_html(prediction, words, photo) if passed else "",
            self.numbers: gr.Column(visible=passed),
            self.caveat: gr.HTML(f"<p>{html.escape(words.caveat)}</p>" if words.caveat else "",
                                 visible=bool(words.caveat)),
            self.malignancy_chart: page.svg_figure(rendered.malignancy_svg, f"Malignancy chart: {mal_alt}"),
            self.lesion_type_chart: page.svg_figure(rendered.lesion_type_svg, f"Lesion-type chart: {type_alt}"),
            self.per_class: page.per_class_markdown(prediction),
            self.result_json: _result_json(prediction, self.models),
            self.show_anyway: gr.Button(visible=not passed),
            self.status: f"Last photo analysed in {timings['total']:.0f} ms on this server.",
        }
