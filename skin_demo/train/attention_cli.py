"""`python -m skin_demo.train add-attention PACKAGE [--out DIR]`: give a finished classifier package the
class-activation map output (`attention_export`) without retraining.

The weights and every logit stay as they were (the command checks it on a batch of noise images); the config
names the new output in `outputs`, and the card is rendered again. Without --out the package is updated in place.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx

from skin_demo.config import ATTENTION_OUTPUT, MODEL_FILE
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.train.attention_export import AttentionExportError, with_attention_config, with_attention_output
from skin_demo.train.card import write_model_card
from skin_demo.train.evaluate import EVAL_DIR
from skin_demo.train.package_files import write_package_config
from skin_demo.train.report import read_evaluation


def add_attention(package_dir: Path, out_dir: Path | None = None) -> ModelPack:
    """Write `package_dir` with the attention output to `out_dir` (default: in place); returns the loaded result.

    Raises PackageError for a package that does not load, AttentionExportError for a graph without a pooled
    linear classifier, and RuntimeError if the logits changed (they cannot, unless the graph was edited wrongly).
    """
    before = ModelPack.load(package_dir, threads=1)
    out_dir = Path(out_dir or package_dir)
    if out_dir.resolve() != Path(package_dir).resolve():
        shutil.copytree(package_dir, out_dir, dirs_exist_ok=True)
    model_path = out_dir / MODEL_FILE
    onnx.save(with_attention_output(onnx.load(str(model_path))), str(model_path))
    write_package_config(out_dir, with_attention_config(before.config))
    after = ModelPack.load(out_dir, threads=1)
    height, width = before.config.preprocess.size
    batch = np.random.default_rng(0).standard_normal((2, 3, height, width), dtype=np.float32)
    if not np.array_equal(before.logits(batch), after.logits(batch)):
        raise RuntimeError(f"{model_path}: the logits changed when the attention output was added")
    write_model_card(out_dir, after.config, read_evaluation(out_dir / EVAL_DIR))  # the card keeps its test tables
    return after


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("add-attention", help="add the class-activation map output to a package",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path,
                        help="a single-task classifier package folder, e.g. runs/RUN/packages/malignancy")
    parser.add_argument("--out", type=Path, help="write the new package here (default: update it in place)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        pack = add_attention(args.package, args.out)
    except (PackageError, AttentionExportError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    height, width = pack.config.preprocess.size
    shape = pack.outputs(np.zeros((1, 3, height, width), dtype=np.float32))[ATTENTION_OUTPUT].shape
    print(f"{pack.path}: output {ATTENTION_OUTPUT!r} added, {list(shape)} for one image; logits unchanged")
    return 0
