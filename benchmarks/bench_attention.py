"""What "where the model looked" costs: the two classifiers with and without their attention maps, in one run.

    python -m benchmarks.bench_attention [--models-dir models] [--images 32] [--repeats 20] [--json FILE]

For each bundled classifier package the baseline is the same graph with its `cam` outputs and the nodes only they
need taken out (what the package was before the map was added); "with maps" runs the package as it ships, fetches
the map and turns it into the API's grid and box (`skin_demo.attention`), as Predictor does. Both run in ONNX Runtime on the
same preprocessed images, interleaved image by image so that any contention on the machine hits both alike. Also
printed: how much the model files (what the on-device page downloads) grew. Target (issue 18): p50 with maps <=
1.15x without; the first load grows < 2 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.bench_inference import load_packs
from benchmarks.common import DEFAULT_DATA, DEFAULT_SPLIT, REPO_ROOT, Stats, start_report, table, write_json
from skin_demo.attention import attention_map
from skin_demo.config import ATTENTION_OUTPUT, INPUT_NAME, OUTPUT_NAME
from skin_demo.imaging import load_image, preprocess, source_size
from skin_demo.hub import bundled_folders
from skin_demo.modelpack import MODEL_FILE, ModelPack, session_options

TASKS = ("malignancy", "lesion_type")
TARGET_RATIO = 1.15
TARGET_GROWTH = 0.02


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_attention_") as tmp:
        images, report = start_report(args, Path(tmp))
        report.update(run(args, images))
    write_json(args.json, report)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20, help="passes over the images")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


def without_map(proto: onnx.ModelProto, maps: set[str]) -> onnx.ModelProto:
    """The graph as it was before the attention outputs `maps`: those outputs and the nodes only they need removed."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    kept_outputs = [o for o in out.graph.output if o.name not in maps]
    del out.graph.output[:]
    out.graph.output.extend(kept_outputs)
    needed = {o.name for o in kept_outputs}
    kept_nodes = []
    for node in reversed(out.graph.node):  # a graph is topologically sorted: walk it back from the kept outputs
        if needed.intersection(node.output):
            kept_nodes.append(node)
            needed.update(node.input)
    del out.graph.node[:]
    out.graph.node.extend(reversed(kept_nodes))
    return out


def run(args: argparse.Namespace, images: list[Path]) -> dict:
    packs = dict(zip(TASKS, load_packs(args.models_dir, args.threads, TASKS), strict=True))
    missing = [t for t, p in packs.items() if not p.has_attention]
    if missing:
        sys.exit(f"{missing}: no {ATTENTION_OUTPUT!r} output; run python -m skin_demo.train add-attention first")
    # By model file: the heads of one package share theirs, and run it once per image, as Predictor does.
    files: dict[Path, list[ModelPack]] = {}
    for pack in packs.values():
        files.setdefault(pack.path / MODEL_FILE, []).append(pack)
    stripped = {path: without_map(onnx.load(str(path)), {p.output_name(ATTENTION_OUTPUT) for p in heads})
                .SerializeToString() for path, heads in files.items()}  # fmt: skip
    plain = {path: ort.InferenceSession(graph, sess_options=session_options(args.threads),
                                        providers=["CPUExecutionProvider"]) for path, graph in stripped.items()}
    decoded = [load_image(p, draft_size=max(pk.config.preprocess.resize_shorter_side for pk in packs.values()))
               for p in images]
    inputs = [{path: preprocess(rgb, heads[0].config.preprocess)[np.newaxis] for path, heads in files.items()}
              for rgb in decoded]  # fmt: skip

    def with_maps(i: int) -> None:
        for path, heads in files.items():
            graph_outputs = heads[0].graph_outputs(inputs[i][path])
            for pack in heads:
                values = pack.own_outputs(graph_outputs)
                probabilities = pack.calibrated(values[OUTPUT_NAME])[0]
                top = pack.config.labels[int(np.argmax(probabilities))]
                attention_map(values[ATTENTION_OUTPUT][0], probabilities, pack.config, (top,), decoded[i].size,
                              source_size(decoded[i]))

    def without(i: int) -> None:
        for path, session in plain.items():
            names = [pack.output_name(OUTPUT_NAME) for pack in files[path]]
            for pack, logits in zip(files[path], session.run(names, {INPUT_NAME: inputs[i][path]}), strict=True):
                pack.calibrated(logits)

    timings: dict[str, list[float]] = {"without maps": [], "with maps": []}
    for i in range(len(inputs)):  # warm-up
        with_maps(i), without(i)
    for _ in range(args.repeats):
        for i in range(len(inputs)):
            for name, fn in (("without maps", without), ("with maps", with_maps)):
                start = time.perf_counter()
                fn(i)
                timings[name].append(1000 * (time.perf_counter() - start))
    stats = {name: Stats.of(values) for name, values in timings.items()}
    ratio = stats["with maps"].p50 / stats["without maps"].p50
    sizes = {path.parent.name: (path.stat().st_size, len(stripped[path])) for path in files}
    every_file = sum((folder / MODEL_FILE).stat().st_size for folder in set(bundled_folders(args.models_dir).values()))
    growth = sum(now - before for now, before in sizes.values()) / (every_file - sum(
        now - before for now, before in sizes.values()))

    print(f"\n### Both classifiers per image, {args.threads} thread(s), ms ({len(images)} images x {args.repeats})")
    print(table(["", "p50", "p95", "mean"], [[n, s.p50, s.p95, s.mean] for n, s in stats.items()]))
    print(f"with maps / without: {ratio:.3f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'MISSED'})")
    print("\n### Model files (bytes)")
    print(table(["package", "without map", "with map", "added"],
                [[t, before, now, now - before] for t, (now, before) in sizes.items()]))
    print(f"the model files grew by {100 * growth:.3f} % (target < {100 * TARGET_GROWTH:.0f} %: "
          f"{'met' if growth < TARGET_GROWTH else 'MISSED'}); the runtime, which the page also downloads, not at all")
    return {"latency_ms": {n: s.as_dict() for n, s in stats.items()}, "ratio_p50": ratio,
            "model_bytes": {t: {"with_map": now, "without_map": before} for t, (now, before) in sizes.items()},
            "model_files_growth": growth}  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
