"""Write an `EvalReport` to a folder: metrics.json, EVAL.md and PNG plots.

The folder is a package's `eval/` (uploaded to the Hub with the model) or any folder a maintainer names. The
Markdown tables are shared with the model card (`card.py`), so the two never disagree. Plots use matplotlib's
object API on an Agg canvas: no pyplot global state and no display needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skin_demo.taxonomy import colour, display_name
from skin_demo.train.metrics import SMALL_SUPPORT, WEAK_CLASS_FLOOR, EvalReport

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "EVAL.md"
CONFUSION_PNG = "confusion_matrix.png"
F1_PNG = "per_class_f1.png"
ROC_PNG = "roc.png"
REPORT_FILES = (METRICS_FILE, MARKDOWN_FILE, CONFUSION_PNG, F1_PNG, ROC_PNG)


def write_report(report: EvalReport, folder: Path, *, title: str | None = None) -> dict[str, Path]:
    """Write metrics.json, EVAL.md, confusion_matrix.png, per_class_f1.png and roc.png into `folder`.

    Creates the folder; overwrites files of the same names. Returns {file name: path}.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in REPORT_FILES}
    paths[METRICS_FILE].write_text(report.to_json())
    paths[MARKDOWN_FILE].write_text(render_markdown(report, title=title))
    _save(plot_confusion_matrix(report), paths[CONFUSION_PNG])
    _save(plot_per_class_f1(report), paths[F1_PNG])
    _save(plot_roc(report), paths[ROC_PNG])
    return paths


def read_report(folder: Path) -> EvalReport | None:
    """The report in `folder`/metrics.json, or None when there is none; raises ValueError for a broken file."""
    path = Path(folder) / METRICS_FILE
    if not path.is_file():
        return None
    try:
        return EvalReport.from_json(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is not an evaluation report written by skin_demo.train: {exc}") from exc


def render_markdown(report: EvalReport, *, title: str | None = None, image_dir: str = ".") -> str:
    """EVAL.md: the headline numbers, the per-class table, weak classes by name, and the confusion matrix."""
    title = title or f"Evaluation: {report.task}"
    lines = [f"# {title}", ""]
    lines.append(f"Evaluated on **{report.split or 'an unnamed set'}**: {report.n} images.")
    if report.extra.get("package"):
        lines.append(f"Model: `{report.extra['package']}` ({report.extra.get('runtime', 'ONNX Runtime')}).")
    lines += ["", headline_table(report), "", "## Per class", "", per_class_table(report), ""]
    lines += [weak_class_sentence(report), ""]
    lines += ["## Confusion matrix", "", "Rows: true label. Columns: predicted label.", "", confusion_table(report), ""]
    lines += [
        f"![Confusion matrix]({image_dir}/{CONFUSION_PNG})",
        f"![Per-class F1]({image_dir}/{F1_PNG})",
        f"![ROC]({image_dir}/{ROC_PNG})",
        "",
    ]
    return "\n".join(lines)


def headline_table(report: EvalReport) -> str:
    """A two-column Markdown table of the summary metrics."""
    rows = [
        ("Balanced accuracy (mean per-class recall)", fmt(report.balanced_accuracy)),
        ("Accuracy", fmt(report.accuracy)),
        ("Macro F1", fmt(report.macro_f1)),
    ]
    if report.binary is not None:
        b = report.binary
        rows += [
            (f"ROC AUC ({b.positive_label} vs rest)", fmt(b.roc_auc)),
            (f"Decision threshold (p({b.positive_label}) >=)", fmt(b.threshold)),
            ("Sensitivity at the threshold", fmt(b.sensitivity)),
            ("Specificity at the threshold", fmt(b.specificity)),
        ]
    else:
        rows.append(("Macro ROC AUC (one-vs-rest)", fmt(report.macro_roc_auc)))
    out = ["| Metric | Value |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(out)


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


def plot_confusion_matrix(report: EvalReport) -> Figure:
    """Row-normalised confusion matrix (each row is a true label and sums to 1), annotated with counts."""
    cm = np.asarray(report.confusion_matrix, dtype=np.float64)
    k = len(report.labels)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    size = 1.2 + 0.75 * k
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
    ax.set_title(f"{report.task}: confusion matrix (n={report.n})")
    fig.tight_layout()
    return fig


def plot_per_class_f1(report: EvalReport) -> Figure:
    """Bar chart of per-class F1 with the weak-class floor drawn in; undefined F1 shows as an empty slot."""
    labels = [c.label for c in report.per_class]
    values = [c.f1 if c.f1 is not None else 0.0 for c in report.per_class]
    fig = Figure(figsize=(1.5 + 0.8 * len(labels), 3.6), dpi=110)
    ax = fig.add_subplot()
    bars = ax.bar(labels, values, color=[colour(label) for label in labels])
    for bar, c in zip(bars, report.per_class):
        text = "n/a" if c.f1 is None else f"{c.f1:.2f}\nn={c.support}"
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02, text, ha="center", va="bottom", fontsize=7)
    ax.axhline(WEAK_CLASS_FLOOR, color="#999999", linestyle="--", linewidth=1)
    ax.text(len(labels) - 0.5, WEAK_CLASS_FLOOR + 0.01, "weak below", ha="right", va="bottom", fontsize=7,
            color="#666666")
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("F1")
    ax.set_title(f"{report.task}: per-class F1 (macro {fmt(report.macro_f1, 2)})")
    fig.tight_layout()
    return fig


def plot_roc(report: EvalReport) -> Figure:
    """ROC curve: the positive label's with its operating point (two labels), or one-vs-rest per class."""
    fig = Figure(figsize=(4.8, 4.4), dpi=110)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#BBBBBB", linestyle=":", linewidth=1)
    if report.binary is not None:
        b = report.binary
        if b.roc is not None:
            ax.plot(b.roc.fpr, b.roc.tpr, color=colour(b.positive_label), label=f"AUC {fmt(b.roc_auc)}")
        if b.sensitivity is not None and b.specificity is not None:
            ax.plot([1 - b.specificity], [b.sensitivity], "o", color="black",
                    label=f"threshold {b.threshold:.3f}: sens {b.sensitivity:.2f}, spec {b.specificity:.2f}")
        ax.set_title(f"{report.task}: ROC ({b.positive_label} vs rest)")
    else:
        for c, curve in zip(report.per_class, report.class_roc):
            if curve is not None:
                ax.plot(curve.fpr, curve.tpr, color=colour(c.label), linewidth=1.2, label=f"{c.label} {fmt(c.roc_auc)}")
        ax.set_title(f"{report.task}: one-vs-rest ROC (macro AUC {fmt(report.macro_roc_auc)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png")
