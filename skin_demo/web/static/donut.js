// The two donuts of skin_demo/charts.py as inline SVG: malignant (orange) vs benign (blue), and the top-3 lesion
// types plus "other". Colours, names and the top-k come from manifest.json (taxonomy.py on the server).

const SVG = "http://www.w3.org/2000/svg";
const TEXT = "#222222";

function node(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function point(cx, cy, r, degrees) {
  const a = (degrees * Math.PI) / 180;
  return [cx + r * Math.sin(a), cy - r * Math.cos(a)];
}

function wedge(cx, cy, outer, inner, from, sweep) {
  if (sweep >= 359.999) sweep = 359.999; // a full ring: an arc cannot start and end at one point
  const large = sweep > 180 ? 1 : 0;
  const [x1, y1] = point(cx, cy, outer, from);
  const [x2, y2] = point(cx, cy, outer, from + sweep);
  const [x3, y3] = point(cx, cy, inner, from + sweep);
  const [x4, y4] = point(cx, cy, inner, from);
  return (
    `M${x1} ${y1}A${outer} ${outer} 0 ${large} 1 ${x2} ${y2}` +
    `L${x3} ${y3}A${inner} ${inner} 0 ${large} 0 ${x4} ${y4}Z`
  );
}

/** texts.percentage: two significant digits ("7.8 %", "18 %"), as the Gradio page's chart descriptions. */
function percentage(p) {
  return `${Number((100 * p).toPrecision(2))} %`;
}

/**
 * An SVG donut: slices [{label, probability, colour}] clockwise from 12 o'clock, centre text, legend below naming the
 * slices (every number is in the SVG's title, for screen readers).
 */
export function donut({ title, slices, centre, caption }) {
  const width = 440;
  const cx = 220;
  const cy = 150;
  const legendTop = 290;
  const height = legendTop + 24 * slices.length + 8;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "donut" });
  const described = slices.map((s) => `${s.label} ${percentage(s.probability)}`).join(", ");
  svg.append(node("title", {}, `${title}: ${described}`));
  svg.append(node("text", { x: cx, y: 26, "text-anchor": "middle", "font-size": 18, fill: TEXT }, title));
  const total = slices.reduce((s, x) => s + Math.max(0, x.probability), 0) || 1;
  let angle = 0;
  for (const s of slices) {
    const sweep = (360 * Math.max(0, s.probability)) / total;
    if (sweep > 0) {
      const d = wedge(cx, cy, 105, 65, angle, sweep);
      const path = node("path", { d, fill: s.colour, stroke: "#fff", "stroke-width": 1.5 });
      path.dataset.label = s.label;
      svg.append(path);
    }
    angle += sweep;
  }
  const big = { x: cx, y: cy + 4, "text-anchor": "middle", "font-size": 28, "font-weight": "bold", fill: TEXT };
  svg.append(node("text", big, centre));
  svg.append(node("text", { x: cx, y: cy + 26, "text-anchor": "middle", "font-size": 13, fill: "#444" }, caption));
  slices.forEach((s, row) => {
    const y = legendTop + 24 * row;
    svg.append(node("rect", { x: 24, y: y - 13, width: 16, height: 16, fill: s.colour }));
    svg.append(node("text", { x: 48, y, "font-size": 15, fill: TEXT }, s.label)); // the one number is the centre's
  });
  return svg;
}

export function malignancySlices(result, colours) {
  const p = result.malignancy_probability;
  return [
    { label: "Malignant", probability: p, colour: colours.malignant },
    { label: "Benign", probability: 1 - p, colour: colours.benign },
  ];
}

export function lesionTypeSlices(result, manifest) {
  const ranked = Object.entries(result.lesion_type).sort((a, b) => b[1] - a[1]);
  const top = ranked.slice(0, manifest.top_k).map(([code, p]) => ({
    label: manifest.short_names[code] ?? code, // charts.lesion_type_slices: short names fit a phone-sized chart
    probability: p,
    colour: manifest.label_colours[code] ?? manifest.colours.other,
  }));
  if (ranked.length > manifest.top_k) {
    const rest = ranked.slice(manifest.top_k).reduce((s, [, p]) => s + p, 0);
    top.push({ label: "other", probability: rest, colour: manifest.colours.other });
  }
  return top;
}
