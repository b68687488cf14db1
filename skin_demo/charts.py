"""The two donut charts of a Prediction, drawn with matplotlib (Agg, no pyplot) and written as small SVGs.

They are on every request's critical path, so they are built to be cheap (measured on a 2-core CPU: about 7 ms
per chart, against 40-50 ms for the same chart drawn with `ax.pie` + `legend` and saved as PNG):
- no Axes: the wedges, legend swatches and texts are placed straight on the figure in inches, which skips the
  Axes machinery (ticks, spines, autoscaling) and the Legend layout pass;
- SVG with `svg.fonttype = "none"`: text stays text, so matplotlib does not rasterise glyphs (its most
  expensive step) and the browser draws it sharp at any size; screen readers and copy-paste see real text;
- plain `matplotlib.figure.Figure` objects: no pyplot registry, so nothing to close and nothing leaks.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # the server has no display
# Keep SVG text as <text> elements (see above), and make the output deterministic (ids, no date).
matplotlib.rcParams["svg.fonttype"] = "none"
matplotlib.rcParams["svg.hashsalt"] = "skin-demo"

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle, Wedge  # noqa: E402

from skin_demo.predictor import Prediction  # noqa: E402
from skin_demo.taxonomy import BENIGN_COLOUR, MALIGNANT_COLOUR, OTHER_COLOUR, colour, short_name  # noqa: E402
from skin_demo.texts import percentage  # noqa: E402

# Geometry in inches (1 in = 100 px in the SVG): the size each chart gets in the page's two-column layout;
# on a phone the browser scales the SVG down.
WIDTH, HEIGHT = 4.4, 3.7
CENTRE = (WIDTH / 2, 2.25)
RADIUS = 1.05
RING = 0.40
LEGEND_TOP = 0.88  # baseline of the first legend row, from the bottom
LEGEND_STEP = 0.22
LEGEND_LEFT = 0.20
OTHER_LABEL = "other"
TEXT_COLOUR = "#222222"


@dataclass(frozen=True)
class Slice:
    """One wedge of a donut: its legend text, probability and colour."""

    label: str
    probability: float
    colour: str


@dataclass(frozen=True)
class RenderedCharts:
    """Both donuts as SVG text, and the time it took to draw them."""

    malignancy_svg: str
    lesion_type_svg: str
    ms: float


def malignancy_slices(prediction: Prediction) -> list[Slice]:
    """Malignant (orange) then benign (blue), from the malignancy model's malignant-label sum."""
    p = prediction.malignancy_probability
    return [Slice("Malignant", p, MALIGNANT_COLOUR), Slice("Benign", 1.0 - p, BENIGN_COLOUR)]


def lesion_type_slices(prediction: Prediction) -> list[Slice]:
    """The prediction's top lesion types (ranked by the predictor) by their short names (a phone-sized chart has room
    for no more; "What the lesion types mean" gives the full ones), then everything else grouped as "other"."""
    slices = [Slice(short_name(r.label), r.probability, colour(r.label)) for r in prediction.lesion_type_top]
    if len(prediction.lesion_type_top) < len(prediction.lesion_type):
        shown = {r.label for r in prediction.lesion_type_top}
        slices.append(Slice(OTHER_LABEL, sum(p for code, p in prediction.lesion_type.items() if code not in shown),
                            OTHER_COLOUR))
    return slices


def malignancy_donut(prediction: Prediction) -> Figure:
    """Donut of malignant vs benign with the malignancy probability in the centre."""
    return donut(
        malignancy_slices(prediction),
        centre=percentage(prediction.malignancy_probability),
        caption="malignant",
        title="Malignant vs benign",
    )


def lesion_type_donut(prediction: Prediction) -> Figure:
    """Donut of the top lesion types (full names) and "other"; the most probable type's share and short name in the
    centre."""
    best = prediction.lesion_type_top[0] if prediction.lesion_type_top else None
    return donut(
        lesion_type_slices(prediction),
        centre=percentage(best.probability) if best else "",
        caption=short_name(best.label) if best else "",
        title="Most similar lesion types",
    )


def donut(slices: list[Slice], *, centre: str, caption: str, title: str) -> Figure:
    """A donut with one wedge per slice (clockwise from 12 o'clock), a centre text and a legend below. The legend
    names the slices without their numbers: the page shows each number once (the centre's), the rest are in "All
    numbers" and the image's alt text.

    Each wedge carries its slice's label (`wedge.get_label()`) for tests and tools that inspect the figure.
    """
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=100)
    inches = figure.dpi_scale_trans
    total = sum(max(s.probability, 0.0) for s in slices) or 1.0
    angle = 90.0
    for s in slices:
        sweep = 360.0 * max(s.probability, 0.0) / total
        wedge = Wedge(
            CENTRE, RADIUS, angle - sweep, angle, width=RING, transform=inches,
            facecolor=s.colour, edgecolor="white", linewidth=1.5, label=s.label,
        )  # fmt: skip
        figure.patches.append(wedge)
        angle -= sweep
    figure.text(0.5, 1 - 0.12 / HEIGHT, title, ha="center", va="top", fontsize=13, color=TEXT_COLOUR)
    cx, cy = CENTRE[0] / WIDTH, CENTRE[1] / HEIGHT
    figure.text(cx, cy + 0.06, centre, ha="center", va="center", fontsize=20, fontweight="bold", color=TEXT_COLOUR)
    figure.text(cx, cy - 0.06, caption, ha="center", va="center", fontsize=10, color="#444444")
    for row, s in enumerate(slices):
        baseline = LEGEND_TOP - row * LEGEND_STEP
        swatch = Rectangle((LEGEND_LEFT, baseline - 0.01), 0.13, 0.13, transform=inches, facecolor=s.colour)
        figure.patches.append(swatch)
        figure.text(
            (LEGEND_LEFT + 0.2) / WIDTH, baseline / HEIGHT, s.label,
            fontsize=9.5, color=TEXT_COLOUR,
        )  # fmt: skip
    return figure


def to_svg(figure: Figure) -> str:
    """The figure as a standalone SVG document (text kept as text)."""
    with io.StringIO() as buffer:
        figure.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue()


def render(prediction: Prediction) -> RenderedCharts:
    """Draw both donuts as SVG; reports the time taken."""
    start = time.perf_counter()
    malignancy = to_svg(malignancy_donut(prediction))
    lesion_type = to_svg(lesion_type_donut(prediction))
    return RenderedCharts(malignancy, lesion_type, 1000 * (time.perf_counter() - start))
