"""What the Gradio page shows and how it looks (its CSS), as HTML and Markdown: the headline, the text summary and the per-class table of a
result, and the explanations (examples, lesion types, models, privacy and API). No gradio here: `ui` puts these
into its components. Everything from a package (labels, metrics keys) is escaped before it is shown.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from skin_demo.config import PackageConfig
from skin_demo.examples import HAM10000_CITATION, Example
from skin_demo.modelpack import Models
from skin_demo.predictor import Prediction
from skin_demo.taxonomy import DESCRIPTIONS, SOURCE_NAMES, display_name
from skin_demo.texts import FlagWords

ON_DEVICE_PATH = "/on-device/"
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
#caveat p {border-left: 6px solid #F28E2B; background: #FFF4E5; color: #3d2a00; padding: 6px 12px; margin: 0;
  border-radius: 6px;}
#message {border-left: 6px solid #4E79A7; background: #EEF3F9; padding: 8px 12px; border-radius: 6px;}
#charts-row {flex-wrap: wrap;}
#charts-row > * {min-width: 240px; flex: 1 1 240px;}  /* side by side on wide screens, stacked on phones */
.donut img {width: 100%; max-width: 400px; height: auto; display: block; margin: 0 auto;}
.donut figure {margin: 0;}
#analyse-row button {min-height: 48px;}  /* comfortable touch targets */
#examples .caption-label {white-space: normal; overflow: visible; text-overflow: clip;}
@media (max-width: 640px) {
  .gradio-container {padding-left: 6px !important; padding-right: 6px !important;}
  #examples .grid-container {grid-template-columns: repeat(2, minmax(0, 1fr)) !important;}
}
"""
_MARKDOWN_PUNCTUATION = re.compile(r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]""")


def headline_html(prediction: Prediction, words: FlagWords) -> str:
    flag = prediction.malignancy_flag
    domain = domain_name(prediction)
    score_name = words.score_name[0].upper() + words.score_name[1:]
    return (
        (f'<p class="domain">{html.escape(domain)}</p>' if domain else "")
        + f'<h2 class="{"flagged" if flag.flagged else "not-flagged"}">{html.escape(words.headline)}</h2>'
        f"<p>{html.escape(score_name)} gives {prediction.malignancy_probability:.1%}; it raises an alert from "
        f"{flag.threshold:.1%}. Not a diagnosis.</p>"
    )


def domain_name(prediction: Prediction) -> str:
    """The image domain the lesion check found, as shown ("Ordinary photo"); empty without a lesion check."""
    return "" if prediction.image_domain is None else display_name(prediction.image_domain.label)


def svg_figure(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    alt = html.escape(alt, quote=True)
    return f'<figure><img src="data:image/svg+xml;base64,{data}" alt="{alt}"/></figure>'


def summary_html(prediction: Prediction, words: FlagWords) -> str:
    """The one text version of the numbers (for screen readers and copying)."""
    top = "; ".join(f"{html.escape(r.name)} {r.probability:.0%}" for r in prediction.lesion_type_top)
    domain = domain_name(prediction)
    return (
        f"<p><strong>{html.escape(words.headline)}</strong>{f' ({html.escape(domain)})' if domain else ''}: "
        f"malignant {prediction.malignancy_probability:.1%} (alert from {prediction.malignancy_flag.threshold:.1%}). "
        f"Most similar lesion types: {top}. Research demo, not a diagnosis.</p>"
    )


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
