"""The Hugging Face model card (a package's README.md): `templates/model_card.md` filled from what the package records.

`huggingface_hub.ModelCard.from_template` renders the Jinja template with the YAML metadata (`ModelCardData`,
with one model-index entry per test source) and a data dict built here from the package config (labels,
preprocessing, provenance incl. the training choices) and its per-source `Evaluation`. Nothing in the card is
known only to this file: what the data were, how it was trained and how it scored all come from the package.
Regenerate it whenever either changes (`evaluate` and `publish` do); never edit a package's README.md by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from skin_demo.config import PackageConfig
from skin_demo.taxonomy import DESCRIPTIONS, SOURCE_NAMES, display_name
from skin_demo.train import weight_storage
from skin_demo.train.results import WEAK_CLASS_FLOOR, Evaluation
from skin_demo.train.report import (
    CONFUSION_PNG,
    METRICS_FILE,
    ROC_PNG,
    SCORE_NAMES,
    column_title,
    confusion_table,
    fmt,
    missed_targets,
    per_class_table,
    side_by_side_table,
    weak_class_sentence,
)

CARD_FILE = "README.md"
TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
LICENSE = "cc-by-nc-4.0"
TAGS = ["image-classification", "dermatology", "onnx", "skin-lesion", "dermoscopy", "medical-imaging"]
# The datasets behind each source, by source: the card's `datasets`, and (joined) its model-index dataset type.
DATASET_IDS = {"ham10000": ("HAM10000",), "isic2017": ("ISIC-2017",), "clinical": ("DermNet-NZ", "SD-198")}

NOT_A_DIAGNOSIS = (
    "**This model does not diagnose skin cancer.** It is a research and teaching demo. Its output is a "
    "statistical guess from one picture, it is often wrong, and it was never tested in a clinic. Do not use it to "
    "decide whether to see a doctor, or to put off seeing one. If a spot on your skin is new, changing, bleeding, "
    "itching or looks different from your other moles, show it to a doctor or dermatologist, whatever this model says."
)
# The model-index metrics of a source's headline: headline key -> (metric type, name, config).
_INDEX_METRICS = {
    "balanced_accuracy": ("balanced_accuracy", "Balanced accuracy", None),
    "accuracy": ("accuracy", "Accuracy", None),
    "macro_f1": ("f1", "Macro F1", "macro"),
    "roc_auc": ("roc_auc", "ROC AUC", None),
    "sensitivity": ("recall", "Sensitivity (malignant recall) at the decision threshold", None),
    "specificity": ("specificity", "Specificity at the decision threshold", None),
}
_LABEL_MEANINGS = {"benign": "not akiec, bcc or mel", "malignant": "akiec, bcc or mel (the usual HAM10000 convention)"}
_TRAINING_ARGS = ("image_size", "warm_size", "warm_epochs", "epochs", "batch_size", "lr", "weight_decay",
                  "ema_decay", "imbalance", "balance_power", "precision", "seed")


def render_model_card(config: PackageConfig, evaluation: Evaluation | None, *, repo_id: str | None = None) -> str:
    """The model card for a package: YAML metadata (incl. `model-index`) followed by the Markdown body.

    `evaluation` is the per-source evaluation of the held-out splits (None: the card uses whatever per-source
    headline numbers the config's `metrics` hold, and says so when there are none, e.g. right after training).
    `repo_id` only fills in the name and the download example.
    """
    name = repo_id.split("/")[-1] if repo_id else f"skin-demo-{config.task.replace('_', '-')}"
    headlines = evaluation.headline() if evaluation is not None else _recorded_headlines(config)
    data_parts = _data_parts(config)
    datasets = _datasets(data_parts, headlines)
    clinical = _trained_on_clinical_photos(config)
    card_data = ModelCardData(
        license=LICENSE,
        library_name="onnx",
        pipeline_tag="image-classification",
        tags=TAGS + [t for t in (config.architecture, config.task.replace("_", "-")) if t],
        datasets=datasets,
        metrics=sorted({_INDEX_METRICS[k][0] for h in headlines.values() for k in _INDEX_METRICS if k in h}) or None,
        model_name=name if headlines else None,
        eval_results=_eval_results(headlines) or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        name=name,
        title=_task_title(config, clinical),
        not_a_diagnosis=NOT_A_DIAGNOSIS,
        config=config,
        outputs=[
            {"index": i, "label": label, "name": display_name(label),
             "meaning": _LABEL_MEANINGS.get(label) or DESCRIPTIONS.get(label, ""),
             "malignant": label in config.malignant_labels}
            for i, label in enumerate(config.labels)
        ],
        threshold=None if config.decision_threshold is None else f"{config.decision_threshold:.4f}",
        threshold_per_source={SOURCE_NAMES.get(s, s): t for s, t in
                              config.provenance.get("choice", {}).get("threshold_per_source", {}).items()},
        decision=_decision(config),
        quantization=config.provenance.get("quantization"),
        data_parts=data_parts,
        split=config.provenance.get("split"),
        resize_to=config.preprocess.resize_shorter_side,
        evaluated=bool(headlines),
        table=side_by_side_table(headlines) if headlines else "",
        operating_points=_operating_points(config, headlines),
        weak_floor=f"{WEAK_CLASS_FLOOR:.2f}",
        weak=[{"source": column_title(s, h.get("split")), "classes": h.get("weak_classes") or []}
              for s, h in headlines.items()],
        missed=missed_targets(headlines),
        has_targets=any(h.get("targets") for h in headlines.values()),
        details=_details(evaluation),
        runtime=(evaluation.extra.get("runtime") if evaluation else None) or "ONNX Runtime",
        eval_files=f"[`eval/{METRICS_FILE}`](eval/{METRICS_FILE})",
        choice=_choice(config),
        training=_training_rows(config),
        repo_id=repo_id,
        uses_isic="ISIC-2017" in (datasets or []),
        clinical=clinical,
        several_sources=len(headlines) > 1,
    )
    return str(card)


def write_model_card(package_dir: Path, config: PackageConfig, evaluation: Evaluation | None, **kwargs: Any) -> Path:
    """Render the card and write it to `package_dir`/README.md; returns the path."""
    path = Path(package_dir) / CARD_FILE
    path.write_text(render_model_card(config, evaluation, **kwargs))
    return path


def _recorded_headlines(config: PackageConfig) -> dict[str, dict[str, Any]]:
    """The per-source headline numbers in config.json's `metrics` (as `evaluate` writes them), by source."""
    return {source: h for source, h in config.metrics.items() if isinstance(h, dict) and "split" in h}


def _data_parts(config: PackageConfig) -> list[str]:
    """provenance["data"] as one line per source (training writes "A (...) + B (... + ...)": only a " + " outside
    parentheses separates two sources)."""
    data = config.provenance.get("data")
    if isinstance(data, dict):
        return [f"{k}: {v}" for k, v in data.items()]
    return [part.strip() for part in re.split(r" \+ (?![^(]*\))", str(data or "")) if part.strip()]


def _datasets(data_parts: list[str], headlines: dict[str, dict]) -> list[str] | None:
    text = " ".join(data_parts).lower().replace(" ", "")
    sources = {s for s in headlines if s in DATASET_IDS} | {s for s in DATASET_IDS if s in text}
    return sorted(dataset for s in sources for dataset in DATASET_IDS[s]) or None


def _trained_on_clinical_photos(config: PackageConfig) -> bool:
    """Whether the training data (provenance) had ordinary camera photos besides dermoscopy."""
    return "clinical" in str(config.provenance.get("data", "")).lower()


def _eval_results(headlines: dict[str, dict[str, Any]]) -> list[EvalResult]:
    """model-index entries: each source's headline metrics on its own dataset and split."""
    results = []
    for source, headline in headlines.items():
        split = headline["split"]
        for key, (metric_type, metric_name, metric_config) in _INDEX_METRICS.items():
            if headline.get(key) is None:
                continue
            results.append(
                EvalResult(
                    task_type="image-classification",
                    task_name="Image classification",
                    dataset_type="+".join(DATASET_IDS.get(source, (source or "held-out",))),
                    dataset_name=f"{column_title(source, split)} ({split})",
                    dataset_split=split.split(":", 1)[-1].split(" ")[0] if ":" in split else "test",
                    metric_type=metric_type,
                    metric_value=round(float(headline[key]), 4),
                    metric_name=metric_name,
                    metric_config=metric_config,
                )
            )
    return results


def _operating_points(config: PackageConfig, headlines: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Per source: the threshold and what it gives (sensitivity, specificity), for a malignancy package."""
    if config.decision_threshold is None:
        return []
    return [
        {"source": column_title(s, h.get("split")), "sensitivity": fmt(h.get("sensitivity")),
         "specificity": fmt(h.get("specificity")),
         "missed": "—" if h.get("sensitivity") is None else f"{1 - h['sensitivity']:.0%}",
         "flagged_benign": "—" if h.get("specificity") is None else f"{1 - h['specificity']:.0%}"}
        for s, h in headlines.items() if "sensitivity" in h
    ]


def _details(evaluation: Evaluation | None) -> list[dict[str, str]]:
    if evaluation is None:
        return []
    return [
        {"title": column_title(source, report.split), "split": report.split or "", "n": str(report.n),
         "per_class": per_class_table(report), "weak": weak_class_sentence(report),
         "confusion": confusion_table(report),
         "plots": f"[`eval/{source}_{CONFUSION_PNG}`](eval/{source}_{CONFUSION_PNG}), "
                  f"[`eval/{source}_{ROC_PNG}`](eval/{source}_{ROC_PNG})"}
        for source, report in evaluation.reports.items()
    ]


_DOMAIN_NAMES = {"dermoscopy": "Dermoscopy images", "clinical": "Ordinary (clinical) photos"}


def _decision(config: PackageConfig) -> dict[str, Any] | None:
    """The per-domain malignancy rule recorded by `decide` (provenance["decision"]), ready for the template."""
    decision = config.provenance.get("decision")
    if not isinstance(decision, dict) or not isinstance(decision.get("domains"), dict):
        return None
    per_domain = config.metrics.get("per_domain") if isinstance(config.metrics.get("per_domain"), dict) else {}
    domains = []
    for domain, chosen in decision["domains"].items():
        test = per_domain.get(domain) if isinstance(per_domain.get(domain), dict) else {}
        domains.append({
            "name": _DOMAIN_NAMES.get(domain, domain),
            "score": SCORE_NAMES.get(chosen.get("score"), chosen.get("score")),
            "threshold": fmt(chosen.get("threshold"), 4),
            "per_source": ", ".join(f"{SOURCE_NAMES.get(s, s)} {t}"
                                    for s, t in (chosen.get("threshold_per_source") or {}).items()),
            "val_auc": ", ".join(f"{SCORE_NAMES.get(k, k)} {fmt(v.get('mean'))}"
                                 for k, v in (chosen.get("val_auc") or {}).items() if isinstance(v, dict)),
            "test": ", ".join(f"{k.replace('_', ' ')} {fmt(test[k])}" for k in ("sensitivity", "specificity", "roc_auc")
                              if test.get(k) is not None),
        })
    return {"min_sensitivity": fmt(decision.get("min_sensitivity")), "domains": domains,
            "has_clinical": "clinical" in decision["domains"]}


def _choice(config: PackageConfig) -> dict[str, Any] | None:
    """What training chose for this package and on which validation numbers (provenance["choice"])."""
    choice = config.provenance.get("choice")
    if not isinstance(choice, dict):
        return None
    candidates = []
    for key, label in (("binary_head", "binary malignancy head"),
                       ("lesion_type_sum", "lesion-type head: P(akiec) + P(bcc) + P(mel)")):
        scores = (choice.get("val_auc") or {}).get(key)
        if isinstance(scores, dict):
            per_source = ", ".join(f"{SOURCE_NAMES.get(s, s)} {fmt(v)}" for s, v in scores.items() if s != "selection")
            candidates.append({"name": label, "per_source": per_source, "mean": fmt(scores.get("selection"))})
    flip = choice.get("flip_tta") if isinstance(choice.get("flip_tta"), dict) else None
    if isinstance(choice.get("flip_tta"), bool):  # fit's TaskChoice
        flip = {"used": choice["flip_tta"], "val_without": choice.get("val_without_flip"),
                "val_with": choice.get("val_with_flip")}
    by_tau = choice.get("tuning_by_tau") or {}
    logit = None if not by_tau else {"tau": choice.get("logit_adjustment_tau", 0.0),
                                     "tried": ", ".join(f"{t}: {fmt(v)}" for t, v in by_tau.items())}
    return {
        "source": choice.get("source"),
        "candidates": candidates,
        "best_epoch": choice.get("best_epoch"),
        "weights": {"ema": "EMA (exponential moving average) weights", "raw": "raw weights"}.get(
            choice.get("weights"), choice.get("weights")),
        "flip": None if flip is None else {"used": bool(flip.get("used")), "without": fmt(flip.get("val_without")),
                                           "with": fmt(flip.get("val_with"))},
        "logit": logit,
    }


def _training_rows(config: PackageConfig) -> list[tuple[str, str]]:
    p = config.provenance
    hardware = p.get("hardware")
    if isinstance(hardware, list):
        hardware = "; ".join(map(str, hardware))
    args = p.get("args") if isinstance(p.get("args"), dict) else {}
    shown_args = ", ".join(f"{k}={args[k]}" for k in _TRAINING_ARGS if args.get(k) is not None)
    rows = [
        ("Architecture", config.architecture),
        ("Trained", p.get("trained_at")),
        ("Code commit", p.get("code_commit")),
        ("Hardware", hardware),
        ("Training time", f"{p['train_minutes']} min" if "train_minutes" in p else None),
        ("Epochs", p.get("epochs")),
        ("Model selection", f"{p['selection_metric']} = {p.get('selection_value')}" if "selection_metric" in p else None),
        ("Training arguments", shown_args),
        ("Temperature", f"{config.temperature:g}"),
        ("Decision threshold", fmt(config.decision_threshold, 4) if config.decision_threshold is not None else None),
        ("ONNX parity (max abs logit diff vs the training framework)", p.get("onnx_parity_max_abs_logit_diff")),
        ("Weights in the file", weight_storage.describe(p)),
    ]
    return [(name, str(value)) for name, value in rows if value not in (None, "")]


def _task_title(config: PackageConfig, clinical: bool) -> str:
    images = "dermoscopy and ordinary photos" if clinical else "dermoscopy"
    if config.task == "malignancy":
        return f"benign vs malignant skin lesions from {images}"
    if config.task == "lesion_type":
        return f"{len(config.labels)}-class skin lesion type from {images}"
    return f"{config.task} from {images}"
