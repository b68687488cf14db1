"""What the Gradio page shows and how it looks (its CSS), as HTML and Markdown: the headline, the text summary and the per-class table of a
result, and the explanations (examples, lesion types, models, privacy and API). No gradio here: `ui` puts these
into its components. Everything from a package (labels, metrics keys) is escaped before it is shown.
"""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

from PIL import Image

from skin_demo.attention import AttentionMap, overlay_rgba
from skin_demo.config import PackageConfig
from skin_demo.examples import HAM10000_CITATION, Example
from skin_demo.imaging import source_size
from skin_demo.modelpack import Models
from skin_demo.predictor import Prediction
from skin_demo.taxonomy import DESCRIPTIONS, SOURCE_NAMES, display_name
from skin_demo.texts import MAP_CAPTION, MAP_SWITCHES, FlagWords

ON_DEVICE_PATH = "/on-device/"
THUMBNAIL_PX = 320  # longest side of the photo sent back to the page (drawn at about half that)
CSS = """
.gradio-container {max-width: 1180px !important;}
#title h1 {font-size: 1.35rem; margin: 0;}
#disclaimer {border-left: 6px solid #F28E2B; background: #FFF4E5; color: #3d2a00; padding: 6px 12px;
  border-radius: 6px;}
#disclaimer summary {cursor: pointer; font-weight: 600;}
#disclaimer p {margin: 6px 0 0 0;}
#model-notice {border-left: 6px solid #E15759; background: #FDECEC; color: #3d0000; padding: 8px 12px;
  border-radius: 6px;}
#headline h2 {margin: 0; font-size: 1.25rem;}
#headline .flagged {color: #8a3b00;}
#headline .domain {margin: 0; font-size: 0.85rem; text-transform: uppercase; letter-spacing: 0.04em; color: #555;}
#headline .card {display: flex; gap: 12px; align-items: flex-start;}
#headline .verdict {flex: 1 1 auto; min-width: 0;}
#headline .threshold {margin: 4px 0 0;}
#headline .photo {margin: 0; flex: 0 0 auto; width: 160px;}
#headline .frame {position: relative; line-height: 0;}
#headline .frame img {width: 100%; height: auto; display: block;}
#headline .frame .map {position: absolute; display: none; image-rendering: auto;}
#headline .frame .map.cropped {outline: 2px dashed #ffffff; box-shadow: 0 0 0 1px #333333;}
#headline .switch {position: absolute; opacity: 0; pointer-events: none;}
#map-malignancy:checked ~ .frame .map-malignancy, #map-lesion_type:checked ~ .frame .map-lesion_type {display: block;}
#headline figcaption {font-size: 0.8rem; line-height: 1.3; margin-top: 4px;}
#headline .switches label {display: inline-block; padding: 2px 6px; margin: 2px 2px 0 0; border: 1px solid #bbbbbb;
  border-radius: 12px; cursor: pointer;}
#map-off:checked ~ figcaption label[for=map-off], #map-malignancy:checked ~ figcaption label[for=map-malignancy],
#map-lesion_type:checked ~ figcaption label[for=map-lesion_type] {background: #4E79A7; color: #ffffff;
  border-color: #4E79A7;}
#headline .map-caption {display: none; margin-top: 4px; color: #444444;}
#map-malignancy:checked ~ figcaption .map-caption, #map-lesion_type:checked ~ figcaption .map-caption {display: block;}
#caveat p {border-left: 6px solid #F28E2B; background: #FFF4E5; color: #3d2a00; padding: 6px 12px; margin: 0;
  border-radius: 6px;}
#message {border-left: 6px solid #4E79A7; background: #EEF3F9; padding: 8px 12px; border-radius: 6px;}
#charts-row {flex-wrap: nowrap; gap: 8px;}
#charts-row > * {min-width: 0 !important; flex: 1 1 0;}  /* side by side, on phones too: one glance */
.donut img {width: 100%; max-width: 400px; height: auto; display: block; margin: 0 auto;}
.donut figure {margin: 0;}
#analyse-row button {min-height: 48px;}  /* comfortable touch targets */
#examples .caption-label {white-space: normal; overflow: visible; text-overflow: clip;}
#examples .grid-wrap {max-height: none !important; height: auto !important; overflow-y: visible !important;}
/* Gradio draws height="auto" galleries as a fixed-height scroll box: the examples lie on the page instead */
@media (max-width: 640px) {
  .gradio-container {padding-left: 6px !important; padding-right: 6px !important;}
  #headline .photo {width: 112px;}
  #headline h2 {font-size: 1.1rem;}
  #examples .grid-container {grid-template-columns: repeat(2, minmax(0, 1fr)) !important;}
}
"""
_MARKDOWN_PUNCTUATION = re.compile(r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]""")


def headline_html(prediction: Prediction, words: FlagWords, photo: Image.Image | None = None) -> str:
    """The result card: the photo (with "where the model looked"), the image domain, the verdict and what the
    threshold means. The malignancy percentage is not here: the donut's centre shows it, once."""
    flag = prediction.malignancy_flag
    domain = domain_name(prediction)
    verdict = (
        (f'<p class="domain">{html.escape(domain)}</p>' if domain else "")
        + f'<h2 class="{"flagged" if flag.flagged else "not-flagged"}">{html.escape(words.headline)}</h2>'
        f'<p class="threshold">{html.escape(words.threshold_line)} Not a diagnosis.</p>'
    )
    figure = photo_html(photo, prediction.attention) if photo is not None else ""
    return f'<div class="card">{figure}<div class="verdict">{verdict}</div></div>'


def photo_html(photo: Image.Image, attention: dict[str, AttentionMap]) -> str:
    """The analysed photo as a thumbnail and, where the packages give maps, a switch that lays "where the model
    looked" over it: only over the square the model saw, outlined when that is not the whole photo. CSS only (a
    radio button per map), so switching needs no request."""
    thumbnail = f'<img src="{_data_url(_thumbnail(photo), "JPEG")}" alt="The analysed photo">'
    if not attention:
        return f'<figure class="photo"><div class="frame">{thumbnail}</div></figure>'
    width, height = source_size(photo)
    switches = [("off", "off"), *((shown, MAP_SWITCHES.get(shown, shown)) for shown in attention)]
    radios = "".join(f'<input type="radio" class="switch" name="map" id="map-{key}"{" checked" * (key == "off")}>'
                     for key, _ in switches)  # fmt: skip
    layers = []
    for shown, attention_map in attention.items():
        left, top, right, bottom = attention_map.box
        place = (f"left:{100 * left / width:.2f}%;top:{100 * top / height:.2f}%;"
                 f"width:{100 * (right - left) / width:.2f}%;height:{100 * (bottom - top) / height:.2f}%")  # fmt: skip
        cropped = " cropped" if right - left < width - 1 or bottom - top < height - 1 else ""
        overlay = _data_url(Image.fromarray(overlay_rgba(attention_map.grid), "RGBA"), "PNG")
        layers.append(f'<img class="map map-{shown}{cropped}" src="{overlay}" style="{place}" alt="">')
    labels = "".join(f'<label for="map-{key}">{html.escape(name)}</label>' for key, name in switches)
    return (f'<figure class="photo">{radios}<div class="frame">{thumbnail}{"".join(layers)}</div>'
            f'<figcaption><span class="switches">Where the model looked: {labels}</span>'
            f'<span class="map-caption">{html.escape(MAP_CAPTION)}</span></figcaption></figure>')


def _thumbnail(photo: Image.Image) -> Image.Image:
    thumbnail = photo.copy()
    thumbnail.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.BILINEAR)
    return thumbnail


def _data_url(image: Image.Image, kind: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
    mime = {"JPEG": "image/jpeg", "PNG": "image/png"}[kind]
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def domain_name(prediction: Prediction) -> str:
    """The image domain the lesion check found, as shown ("Ordinary photo"); empty without a lesion check."""
    return "" if prediction.image_domain is None else display_name(prediction.image_domain.label)


def svg_figure(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    alt = html.escape(alt, quote=True)
    return f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{alt}"/></figure>'


def markdown_text(text: str) -> str:
    """`text` shown as it is in Markdown: every ASCII punctuation mark backslash-escaped (CommonMark allows that for
    all of them), so a package's label or metrics key cannot become a link, an image, a table cell or HTML."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\g<0>", text)


def per_class_markdown(prediction: Prediction) -> str:
    rows = ["| Model | Class | Probability |", "|---|---|---|"]
    rows += [f"| malignancy | {markdown_text(display_name(k))} | {p:.1%} |"
             for k, p in prediction.malignancy.items()]  # fmt: skip
    rows += [f"| lesion type | {markdown_text(display_name(k))} | {p:.1%} |"
             for k, p in prediction.lesion_type.items()]  # fmt: skip
    if prediction.lesion_check is not None:
        check = prediction.lesion_check
        rows.append(f"| lesion check | skin-lesion close-up | {check.score:.1%} (passes from {check.threshold:.1%}) |")
    if prediction.image_domain is not None:
        domains = prediction.image_domain.probabilities
        rows += [f"| image domain | {markdown_text(display_name(k))} | {p:.1%} |" for k, p in domains.items()]
    return "\n".join(rows)


def examples_intro(examples: list[Example]) -> str:
    sources = "".join(f"<li>{html.escape(e.label)}: {html.escape(e.attribution)}</li>" for e in examples)
    intro = (
        "## Examples\nTap one to analyse it. Each caption gives the lesion's true diagnosis.\n\n"
        f"<details><summary>Image sources and licences</summary><ul>{sources}</ul>"
    )
    if any("HAM10000" in e.source for e in examples):
        intro += f"<p>{HAM10000_CITATION}.</p>"
    return intro + "</details>"


def classes_markdown(lesion_type: PackageConfig) -> str:
    """The loaded lesion-type package's labels: name, benign or malignant (as the package counts them), meaning."""
    rows = ["| Lesion type | Counted as | What it is |", "|---|---|---|"]
    for code in lesion_type.labels:
        kind = "malignant" if code in lesion_type.malignant_labels else "benign"
        # A label this project does not know comes from the package alone: shown as text, never as Markdown.
        name = display_name(code) if code in DESCRIPTIONS else markdown_text(code)
        rows.append(f"| {name} | {kind} | {DESCRIPTIONS.get(code, '')} |")
    rows.append(
        "\nTwo separate models look at each photo: one estimates how likely the lesion is malignant, the other "
        f"which of these {len(lesion_type.labels)} types it most resembles. They can disagree."
    )
    return "\n".join(rows)




def models_markdown(models: Models) -> str:
    purpose = {
        "malignancy": "How likely the lesion is malignant",
        "lesion_type": f"Which of {len(models['lesion_type'].config.labels)} lesion types it resembles",
        "lesion_check": "Whether the photo is a skin-lesion close-up at all, and a dermoscopy image or an ordinary "
                        "photo",
    }
    parts = [
        "The two classifiers were trained on dermoscopy photos and tested on photos they never saw, from the clinic "
        "they were trained on (HAM10000) and from another one (ISIC 2017). Balanced accuracy is the average share of "
        "each class a model gets right (0.5 is chance for two classes). Ordinary photos are much harder for them; "
        "the result of such a photo says how they did on them in tests."
    ]
    for pack in models.values():
        info = pack.describe()
        parts.append(
            f"- **{purpose.get(info['task'], info['task'])}** ({tested(info['metrics'])}). "
            f"Source: {html.escape(info['source'])}."
        )
    return "\n".join(parts)


def tested(metrics: dict[str, Any]) -> str:
    """The package's balanced accuracy per test source (evaluate's layout), or overall where it has one number."""
    per_source = {SOURCE_NAMES.get(k, k): v["balanced_accuracy"] for k, v in metrics.items()
                  if isinstance(v, dict) and isinstance(v.get("balanced_accuracy"), (int, float))}
    if per_source:
        return "balanced accuracy " + ", ".join(f"{v:.2f} on {markdown_text(name)} test photos"
                                                for name, v in per_source.items())  # fmt: skip
    score = metrics.get("balanced_accuracy")
    if isinstance(score, (int, float)):
        return f"balanced accuracy {score:.3f} on its test set"
    return "no test result"


def privacy_api_html() -> str:
    return (
        "<p><strong>Privacy.</strong> Your photo is analysed inside this server and never sent anywhere else or "
        "logged. A photo uploaded on this page is deleted when you close the page, at the latest a minute later (so "
        "your browser can show it meanwhile); one "
        "sent to the API is deleted as soon as it has been analysed. Usage analytics are off. "
        f'<a href="{ON_DEVICE_PATH}">On this device</a> your photo is not uploaded at all.</p>'
        "<p><strong>API.</strong> The <code>predict</code> endpoint takes one image file and returns JSON "
        "(probabilities per class, the image domain, the alert flag, the lesion check):</p>"
        "<pre><code>from gradio_client import Client, handle_file\n\n"
        'client = Client("<span data-page-url>URL of this page</span>")\n'
        'result = client.predict(handle_file("lesion.jpg"), api_name="/predict")\n'
        'print(result["image_domain"], result["malignancy_flag"], result["lesion_type"])</code></pre>'
    )
