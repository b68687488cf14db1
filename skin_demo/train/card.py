"""The Hugging Face model card (a package's README.md), rendered from its config and evaluation report.

Everything in the card comes from the package: labels, preprocessing and provenance from `PackageConfig`, the
numbers from the `EvalReport` of the held-out split. Regenerate it whenever either changes (`evaluate` and
`publish` do); never edit a package's README.md by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from skin_demo.config import PackageConfig
from skin_demo.taxonomy import DESCRIPTIONS, display_name
from skin_demo.train.metrics import EvalReport
from skin_demo.train.report import (
    CONFUSION_PNG,
    F1_PNG,
    ROC_PNG,
    confusion_table,
    fmt,
    headline_table,
    per_class_table,
    weak_class_sentence,
)

CARD_FILE = "README.md"
LICENSE = "cc-by-nc-4.0"
TAGS = ["image-classification", "dermatology", "onnx", "skin-lesion", "dermoscopy", "medical-imaging", "ham10000"]
HAM_DATASET = "HAM10000"
ISIC_DATASET = "ISIC-Archive"

NOT_A_DIAGNOSIS = (
    "**This model does not diagnose skin cancer.** It is a research and teaching demo. Its output is a "
    "statistical guess from one picture, it is often wrong, and it was never tested in a clinic. Do not use it to "
    "decide whether to see a doctor, or to put off seeing one. If a spot on your skin is new, changing, bleeding, "
    "itching or looks different from your other moles, show it to a doctor or dermatologist, whatever this model says."
)

HAM_BIBTEX = """@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images of common
             pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}"""

ISIC_BIBTEX = """@misc{isic_archive,
  title        = {{ISIC} Archive},
  author       = {{International Skin Imaging Collaboration}},
  howpublished = {\\url{https://www.isic-archive.com}}
}"""


def render_model_card(config: PackageConfig, report: EvalReport | None, *, repo_id: str | None = None) -> str:
    """The model card for a package: YAML metadata (incl. `model-index`) followed by the Markdown body.

    `report` is the evaluation on the held-out split (None: the card says the package is unevaluated, and uses
    whatever headline numbers the config's `metrics` hold). `repo_id` only fills in the download example.
    """
    extra_isic = _uses_isic(config)
    name = repo_id.split("/")[-1] if repo_id else f"skin-demo-{config.task}"
    metadata = _card_data(config, report, name, extra_isic)
    body = [
        f"# {name}: {_task_title(config)} (ONNX)",
        "",
        f"> {NOT_A_DIAGNOSIS}",
        "",
        *_summary(config),
        *_intended_use(config),
        *_data_section(config, extra_isic),
        *_preprocessing_section(config),
        *_evaluation_section(config, report),
        *_limitations(config, report),
        *_usage_section(config, repo_id),
        *_training_section(config),
        *_citation(extra_isic),
        "## License",
        "",
        "CC BY-NC 4.0, following the HAM10000 data it was trained on: non-commercial use only, with attribution.",
        "",
    ]
    return "---\n" + metadata.to_yaml() + "\n---\n\n" + "\n".join(body)


def write_model_card(package_dir: Path, config: PackageConfig, report: EvalReport | None, **kwargs: Any) -> Path:
    """Render the card and write it to `package_dir`/README.md; returns the path."""
    path = Path(package_dir) / CARD_FILE
    path.write_text(render_model_card(config, report, **kwargs))
    return path


def _card_data(config: PackageConfig, report: EvalReport | None, name: str, extra_isic: bool) -> ModelCardData:
    results = _eval_results(config, report)
    tags = list(TAGS)
    if config.architecture:
        tags.append(config.architecture)
    tags.append(config.task.replace("_", "-"))
    return ModelCardData(
        license=LICENSE,
        library_name="onnx",
        pipeline_tag="image-classification",
        tags=tags,
        datasets=[HAM_DATASET] + ([ISIC_DATASET] if extra_isic else []),
        metrics=["balanced_accuracy", "accuracy", "f1", "roc_auc"]
        + (["recall", "specificity"] if config.task == "malignancy" or report and report.binary else []),
        model_name=name if results else None,
        eval_results=results or None,
    )


def _eval_results(config: PackageConfig, report: EvalReport | None) -> list[EvalResult]:
    """model-index entries: one per headline metric, all on the same dataset split."""
    if report is not None:
        numbers = report.headline()
        split = report.split or "held-out split"
    else:
        numbers = dict(config.metrics)
        split = numbers.get("split")
    if not split:
        return []
    subset = split.rsplit(":", 1)[-1] if ":" in split else "test"
    metric_names = [
        ("balanced_accuracy", "balanced_accuracy", "Balanced accuracy", None),
        ("accuracy", "accuracy", "Accuracy", None),
        ("macro_f1", "f1", "Macro F1", "macro"),
        ("roc_auc", "roc_auc", "ROC AUC" if config.task == "malignancy" else "Macro ROC AUC (one-vs-rest)", None),
        ("sensitivity", "recall", "Sensitivity (malignant recall) at the decision threshold", None),
        ("specificity", "specificity", "Specificity at the decision threshold", None),
    ]
    results = []
    for key, metric_type, metric_name, metric_config in metric_names:
        value = numbers.get(key)
        if value is None:
            continue
        results.append(
            EvalResult(
                task_type="image-classification",
                task_name="Image classification",
                dataset_type=HAM_DATASET,
                dataset_name=f"HAM10000 (200x150), lesion-grouped split {split}",
                dataset_split=subset,
                metric_type=metric_type,
                metric_value=round(float(value), 4),
                metric_name=metric_name,
                metric_config=metric_config,
            )
        )
    return results


def _task_title(config: PackageConfig) -> str:
    if config.task == "malignancy":
        return "benign vs malignant skin lesions from dermoscopy"
    if config.task == "lesion_type":
        return f"{len(config.labels)}-class skin lesion type from dermoscopy"
    return f"{config.task} from dermoscopy"


def _summary(config: PackageConfig) -> list[str]:
    size = config.preprocess.size
    lines = [
        "## Model",
        "",
        f"- Task: `{config.task}`, {len(config.labels)} labels; the output `logits` is in the order below.",
        f"- Architecture: `{config.architecture or 'unspecified'}`, exported to ONNX (input `image`, float32 "
        f"`[N, 3, {size[0]}, {size[1]}]`; output `logits`, float32 `[N, {len(config.labels)}]`).",
        f"- Probabilities: softmax(logits / temperature), temperature {config.temperature:g} (from `config.json`; "
        "training fits it on the validation split so that the probabilities are calibrated).",
    ]
    if config.decision_threshold is not None:
        lines.append(
            f"- Decision threshold: an image is called malignant when p(malignant) >= {config.decision_threshold:.4f} "
            "(chosen on the validation split for high sensitivity, so many benign lesions are flagged too)."
        )
    if config.provenance.get("quantization"):
        q = config.provenance["quantization"]
        lines.append(f"- Quantized: {q.get('description', q) if isinstance(q, dict) else q}.")
    lines += ["", "| Output | Label | Meaning | Counts as malignant |", "|---:|---|---|---|"]
    for i, label in enumerate(config.labels):
        meaning = _MALIGNANCY_MEANINGS.get(label) or DESCRIPTIONS.get(label) or "(no description)"
        flag = "yes" if label in config.malignant_labels else "no"
        lines.append(f"| {i} | `{label}` | {display_name(label)}: {meaning} | {flag} |")
    return lines + [""]


_MALIGNANCY_MEANINGS = {
    "benign": "HAM10000 diagnoses nv, bkl, df and vasc.",
    "malignant": "HAM10000 diagnoses mel, bcc and akiec (melanoma, basal cell carcinoma, actinic keratosis / "
    "intraepithelial carcinoma), by the usual HAM10000 convention.",
}


def _intended_use(config: PackageConfig) -> list[str]:
    return [
        "## Intended use",
        "",
        "- Teaching and research: showing what a small image classifier learns from public dermoscopy data, and how "
        "it fails. It powers the skin-demo Gradio Space.",
        "- Input: one **dermoscopy** image of a single skin lesion, centred, like the HAM10000 images.",
        "",
        "Out of scope: diagnosis, triage, screening or any decision about a person's care; ordinary phone or camera "
        "photos (not dermoscopy); lesions on mucosa, nails or scalp; children; any use that makes money (licence).",
        "",
    ]


def _data_section(config: PackageConfig, extra_isic: bool) -> list[str]:
    split_file = config.provenance.get("split") or (config.metrics.get("split") or "").split(":")[0] or "the split CSV"
    lines = [
        "## Training data",
        "",
        "- **HAM10000** (Tschandl et al., 2018): 10,015 dermoscopy images of 7,470 lesions from two sites (Austria, "
        "Australia), 7 diagnoses (nv 6,705, mel 1,113, bkl 1,099, bcc 514, akiec 327, vasc 142, df 115). About half "
        "are confirmed by histopathology; the rest (mostly nevi) by follow-up, expert consensus or confocal "
        "microscopy.",
        "- This model was trained on a **downscaled 200x150 copy** of HAM10000 (the originals are 600x450), so it "
        "has never seen fine detail.",
        f"- Split: train / validation / test **grouped by `lesion_id`** and stratified by diagnosis (`{split_file}`), "
        "so images of the same lesion never appear on both sides. The validation split chose the epoch and the "
        f"temperature{' and the decision threshold' if config.decision_threshold is not None else ''}; the test "
        "split was used only for the numbers below.",
    ]
    if extra_isic:
        lines.append(
            "- Extra malignant examples: the ISIC \"Skin Cancer: Malignant vs. Benign\" set (224x224). Most of it "
            "duplicates HAM10000, so only its non-HAM10000 images were added, and only to the training split; these "
            "are ISIC 2016/2017-era images (per-image CC licences, mostly CC BY-NC)."
        )
    if config.provenance.get("data"):
        lines.append(f"- Recorded data: {config.provenance['data']}.")
    return lines + [""]


def _preprocessing_section(config: PackageConfig) -> list[str]:
    pre = config.preprocess
    height, width = pre.size
    short = int(height / pre.crop_pct)
    return [
        "## Preprocessing",
        "",
        "Exactly what `config.json` (`preprocess`) says, and the same JSON is embedded in `model.onnx` (metadata key "
        "`skin_demo.config`):",
        "",
        "1. Decode to 8-bit RGB, applying the EXIF orientation.",
        f"2. Resize so the shorter side is {short} px ({pre.interpolation} interpolation), keeping the aspect ratio.",
        f"3. Centre-crop {height}x{width} px.",
        f"4. Scale to [0, 1], subtract mean {list(pre.mean)}, divide by std {list(pre.std)}; channels first "
        f"(`[3, {height}, {width}]`).",
        "",
    ]


def _evaluation_section(config: PackageConfig, report: EvalReport | None) -> list[str]:
    lines = ["## Evaluation", ""]
    if report is None:
        lines.append("No evaluation report was recorded with this package (run `python -m skin_demo.train evaluate`).")
        if config.metrics:
            numbers = json.dumps(config.metrics, indent=2)
            lines += ["", "Numbers recorded in config.json:", "", "```json", numbers, "```"]
        return lines + [""]
    runtime = report.extra.get("runtime", "ONNX Runtime")
    lines += [
        f"On **{report.split or 'the held-out split'}** ({report.n} images), computed from this exported ONNX file "
        f"with {runtime} and the preprocessing above (not from the training framework).",
        "",
        headline_table(report),
        "",
        per_class_table(report),
        "",
        weak_class_sentence(report),
        "",
    ]
    if report.binary is not None and report.binary.sensitivity is not None:
        b = report.binary
        missed = 1 - b.sensitivity
        lines += [
            f"At the threshold it misses about {missed:.0%} of malignant lesions in the test split, and calls about "
            f"{1 - (b.specificity or 0):.0%} of benign ones malignant.",
            "",
        ]
    lines += [
        "Confusion matrix (rows: true label, columns: predicted):",
        "",
        confusion_table(report),
        "",
        f"Plots: [`eval/{CONFUSION_PNG}`](eval/{CONFUSION_PNG}), [`eval/{F1_PNG}`](eval/{F1_PNG}), "
        f"[`eval/{ROC_PNG}`](eval/{ROC_PNG}); all numbers in [`eval/metrics.json`](eval/metrics.json).",
        "",
    ]
    return lines


def _limitations(config: PackageConfig, report: EvalReport | None) -> list[str]:
    lines = [
        "## Limitations and biases",
        "",
        "- **Skin types:** HAM10000 comes almost entirely from fair-skinned patients in Austria and Australia. "
        "Darker skin types are barely represented, and performance on them is unknown and likely worse.",
        "- **Dermoscopy only:** trained and tested on dermatoscope images. Ordinary phone or camera photos look "
        "different (lighting, scale, glare, no polarisation) and the output on them means little.",
        "- **Low resolution:** the source images are 200x150 px, upscaled to the model input; fine structures that "
        "dermatologists rely on are lost.",
        "- **Class imbalance:** about two thirds of the images are nevi; rare classes (df, vasc, akiec) have few test "
        "images, so their numbers are uncertain (see the recall intervals).",
        "- **Label noise:** diagnoses not confirmed by histopathology (mostly nevi) are noisier.",
        "- **One image, no context:** a dermatologist also uses the patient's history, the lesion's evolution and "
        "the other lesions on the body; this model sees one picture.",
        "- **Single test set:** the test split comes from the same two sites as the training data; there is no "
        "external validation.",
    ]
    if report is not None and report.weak_classes():
        lines.append(f"- **Weak classes on the test split:** {', '.join(report.weak_classes())}.")
    return lines + [""]


def _usage_section(config: PackageConfig, repo_id: str | None) -> list[str]:
    if repo_id:
        fetch = (
            "from huggingface_hub import snapshot_download\n\n"
            f'folder = Path(snapshot_download("{repo_id}", revision="<commit sha>"))  # pin a revision'
        )
    else:
        fetch = 'folder = Path("path/to/package")  # the folder with model.onnx and config.json'
    threshold_line = ""
    if config.decision_threshold is not None:
        threshold_line = (
            '\nmalignant = probs[config["labels"].index("malignant")] >= config["decision_threshold"]'
            "\nprint(\"flagged as malignant:\", malignant)"
        )
    code = f"""import json, math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

{fetch}
config = json.loads((folder / "config.json").read_text())
pre = config["preprocess"]
height, width = pre["size"]

image = ImageOps.exif_transpose(Image.open("lesion.jpg")).convert("RGB")
short = math.floor(height / pre["crop_pct"])  # shorter side before the centre crop
w, h = image.size
new_size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
image = image.resize(new_size, getattr(Image.Resampling, pre["interpolation"].upper()))
left, top = round((image.width - width) / 2), round((image.height - height) / 2)
image = image.crop((left, top, left + width, top + height))
x = (np.asarray(image, np.float32) / 255 - np.float32(pre["mean"])) / np.float32(pre["std"])
x = x.transpose(2, 0, 1)[None]  # [1, 3, H, W]

session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
logits = session.run(["logits"], {{"image": x}})[0][0] / config["temperature"]
probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
for label, p in sorted(zip(config["labels"], probs), key=lambda t: -t[1]):
    print(f"{{label}}: {{p:.3f}}"){threshold_line}"""
    return [
        "## How to use",
        "",
        "With ONNX Runtime, numpy and Pillow only; every number comes from `config.json`:",
        "",
        "```python",
        code,
        "```",
        "",
        "In the skin-demo code base the same steps are `skin_demo.imaging.load_image`, `skin_demo.imaging.preprocess` "
        "and `skin_demo.modelpack.ModelPack.load(folder).probabilities(batch)`.",
        "",
    ]


def _training_section(config: PackageConfig) -> list[str]:
    p = config.provenance
    rows = [
        ("Architecture", config.architecture),
        ("Trained", p.get("trained_at")),
        ("Code commit", p.get("code_commit")),
        ("Hardware", p.get("hardware")),
        ("Epochs (best)", f"{p['epochs']} ({p.get('best_epoch')})" if "epochs" in p else None),
        ("Training time", f"{p['train_minutes']} min" if "train_minutes" in p else None),
        ("Model selection",
         f"{p['selection_metric']} = {p.get('selection_value')}" if "selection_metric" in p else None),
        ("Class imbalance handling", p.get("imbalance")),
        ("Temperature", f"{config.temperature:g}"),
        ("Decision threshold", fmt(config.decision_threshold, 4) if config.decision_threshold is not None else None),
        ("ONNX parity (max abs logit diff vs the training framework)", p.get("onnx_parity_max_abs_logit_diff")),
    ]
    lines = ["## Training details", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows if value not in (None, "")]
    note = "The full configuration, including the training arguments, is in `config.json` (`provenance`)."
    return lines + ["", note, ""]


def _citation(extra_isic: bool) -> list[str]:
    lines = ["## Citation", "", "If you use this model, cite the data it was trained on:", "", "```bibtex", HAM_BIBTEX]
    if extra_isic:
        lines += ["", ISIC_BIBTEX]
    return lines + ["```", ""]


def _uses_isic(config: PackageConfig) -> bool:
    data = str(config.provenance.get("data", "")).lower()
    return "isic" in data or "malignant-vs-benign" in data or "malignant_vs_benign" in data
