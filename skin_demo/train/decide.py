"""`python -m skin_demo.train decide MALIGNANCY_DIR --lesion-type LESION_TYPE_DIR --ham ... --split ...
    --isic2017 ... --clinical ...`: make a malignancy package's call per image domain, on validation.

Scores every validation image of every source through the packages exactly as the app does (ONNX Runtime,
`imaging.preprocess`, P(malignant) by `postprocess.positive_probability`), chooses per domain between the
malignancy package's own score and the lesion-type package's malignant sum and the threshold (`decision.py`), and
writes the result into the malignancy package's config (`decision_thresholds`, `decision_scores`,
`decision_threshold` = the dermoscopy one for readers that know only one, `provenance.decision`) and its card. `fit` runs
the same step on the packages it has just written. Held-out test figures per domain come from `evaluate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skin_demo.config import PackageConfig
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.postprocess import positive_probability
from skin_demo.train import sources
from skin_demo.train.card import write_model_card
from skin_demo.train.data import DataError, Sample
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.decision import MIN_SENSITIVITY, choose_domain_decisions
from skin_demo.train.evaluate import predict_samples
from skin_demo.train.package_files import write_package_config


def package_scores(pack: ModelPack, samples: Sequence[Sample]) -> np.ndarray:
    """P(malignant) per sample from one package through the serving path (sum over its malignant labels)."""
    (probs,), _ = predict_samples([pack], samples)
    return np.array([positive_probability(dict(zip(pack.config.labels, row)), pack.config) for row in probs.tolist()])


def decide_packages(malignancy_dir: Path, lesion_type_dir: Path | None, samples: Sequence[Sample], *,
                    threads: int | None = None) -> PackageConfig:
    """Choose each domain's score and threshold on `samples` (validation) and write them into the malignancy
    package's config; returns the new config. Without a lesion-type package only the binary head competes."""
    malignancy = ModelPack.load(malignancy_dir, threads=threads)
    scores = {"binary_head": package_scores(malignancy, samples)}
    if lesion_type_dir is not None:
        scores["lesion_type_sum"] = package_scores(ModelPack.load(lesion_type_dir, threads=threads), samples)
    decisions = choose_domain_decisions(
        scores,
        malignant=np.array([s.malignant for s in samples]),
        sources=np.array([s.source for s in samples]),
        domains=np.array([s.domain for s in samples]),
    )
    config = malignancy.config
    dermoscopy = decisions.get("dermoscopy")
    config = dataclasses.replace(
        config,
        decision_threshold=dermoscopy.threshold if dermoscopy else config.decision_threshold,
        decision_thresholds={d: c.threshold for d, c in decisions.items()},
        decision_scores={d: c.score for d, c in decisions.items()},
        provenance={**config.provenance, "decision": {
            "rule": "per image domain, the score with the higher mean validation ROC AUC over the domain's sources; "
                    "per source, the highest threshold keeping validation sensitivity >= min_sensitivity; the "
                    "lowest of those",
            "min_sensitivity": MIN_SENSITIVITY,
            "validation_images": {d: int(np.sum([s.domain == d for s in samples])) for d in decisions},
            "domains": {d: c.to_json() for d, c in decisions.items()},
        }},
    )
    write_package_config(malignancy_dir, config)
    config = ModelPack.load(malignancy_dir, threads=1).config  # proves config.json and the embedded copy agree
    write_model_card(malignancy_dir, config, None)
    return config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("decide", help="choose a malignancy package's score and threshold per domain",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="the malignancy package folder, e.g. runs/3d/malignancy")
    parser.add_argument("--lesion-type", type=Path, help="the lesion-type package whose malignant sum competes")
    add_data_sources(parser, uses="the val subsets")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores, at most 4)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        table = sources.label_table(args.ham, args.split, args.isic2017, args.clinical)
        config = decide_packages(args.package, args.lesion_type, sources.samples(table, "val"), threads=args.threads)
    except (PackageError, DataError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(config.provenance["decision"], indent=2))
    return 0
