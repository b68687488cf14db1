"""The lesion-check package's model card: `templates/lesion_check_card.md` filled from the package config.

Rendered with `huggingface_hub.ModelCard.from_template`, like the other packages' cards (`skin_demo.train.card`);
every number comes from config.json (`metrics`, `provenance`), so the card can be re-rendered from a package.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from skin_demo.config import PackageConfig
from skin_demo.train import weight_storage
from skin_demo.train.card import LICENSE, NOT_A_DIAGNOSIS
from skin_demo.train.lesion_check.table import format_table
from skin_demo.taxonomy import SOURCE_NAMES

TEMPLATE = Path(__file__).parent.parent / "templates" / "lesion_check_card.md"


def render_card(config: PackageConfig) -> str:
    """The package's model card: what the check is for, how it was fitted, and the per-category table."""
    m, p = config.metrics, config.provenance
    data = ModelCardData(
        license=LICENSE, library_name="onnx", pipeline_tag="image-classification",
        tags=["image-classification", "onnx", "dermoscopy", "clinical-photos", "out-of-distribution-detection",
              "skin-demo",
              config.architecture, "lesion-check"],
        datasets=["HAM10000", "ISIC-Archive"],
    )
    height, width = config.preprocess.size
    card = ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        not_a_diagnosis=NOT_A_DIAGNOSIS,
        config=config,
        height=height,
        width=width,
        method=p.get("method", config.architecture),
        threshold=f"{config.decision_threshold:.4f}",
        threshold_rule=(p.get("threshold_rule") or {}).get("text", ""),
        table=format_table(config),
        val_pass=[{"source": SOURCE_NAMES.get(g, g), "rate": f"{r:.1%}"}
                  for g, r in m["validation"]["pass_rate"].items()],
        val_rejection=f"{m['validation']['rejection_rate']:.1%}",
        val_domain=(f"{m['validation']['domain_accuracy']:.1%}" if "domain_accuracy" in m["validation"] else None),
        provenance=p,
        feature_extraction=_minutes(p.get("feature_extraction_minutes")),
        fit=p["fit_images"],
        weights=weight_storage.describe(p),
    )
    return str(card)


def _minutes(value: float | None) -> str:
    return "not recorded" if value is None else f"{value} min"
