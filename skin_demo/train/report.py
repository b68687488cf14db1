"""Write evaluations to a folder: metrics.json, EVAL.md and PNG plots, and the Markdown tables the card shares.

`write_evaluation` writes a package's `eval/`: one metrics.json holding every source's report, an EVAL.md with the
side-by-side table, and a confusion matrix and ROC plot per source. `write_report` does the same for a single
report (the lesion check's). The Markdown tables are shared with the model card (`card.py`), so the two never
disagree. Plots use matplotlib's object API on an Agg canvas: no pyplot global state and no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skin_demo.taxonomy import SOURCE_NAMES, colour, display_name
from skin_demo.train.results import SMALL_SUPPORT, WEAK_CLASS_FLOOR, EvalReport, Evaluation

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "EVAL.md"
CONFUSION_PNG = "confusion_matrix.png"
ROC_PNG = "roc.png"
REPORT_FILES = (METRICS_FILE, MARKDOWN_FILE, CONFUSION_PNG, ROC_PNG)
# A malignancy call's score, by its DECISION_SCORES name, in words.
SCORE_NAMES = {"binary_head": "this package's P(malignant)",
               "lesion_type_sum": "the lesion-type package's P(akiec) + P(bcc) + P(mel)"}
METRIC_NAMES = {
    "balanced_accuracy": "balanced accuracy",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "roc_auc": "ROC AUC",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}


def write_evaluation(evaluation: Evaluation, folder: Path, *, title: str | None = None) -> dict[str, Path]:
    """Write metrics.json, EVAL.md and `<source>_confusion_matrix.png` / `<source>_roc.png` per source into
    `folder` (created; files of the same names are overwritten). Returns {file name: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {METRICS_FILE: folder / METRICS_FILE, MARKDOWN_FILE: folder / MARKDOWN_FILE}
    paths[METRICS_FILE].write_text(evaluation.to_json())
    paths[MARKDOWN_FILE].write_text(render_evaluation_markdown(evaluation, title=title))
    for source, report in evaluation.reports.items():
        name = column_title(source, report.split)
        for suffix, figure in ((CONFUSION_PNG, plot_confusion_matrix(report, name)), (ROC_PNG, plot_roc(report, name))):
            paths[f"{source}_{suffix}"] = folder / f"{source}_{suffix}"
            _save(figure, paths[f"{source}_{suffix}"])
    return paths


def read_evaluation(folder: Path) -> Evaluation | None:
    """The evaluation in `folder`/metrics.json, or None when there is none; ValueError for a file that holds none."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return Evaluation.from_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not a per-source evaluation written by skin_demo.train evaluate: {exc}") from exc


def write_report(report: EvalReport, folder: Path, *, title: str | None = None) -> dict[str, Path]:
    """One report (no sources): metrics.json, EVAL.md, confusion_matrix.png and roc.png into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in REPORT_FILES}
    paths[METRICS_FILE].write_text(report.to_json())
    paths[MARKDOWN_FILE].write_text(render_markdown(report, title=title))
    _save(plot_confusion_matrix(report), paths[CONFUSION_PNG])
    _save(plot_roc(report), paths[ROC_PNG])
    return paths


def render_evaluation_markdown(evaluation: Evaluation, *, title: str | None = None) -> str:
    """EVAL.md: the side-by-side table, then per source its per-class table, weak classes and confusion matrix."""
    lines = [f"# {title or f'Evaluation: {evaluation.task} package'}", ""]
    if evaluation.extra.get("package"):
        lines += [f"Model: `{evaluation.extra['package']}` ({evaluation.extra.get('runtime', 'ONNX Runtime')}), "
                  "through the serving path (imaging.load_image, imaging.preprocess, ModelPack, postprocess).", ""]
    lines += [side_by_side_table(evaluation.headline()), ""]
    for source, report in evaluation.reports.items():
        name = column_title(source, report.split)
        lines += [f"## {name}", "", f"`{report.split}`: {report.n} images.", ""]
        lines += [per_class_table(report), "", weak_class_sentence(report), ""]
        lines += ["Confusion matrix (rows: true label, columns: predicted label):", "", confusion_table(report), ""]
        lines += [f"![{name}: confusion matrix](./{source}_{CONFUSION_PNG})", f"![{name}: ROC](./{source}_{ROC_PNG})", ""]
    return "\n".join(lines)


def render_markdown(report: EvalReport, *, title: str | None = None) -> str:
    """EVAL.md of a single report: the headline numbers, the per-class table, weak classes, the confusion matrix."""
    lines = [f"# {title or f'Evaluation: {report.task}'}", ""]
    lines += [f"Evaluated on **{report.split or 'an unnamed set'}**: {report.n} images.", ""]
    positive = report.binary.positive_label if report.binary else "malignant"
    lines += [side_by_side_table({"": report.headline()}, positive=positive), "", "## Per class", "", per_class_table(report), ""]
    lines += [weak_class_sentence(report), ""]
    lines += ["## Confusion matrix", "", "Rows: true label. Columns: predicted label.", "", confusion_table(report), ""]
    lines += [f"![Confusion matrix](./{CONFUSION_PNG})", f"![ROC](./{ROC_PNG})", ""]
    return "\n".join(lines)


def column_title(source: str, split: str | None) -> str:
    """A source's column heading: its display name and subset, e.g. "HAM10000 test"."""
    name = SOURCE_NAMES.get(source, source)
    subset = split.rsplit(":", 1)[-1] if split and ":" in split else ""
    return " ".join(part for part in (name, subset) if part) or "result"


def side_by_side_table(headlines: dict[str, dict[str, Any]], *, positive: str = "malignant") -> str:
    """Markdown table with one column per source (headlines as in config.json's `metrics`): the headline
    numbers, the threshold on P(`positive`) (or on the score each source's call was made on, where the headlines
    record one) with sensitivity and specificity at it, the weak classes and the targets missed."""
    columns = list(headlines.items())
    binary = any("sensitivity" in h for _, h in columns)
    rows: list[tuple[str, list[str]]] = [
        ("Images", [str(h.get("n", "—")) for _, h in columns]),
        ("Balanced accuracy (mean per-class recall)", [_balanced(h) for _, h in columns]),
        ("Accuracy", [fmt(h.get("accuracy")) for _, h in columns]),
        ("Macro F1", [fmt(h.get("macro_f1")) for _, h in columns]),
        (f"ROC AUC ({positive} vs rest)" if binary else "Macro ROC AUC (one-vs-rest, classes present)",
         [fmt(h.get("roc_auc")) for _, h in columns]),
    ]
    scored = any("score_from" in h for _, h in columns)  # recorded only with binary figures
    if scored:
        rows.append(("Score the call is made on", [SCORE_NAMES.get(h.get("score_from"), "—") for _, h in columns]))
    if binary:
        rows += [
            ("Decision threshold: score >=" if scored else f"Decision threshold: P({positive}) >=",
             [fmt(h.get("threshold"), 4) for _, h in columns]),
            ("Sensitivity at the threshold", [fmt(h.get("sensitivity")) for _, h in columns]),
            ("Specificity at the threshold", [fmt(h.get("specificity")) for _, h in columns]),
        ]
    rows.append((f"Weak classes (F1 or recall < {WEAK_CLASS_FLOOR:.2f})",
                 [", ".join(h.get("weak_classes") or []) or "none" for _, h in columns]))
    if any(h.get("targets") for _, h in columns):
        rows.append(("Targets missed", [_missed_cell(h) for _, h in columns]))
    header = "| Metric | " + " | ".join(column_title(s, h.get("split")) for s, h in columns) + " |"
    out = [header, "|---|" + "---:|" * len(columns)]
    out += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return "\n".join(out)


def missed_targets(headlines: dict[str, dict[str, Any]]) -> list[str]:
    """Plain sentences for every target a source's headline numbers miss, e.g.
    "HAM10000 test: balanced accuracy 0.672, target >= 0.80"."""
    out = []
    for source, headline in headlines.items():
        for metric, value, minimum in _misses(headline):
            shown = "not measured" if value is None else f"{value:.3f}"
            out.append(f"{column_title(source, headline.get('split'))}: {METRIC_NAMES.get(metric, metric)} {shown}, "
                       f"target >= {minimum:.2f}")
    return out


def per_class_table(report: EvalReport) -> str:
    """Markdown table: label, test images, precision, recall with its 95% interval, F1, ROC AUC; weak ones marked."""
    weak = set(report.weak_classes())
    out = [
        "| Class | Test images | Precision | Recall (95% CI) | F1 | ROC AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in report.per_class:
        name = display_name(c.label)
        if c.label in weak:
            name = f"**{name}** (weak)"
        ci = f" ({c.recall_ci[0]:.2f}-{c.recall_ci[1]:.2f})" if c.recall_ci else ""
        out.append(
            f"| {name} | {c.support} | {fmt(c.precision)} | {fmt(c.recall)}{ci} | {fmt(c.f1)} | {fmt(c.roc_auc)} |"
        )
    return "\n".join(out)


def weak_class_sentence(report: EvalReport) -> str:
    """Plain words on which classes the model is weak at and where the test set is too small to tell."""
    parts = []
    weak = report.weak_classes()
    if weak:
        described = ", ".join(
            f"{display_name(label)} (F1 {fmt(report.class_metrics(label).f1)}, "
            f"recall {fmt(report.class_metrics(label).recall)})"
            for label in weak
        )
        parts.append(
            f"**Weak classes** (F1 or recall below {WEAK_CLASS_FLOOR:.2f}): {described}. "
            "Do not rely on the model for these."
        )
    else:
        parts.append(f"No class has F1 or recall below {WEAK_CLASS_FLOOR:.2f} on this split.")
    small = [c for c in report.per_class if 0 < c.support < SMALL_SUPPORT]
    if small:
        listed = ", ".join(f"{c.label} ({c.support})" for c in small)
        parts.append(
            f"Fewer than {SMALL_SUPPORT} test images for {listed}: their numbers are rough (see the recall intervals)."
        )
    absent = [c.label for c in report.per_class if c.support == 0]
    if absent:
        parts.append(f"No test images at all for {', '.join(absent)}: not evaluated.")
    return " ".join(parts)


def confusion_table(report: EvalReport) -> str:
    """The confusion matrix as a Markdown table of counts."""
    header = "| true \\ predicted | " + " | ".join(report.labels) + " |"
    out = [header, "|---|" + "---:|" * len(report.labels)]
    for label, row in zip(report.labels, report.confusion_matrix):
        out.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(out)


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for a table: fixed digits, or an em dash where it is undefined."""
    return "—" if value is None else f"{value:.{digits}f}"


def plot_confusion_matrix(report: EvalReport, name: str | None = None) -> Figure:
    """Row-normalised confusion matrix (each row is a true label and sums to 1), annotated with counts."""
    cm = np.asarray(report.confusion_matrix, dtype=np.float64)
    k = len(report.labels)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = max(3.2, 1.2 + 0.75 * k)
    fig = Figure(figsize=(size + 1.2, size), dpi=110)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(k), report.labels, rotation=45, ha="right")
    ax.set_yticks(range(k), report.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_title(f"{report.task}: confusion matrix (n={report.n})\n{name or report.split or 'test'}", fontsize=8)
    fig.tight_layout()
    return fig


def plot_roc(report: EvalReport, name: str | None = None) -> Figure:
    """ROC curve: the positive label's with its operating point (two labels), or one-vs-rest per class."""
    fig = Figure(figsize=(4.8, 4.4), dpi=110)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#BBBBBB", linestyle=":", linewidth=1)
    where = name or report.split or "test"
    if report.binary is not None:
        b = report.binary
        if b.roc is not None:
            ax.plot(b.roc.fpr, b.roc.tpr, color=colour(b.positive_label), label=f"AUC {fmt(b.roc_auc)}")
        if b.sensitivity is not None and b.specificity is not None:
            ax.plot([1 - b.specificity], [b.sensitivity], "o", color="black",
                    label=f"threshold {b.threshold:.3f}: sens {b.sensitivity:.2f}, spec {b.specificity:.2f}")
        ax.set_title(f"{report.task}: ROC ({b.positive_label} vs rest)\n{where}", fontsize=8)
    else:
        for c, curve in zip(report.per_class, report.class_roc):
            if curve is not None:
                ax.plot(curve.fpr, curve.tpr, color=colour(c.label), linewidth=1.2, label=f"{c.label} {fmt(c.roc_auc)}")
        ax.set_title(f"{report.task}: one-vs-rest ROC (macro AUC {fmt(report.macro_roc_auc)})\n{where}", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _balanced(headline: dict[str, Any]) -> str:
    value = fmt(headline.get("balanced_accuracy"))
    over = headline.get("balanced_accuracy_over")
    return f"{value} (over {'/'.join(over)})" if over else value


def _misses(headline: dict[str, Any]) -> list[tuple[str, float | None, float]]:
    out = []
    for metric, minimum in (headline.get("targets") or {}).items():
        value = headline.get(metric)
        if value is None or value < minimum:
            out.append((metric, value, minimum))
    return out


def _missed_cell(headline: dict[str, Any]) -> str:
    if not headline.get("targets"):
        return "no targets"
    misses = _misses(headline)
    if not misses:
        return "none"
    return "; ".join(f"{METRIC_NAMES.get(m, m)} {fmt(v)} < {t:.2f}" for m, v, t in misses)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
