"""The app's whole analysis (Predictor.predict: decode, preprocess, the lesion check and both classifiers) with the
packages of two models folders, measured in one run: e.g. the bundled package with a head per task against the two
single-task packages it was combined from.

    python -m benchmarks.bench_heads --against DIR [--models-dir models] [--images 16] [--repeats 10] [--json FILE]

The two Predictors take turns image by image (the same image through one, then the other), so both see the same
machine load; reported: p50 / p95 of the whole analysis and of its model part, and the ratio of the two p50s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_inference import CLASSIFIERS, LESION_CHECK, load_packs
from benchmarks.common import DEFAULT_DATA, DEFAULT_SPLIT, Stats, start_report, table, write_json
from skin_demo.modelpack import default_threads
from skin_demo.predictor import Predictor
from skin_demo.settings import DEFAULT_MODELS_DIR


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_heads_") as tmp:
        images, report = start_report(args, Path(tmp))
        report.update(compare(args, images))
    write_json(args.json, report)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR, help="default: the bundled models")
    parser.add_argument("--against", type=Path, required=True, help="the models folder to compare with")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HAM10000 folder (its test images)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="split CSV: test images are benchmarked")
    parser.add_argument("--images", type=int, default=16, help="distinct images (default 16)")
    parser.add_argument("--repeats", type=int, default=10, help="passes over the images (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes first (default 2)")
    parser.add_argument("--threads", type=int, default=default_threads(), help="ONNX Runtime threads, as the app")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    return parser.parse_args(argv)


def predictor(models_dir: Path, threads: int) -> Predictor:
    malignancy, lesion_type, check = load_packs(models_dir, threads, (*CLASSIFIERS, LESION_CHECK))
    return Predictor(malignancy, lesion_type, check)


def compare(args: argparse.Namespace, images: list[Path]) -> dict[str, Any]:
    contenders = {str(args.models_dir): predictor(args.models_dir, args.threads),
                  str(args.against): predictor(args.against, args.threads)}  # fmt: skip
    for name, p in contenders.items():
        graphs = len({pack.graph for pack in p.packs})
        print(f"{name}: {len(p.packs)} models in {graphs} graphs")
    timings: dict[str, dict[str, list[float]]] = {name: {"total": [], "inference": []} for name in contenders}
    for rep in range(args.warmup + args.repeats):
        for image in images:
            for name, p in contenders.items():
                ms = p.predict(image).timings_ms
                if rep >= args.warmup:
                    timings[name]["total"].append(ms["total"])
                    timings[name]["inference"].append(ms["inference"])
    stats = {name: {part: Stats.of(values) for part, values in parts.items()} for name, parts in timings.items()}
    rows = [[name, len(timings[name]["total"]), s["total"].p50, s["total"].p95, s["inference"].p50, s["inference"].p95]
            for name, s in stats.items()]  # fmt: skip
    print(f"\n## The whole analysis, per image, ms ({args.threads} ONNX Runtime threads)")
    print(table(["models", "n", "total p50", "p95", "models p50", "p95"], rows))
    ours, against = (stats[name]["total"].p50 for name in contenders)
    print(f"\n{args.against} / {args.models_dir} (total p50): {against / ours:.2f}x")
    return {"threads": args.threads, "ratio_total_p50": against / ours,
            "per_image": {name: {part: v.as_dict() for part, v in s.items()} for name, s in stats.items()}}


if __name__ == "__main__":
    raise SystemExit(main())
