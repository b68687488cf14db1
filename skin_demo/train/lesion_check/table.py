"""The recorded per-source and per-category table (Markdown), shared by `--show` and the model card."""

from __future__ import annotations

from skin_demo.config import PackageConfig
from skin_demo.train.lesion_check.data import ALL_CLINICAL, NUISANCE_SUFFIX, POSITIVE_TEST_SOURCES
from skin_demo.train.lesion_check.measure import RASH_CATEGORY, TARGETS

_GROUP_NAMES = {
    "ham10000": "HAM10000 test split",
    "isic2017": "ISIC 2017 test split",
    "clinical_all": "**clinical photos, all test (DermNet NZ + SD-198)**",
    "clinical_dermnet": "clinical photos, DermNet NZ test split",
    "clinical_sd198": "clinical photos, SD-198 test split",
    f"clinical_dermnet{NUISANCE_SUFFIX}": "clinical photos (DermNet NZ), each through a random nuisance",
    f"clinical_sd198{NUISANCE_SUFFIX}": "clinical photos (SD-198), each through a random nuisance",
    "mvb_non_ham": "malignant-vs-benign, non-HAM10000, not an ISIC 2017 training copy (never fitted on)",
    "mvb_non_ham_seen": "malignant-vs-benign, non-HAM10000, copy of an ISIC 2017 training image",
    f"ham10000{NUISANCE_SUFFIX}": "HAM10000 test split, each through a random nuisance (colour, frame, blur, JPEG...)",
    f"isic2017{NUISANCE_SUFFIX}": "ISIC 2017 test split, each through a random nuisance",
    f"not_lesion{NUISANCE_SUFFIX}": "all not_lesion test photos, each through a random nuisance",
}


def format_table(config: PackageConfig) -> str:
    """The per-source and per-category table (Markdown), with the targets and whether each was met, and the
    leave-one-source-out table when the package has one."""
    m = config.metrics
    lines = [
        f"Threshold: {_pass_rule(config)} >= {config.decision_threshold:.4f} passes; the domain is the likelier of "
        f"dermoscopy and clinical. {_cost_sentence(m['cost_ms'])}",
        "",
        "| Test images | n | Passed the check | Rate | 95 % CI | Given their own domain | Target |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for group, r in m["per_source"].items():
        lines.append(_row(f"lesion: {_GROUP_NAMES.get(group, group)}", r, _target(group, r)))
    for group, r in m["per_category"].items():
        target = ""
        if group == RASH_CATEGORY and "rejection_rash" in m.get("targets", {}):
            goal = m["targets"]["rejection_rash"]
            target = f">= {goal:.0%} reject: {'met' if r['rejection_rate'] >= goal else 'MISSED'}"
        lines.append(_row(f"not a lesion: {group}", r, target))
    pooled = m["rejection_rate"]
    verdict = "met" if pooled >= TARGETS["rejection"] else "MISSED"
    n_neg = sum(r["n"] for r in m["per_category"].values())
    n_passed = sum(r["passed"] for r in m["per_category"].values())
    lines.append(f"| **not a lesion: all categories** | {n_neg} | {n_passed} "
                 f"| **reject {pooled:.1%}** | | | >= {TARGETS['rejection']:.0%} reject: {verdict} |")
    for group, r in m.get("robustness", {}).items():
        kind = "lesion" if "pass_rate" in r else "not a lesion"
        lines.append(_row(f"{kind}: {_GROUP_NAMES.get(group, group)}", r, "(no target: robustness)"))
    loso = m.get("leave_one_source_out")
    if loso:
        lines += ["", "Leave one source out (fitted again without the source; its test images measured):", "",
                  "| Left-out source | n | Pass rate | Given their own domain | Non-lesions rejected (val) |",
                  "|---|---:|---:|---:|---:|"]
        for group, r in loso.items():
            domain = "-" if r["domain_rate"] is None else f"{r['domain_rate']:.1%}"
            lines.append(f"| {_GROUP_NAMES.get(group, group)} | {r['n']} | {r['pass_rate']:.1%} | {domain} "
                         f"| {r['val_rejection']:.1%} |")
    return "\n".join(lines)


def _pass_rule(config: PackageConfig) -> str:
    return "P(lesion)" if "lesion" in config.labels else "P(dermoscopy) + P(clinical)"


def _row(name: str, r: dict, target: str) -> str:
    rate = f"pass {r['pass_rate']:.1%}" if "pass_rate" in r else f"reject {r['rejection_rate']:.1%}"
    domain = f"{r['domain_rate']:.1%}" if "domain_rate" in r else ""
    return (f"| {name} | {r['n']} | {r['passed']} | {rate} | {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%} | {domain} "
            f"| {target} |")


def _target(group: str, numbers: dict) -> str:
    if group == ALL_CLINICAL:
        passed = numbers["pass_rate"] >= TARGETS["pass_clinical"]
        domain = numbers.get("domain_rate", 0.0) >= TARGETS["domain_clinical"]
        return (f">= {TARGETS['pass_clinical']:.0%} pass: {'met' if passed else 'MISSED'}; "
                f">= {TARGETS['domain_clinical']:.0%} clinical: {'met' if domain else 'MISSED'}")
    if group.startswith("clinical_"):
        return "(per atlas; the target is on all clinical photos)"
    if group in POSITIVE_TEST_SOURCES:
        return f">= {TARGETS['pass']:.0%} pass: {'met' if numbers['pass_rate'] >= TARGETS['pass'] else 'MISSED'}"
    if group.endswith("_seen"):
        return "(no target: a copy of a fitted image)"
    return "(no target: never fitted on)"


def _cost_sentence(cost: dict) -> str:
    return (f"Cost: {cost['model']} ms per image for the model (median; {cost['model_p10']} ms at the 10th "
            f"percentile), ONNX Runtime on {cost['threads']} CPU thread, plus {cost['decode']} ms decoding and "
            f"{cost['preprocess']} ms preprocessing; measured on a shared CPU (load average "
            f"{cost['load_average_1min']}).")
