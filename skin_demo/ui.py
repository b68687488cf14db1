"""The Gradio page and the `/predict` API endpoint. The only module that imports gradio; no model logic here.

Build with `build_app(settings)` (defaults: `Settings.from_env()`), then `.launch()`; the returned Blocks fills in
this app's launch defaults (upload size limit, queue, no SSR) unless the caller overrides them.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import logging
import os
import threading
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

# Privacy: no usage analytics, no Hub telemetry. Set before gradio (and through it huggingface_hub) is imported,
# as both read these once, at import.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from skin_demo import charts  # noqa: E402
from skin_demo.examples import HAM10000_CITATION, Example, read_manifest  # noqa: E402
from skin_demo.imaging import MAX_FILE_BYTES, ImageError  # noqa: E402
from skin_demo.predictor import Prediction, Predictor  # noqa: E402
from skin_demo.settings import LoadedModels, Settings, load_models  # noqa: E402
from skin_demo.taxonomy import DESCRIPTIONS, LESION_CODES, MALIGNANT_CODES, display_name  # noqa: E402

log = logging.getLogger(__name__)

TITLE = "Skin lesion classifier (research demo)"
DISCLAIMER = (
    "Research demo, not a diagnosis. These models were trained on one public dermoscopy dataset (HAM10000) "
    "and make mistakes; they have not been clinically validated. Do not use them to decide whether to see a "
    "doctor: if a spot on your skin worries you, changes, bleeds or itches, see a doctor or dermatologist."
)
QUEUE_MAX_SIZE = 64  # requests waiting beyond this get an immediate "queue full" instead of a long wait
CACHE_SWEEP = (300, 900)  # Gradio deletes its temp files older than 15 min every 5 min (a backstop to _discard_upload)
UNREADABLE = "could not read image: the file does not exist or cannot be opened"

CSS = """
#disclaimer {border-left: 6px solid #F28E2B; background: #FFF4E5; color: #3d2a00; padding: 10px 14px;
  border-radius: 6px; font-size: 1rem;}
#disclaimer p {margin: 0;}
#model-notice {border-left: 6px solid #E15759; background: #FDECEC; color: #3d0000; padding: 8px 12px;
  border-radius: 6px;}
#charts-row {flex-wrap: wrap;}
#charts-row > * {min-width: 260px; flex: 1 1 260px;}  /* side by side on wide screens, stacked on phones */
.donut img {width: 100%; max-width: 440px; height: auto; display: block; margin: 0 auto;}
.donut figure {margin: 0;}
#analyse-row button {min-height: 48px;}  /* comfortable touch targets */
@media (max-width: 640px) {
  .gradio-container {padding-left: 6px !important; padding-right: 6px !important;}
  #image-input {min-height: 260px;}
}
"""


class DemoBlocks(gr.Blocks):
    """gr.Blocks with this app's launch defaults (callers may override any of them)."""

    def launch(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        kwargs.setdefault("max_file_size", MAX_FILE_BYTES)  # the same limit imaging.load_image enforces
        kwargs.setdefault("css", CSS)
        kwargs.setdefault("ssr_mode", False)  # no Node server: faster start on a small CPU, one process
        kwargs.setdefault("show_error", False)  # only our own gr.Error messages reach users, never internals
        kwargs.setdefault("pwa", False)
        if "server_name" not in kwargs and not os.environ.get("GRADIO_SERVER_NAME") and os.environ.get("SPACE_ID"):
            kwargs["server_name"] = "0.0.0.0"  # a Space must listen on all interfaces
        return super().launch(*args, **kwargs)


def build_app(settings: Settings | None = None, *, models: LoadedModels | None = None) -> DemoBlocks:
    """Load the models (bundled or Hub, as `settings` say) and build the page and the /predict endpoint.

    settings: defaults to Settings.from_env() (SKIN_DEMO_* environment variables).
    models: already loaded packages (skips loading; for tests and benchmarks).
    Raises modelpack.PackageError when a needed bundled package is missing or invalid (a startup error).
    """
    settings = settings or Settings.from_env()
    models = models or load_models(settings)
    predictor = Predictor(models.malignancy, models.lesion_type)
    examples = read_manifest(settings.examples_dir)
    service = _Service(predictor, models)

    with DemoBlocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_SWEEP) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(f"**⚠️ {DISCLAIMER}**", elem_id="disclaimer")
        if models.notices:
            gr.Markdown("\n\n".join(f"**Model notice:** {html.escape(n)}" for n in models.notices.values()),
                        elem_id="model-notice")  # fmt: skip
        gr.Markdown(
            "Upload, photograph or paste a close-up (ideally dermoscopic) photo of **one** skin lesion. Two models "
            "estimate how likely it is malignant and which of seven common lesion types it resembles."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                image = gr.Image(
                    label="Photo of the skin lesion",
                    sources=["upload", "webcam", "clipboard"],
                    type="filepath",
                    image_mode=None,
                    height=340,
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
                status = gr.Markdown("", elem_id="status")
            with gr.Column(scale=2, min_width=300):
                with gr.Row(elem_id="charts-row"):
                    malignancy_chart = gr.HTML("", elem_id="malignancy-chart", elem_classes=["donut"])
                    lesion_type_chart = gr.HTML("", elem_id="lesion-type-chart", elem_classes=["donut"])
                with gr.Row():
                    malignancy_label = gr.Label(label="Malignancy model", num_top_classes=2, elem_id="malignancy-label")
                    lesion_type_label = gr.Label(
                        label="Lesion-type model", num_top_classes=len(LESION_CODES), elem_id="lesion-type-label"
                    )
                summary = gr.Textbox(
                    label="Result as text", lines=4, interactive=False, buttons=["copy"], elem_id="summary"
                )
                with gr.Accordion("All numbers (JSON, as the API returns them)", open=False):
                    result_json = gr.JSON(label="Result", elem_id="result-json")
        gallery = None
        if examples:
            intro = "## Examples\nTap one to analyse it. Each caption gives its true label, source and licence."
            if any("HAM10000" in e.source for e in examples):
                intro += f"\n\n{HAM10000_CITATION}."
            gr.Markdown(intro)
            gallery = gr.Gallery(
                value=[(str(e.path), e.caption) for e in examples],
                label="Examples",
                columns=4,
                fit_columns=False,
                height="auto",
                object_fit="cover",
                allow_preview=False,
                interactive=False,
                elem_id="examples",
            )
        with gr.Accordion("What these classes mean", open=False):
            gr.Markdown(_classes_markdown())
        with gr.Accordion("Models in use", open=True):
            gr.Markdown(_models_markdown(models), elem_id="models")
        with gr.Accordion("Privacy and API", open=False):
            gr.Markdown(_privacy_api_markdown())

        # The API endpoint: plain JSON, no charts. A hidden button owns the event so the page's own events
        # stay out of the API (api_visibility="private").
        api_button = gr.Button(visible=False)
        api_output = gr.JSON(visible=False)
        api_button.click(
            service.api_predict,
            inputs=[image],
            outputs=[api_output],
            preprocess=False,  # see _image_source: our load_image, not gr.Image, reads the upload
            api_name="predict",
            api_description="Analyse one image file; returns probabilities per label of both models as JSON.",
        )

        state = gr.State(None)  # the last result's numbers (never the image), for re-pressing Analyse
        outputs = [status, malignancy_chart, lesion_type_chart, malignancy_label, lesion_type_label, summary,
                   result_json, state]  # fmt: skip
        image.upload(service.ui_analyse, [image, state], outputs, preprocess=False, api_visibility="private")
        analyse_btn.click(service.ui_analyse, [image, state], outputs, preprocess=False, api_visibility="private")
        image.clear(service.ui_clear, None, outputs, api_visibility="private", queue=False)
        clear_btn.click(service.ui_clear_all, None, [image, *outputs], api_visibility="private", queue=False)
        if gallery is not None:
            gallery.select(service.ui_example(examples), None, [image, *outputs], api_visibility="private")

    demo.queue(default_concurrency_limit=settings.concurrency_limit, max_size=QUEUE_MAX_SIZE)
    _count_uploads(demo)
    demo.skin_demo_models = models  # type: ignore[attr-defined]  # for tests and the benchmark
    return demo


class _Service:
    """The functions the page and the API call: thin wrappers around Predictor and charts."""

    def __init__(self, predictor: Predictor, models: LoadedModels) -> None:
        self.predictor = predictor
        self.models = models

    # -- API --------------------------------------------------------------------------------------------
    def api_predict(self, payload: dict[str, Any] | None, request: gr.Request = None) -> dict[str, Any]:
        """Analyse one image; returns {"malignancy": {...}, "lesion_type": {...}, ...} (see README, API)."""
        try:
            prediction = self._predict(_image_source(payload), request)
        except ImageError as exc:
            raise gr.Error(str(exc), title="Cannot analyse this file", print_exception=False) from None
        return self._result_json(prediction)

    # -- page ---------------------------------------------------------------------------------------------
    def ui_analyse(self, payload: dict[str, Any] | None, state: dict | None, request: gr.Request = None) -> list[Any]:
        try:
            image = _image_source(payload)
        except ImageError as exc:
            gr.Warning(f"Cannot analyse this file: {exc}")
            return self._message(f"**Cannot analyse this file:** {html.escape(str(exc))}")
        if image is None:
            return self._message("Upload, photograph or paste a photo first.")
        if isinstance(image, str) and state and state.get("path") == image and not Path(image).exists():
            # The upload was analysed and then deleted (uploads are not kept); show the same result again.
            return state["outputs"] + [state]
        try:
            prediction = self._predict(image, request)
        except ImageError as exc:
            message = str(exc)
            if message == UNREADABLE:
                message = "this upload is no longer on the server (uploads are deleted after analysis); upload it again"
            gr.Warning(f"Cannot analyse this file: {message}")
            return self._message(f"**Cannot analyse this file:** {html.escape(message)}")
        outputs = self._outputs(prediction)
        new_state = {"path": image if isinstance(image, str) else None, "outputs": outputs}
        return outputs + [new_state]

    def ui_clear(self) -> list[Any]:
        return self._message("")

    def ui_clear_all(self) -> list[Any]:
        return [None, *self._message("")]

    def ui_example(self, examples: list[Example]):
        def select(evt: gr.SelectData) -> list[Any]:
            example = examples[evt.index]
            try:
                prediction = self._predict(str(example.path), None)
            except ImageError as exc:
                return [None, *self._message(f"**Cannot analyse this example:** {html.escape(str(exc))}")]
            outputs = self._outputs(prediction)
            return [str(example.path), *outputs, {"path": None, "outputs": outputs}]

        return select

    # -- helpers --------------------------------------------------------------------------------------------
    def _predict(self, image: str | bytes | None, request: gr.Request | None) -> Prediction:
        if image is None:
            raise ImageError("no image was received; upload a JPEG or PNG photo")
        try:
            return self.predictor.predict(image)
        except ImageError:
            raise
        except Exception as exc:
            # Log where our code failed, but not the exception's message: it may quote the upload's file name.
            frames = "".join(traceback.format_tb(exc.__traceback__))
            log.error("prediction failed with %s at\n%s", type(exc).__name__, frames)
            raise gr.Error(
                "Something went wrong while analysing this image. Please try another photo.", print_exception=False
            ) from None
        finally:
            if isinstance(image, str) and request is not None:
                _discard_upload(image, request)

    def _outputs(self, prediction: Prediction) -> list[Any]:
        rendered = charts.render(prediction)
        timings = dict(prediction.timings_ms, charts=rendered.ms)
        timings["total"] = prediction.timings_ms["total"] + rendered.ms
        prediction = dataclasses.replace(prediction, timings_ms=timings)
        mal_alt = ", ".join(f"{s.label} {s.probability:.1%}" for s in charts.malignancy_slices(prediction))
        type_alt = ", ".join(f"{s.label} {s.probability:.1%}" for s in charts.lesion_type_slices(prediction))
        status = (
            f"Analysed in {timings['total']:.0f} ms (decode {timings['decode']:.0f}, preprocess "
            f"{timings['preprocess']:.0f}, models {timings['inference']:.0f}, charts {timings['charts']:.0f})."
        )
        return [
            status,
            _svg_figure(rendered.malignancy_svg, f"Malignancy chart: {mal_alt}"),
            _svg_figure(rendered.lesion_type_svg, f"Lesion-type chart: {type_alt}"),
            {"Malignant": prediction.malignancy_probability, "Benign": 1.0 - prediction.malignancy_probability},
            {display_name(label): p for label, p in prediction.lesion_type.items()},
            _summary_text(prediction),
            self._result_json(prediction),
        ]

    def _result_json(self, prediction: Prediction) -> dict[str, Any]:
        result = prediction.to_json()
        result["models"] = {pack.config.task: pack.describe() for pack in self.models}
        if self.models.notices:
            result["notices"] = dict(self.models.notices)
        result["disclaimer"] = DISCLAIMER
        return result

    def _message(self, text: str) -> list[Any]:
        return [text, "", "", None, None, "", None, None]


class _UploadSet(set):
    """Gradio's set of uploaded paths, which also tracks, per path, the uploads still waiting to be analysed.

    Gradio stores an upload at <temp>/<sha256 of the bytes>/<file name>, so visitors who send the same file share
    one path, and deleting it after the first analysis broke the others ("could not read image"; 146 of 320 valid
    requests with 16 concurrent clients). Now the file goes when its last upload has been analysed. Gradio moves a
    file into place a moment BEFORE it registers it here, so `release` also checks that the file on disk is the
    one registered last (its inode), not a newer identical upload that is about to be registered.
    """

    def __init__(self, paths=()) -> None:
        super().__init__(paths)
        self.lock = threading.Lock()
        self.pending: Counter[str] = Counter(self)
        self.inode: dict[str, int] = {}

    def __iter__(self):
        # A snapshot: Gradio's cache sweep iterates this set in a worker thread while uploads and analyses change it.
        with self.lock:
            return iter(list(set.__iter__(self)))

    def update(self, *groups) -> None:  # what Gradio's /upload route calls for each upload
        with self.lock:
            for group in groups:
                for path in group:
                    if path not in self:
                        self.pending[path] = 0  # drop a stale count of a file Gradio's own sweep deleted
                    self.pending[path] += 1
                    self.inode[path] = _inode(path)
                    super().add(path)

    def release(self, path: str) -> None:
        """One upload of `path` has been analysed: delete the file if no other upload of it is pending."""
        with self.lock:
            if path not in self:
                return
            self.pending[path] -= 1
            if self.pending[path] > 0:
                return
            del self.pending[path]
            self.discard(path)
            registered = self.inode.pop(path, None)
            # Take the file away atomically, then look at what was taken: the file registered last, or a newer
            # identical upload that Gradio has moved into place but not registered yet. The folder stays:
            # removing it races with Gradio creating it for an identical upload (HTTP 500 on /upload).
            taken = f"{path}.{threading.get_ident()}.deleting"
            try:
                os.rename(path, taken)
            except OSError:
                return  # already gone
            if registered is not None and _inode(taken) != registered:
                try:
                    os.link(taken, path)  # the newer upload's request needs it (unless yet another copy is there)
                except OSError:
                    pass
            Path(taken).unlink(missing_ok=True)


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _count_uploads(demo: gr.Blocks) -> None:
    uploads = _UploadSet(demo.upload_file_set)
    demo.temp_file_sets = [uploads if s is demo.upload_file_set else s for s in demo.temp_file_sets]
    demo.upload_file_set = uploads


def _discard_upload(path: str, request: gr.Request) -> None:
    """Delete an uploaded file once analysed: uploads are not kept.

    Only files that arrived through Gradio's upload route are touched, never example images; a file that several
    uploads share is deleted after the last of them (see _UploadSet).
    """
    blocks = request.app.get_blocks() if getattr(request, "app", None) is not None else None
    uploaded = getattr(blocks, "upload_file_set", None)
    if isinstance(uploaded, _UploadSet):
        uploaded.release(path)


def _image_source(payload: dict[str, Any] | None) -> str | bytes | None:
    """The uploaded file's path (or a data URL's bytes) from gr.Image's raw payload.

    The events run with preprocess=False because gr.Image.preprocess opens every upload with Pillow itself,
    converts it and may re-encode it, failing with its own error on a corrupt file. `imaging.load_image` must be
    the one place that decides what is a usable image (and applies the EXIF rotation once), so it gets the
    original file. Gradio has already checked that the path is one of its own uploads.
    """
    if payload is None:
        return None
    if isinstance(payload, str):
        return payload
    url = payload.get("url") or ""
    if url.startswith("data:"):
        return _decode_data_url(url)
    path = payload.get("path")
    if not path:
        raise ImageError("no image was received; upload a JPEG or PNG photo")
    return str(path)


def _decode_data_url(url: str) -> bytes:
    header, _, data = url.partition(",")
    if ";base64" not in header:
        raise ImageError("could not read image: unsupported data URL; upload a JPEG or PNG photo")
    if len(data) > MAX_FILE_BYTES * 4 // 3 + 4:
        raise ImageError(f"the image is larger than {MAX_FILE_BYTES / 1e6:.0f} MB; upload a smaller JPEG or PNG")
    try:
        return base64.b64decode(data, validate=False)
    except ValueError:
        raise ImageError("could not read image: the data URL is not valid base64") from None


def _svg_figure(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    alt = html.escape(alt, quote=True)
    return f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{alt}" title="{alt}"/></figure>'


def _summary_text(prediction: Prediction) -> str:
    lines = [
        f"Malignant: {prediction.malignancy_probability:.1%}   Benign: {1 - prediction.malignancy_probability:.1%}"
        " (malignancy model)",
        "Most similar lesion types (lesion-type model):",
    ]
    lines += [f"  {r.name}: {r.probability:.1%}" for r in prediction.lesion_type_top]
    lines.append("Research demo, not a diagnosis.")
    return "\n".join(lines)


def _classes_markdown() -> str:
    rows = ["| Class | Malignant? | What it is |", "|---|---|---|"]
    for code in LESION_CODES:
        rows.append(f"| {display_name(code)} | {'yes' if code in MALIGNANT_CODES else 'no'} | {DESCRIPTIONS[code]} |")
    rows.append(
        "\nThe malignancy model answers one question (malignant: akiec, bcc, mel; benign: the rest), the "
        "lesion-type model tells the seven classes apart. They are trained separately and may disagree."
    )
    return "\n".join(rows)


def _models_markdown(models: LoadedModels) -> str:
    parts = []
    for pack in models:
        info = pack.describe()
        metrics = info["metrics"]
        shown = ", ".join(
            f"{name.replace('_', ' ')} {value if isinstance(value, int) else f'{value:.3f}'}"
            for name, value in metrics.items()
            if isinstance(value, (int, float))
        )
        split = metrics.get("split")
        parts.append(
            f"- **{info['task'].replace('_', '-')}**: `{info['source']}` "
            f"({info['architecture'] or 'unknown architecture'})"
            + (f"; test metrics: {shown}" if shown else "; no test metrics reported")
            + (f" on `{split}`" if split else "")
        )
    return "\n".join(parts)


def _privacy_api_markdown() -> str:
    return (
        "**Privacy.** Images are analysed inside this server process and never sent anywhere else. An uploaded "
        "file is deleted as soon as it has been analysed; nothing about images is logged; usage analytics are "
        "off.\n\n"
        "**API.** The `predict` endpoint takes one image file and returns JSON:\n\n"
        "```python\nfrom gradio_client import Client, handle_file\n\n"
        'client = Client("URL of this app")\n'
        'result = client.predict(handle_file("lesion.jpg"), api_name="/predict")\n'
        'print(result["malignancy"]["malignant"], result["lesion_type"])\n```'
    )
