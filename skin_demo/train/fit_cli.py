"""`python -m skin_demo.train fit`: the command line of a training run (`fit.py` runs it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch.distributed as dist

from skin_demo.config import COLOR_CONSTANCY
from skin_demo.train import imbalance
from skin_demo.train.data import TASKS
from skin_demo.train.data_args import add_data_sources
from skin_demo.train.fit import __doc__ as FIT_DOC
from skin_demo.train.fit import fit
from skin_demo.train.model import DEFAULT_ARCHITECTURE


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="train the models and write model packages", description=FIT_DOC)
    add_data_sources(parser, uses="the train subsets for training, the val subsets for choosing epochs",
                     split_default=Path("models/ham10000_split.csv"))
    parser.add_argument("--phone-look", type=float, default=0.0, metavar="P",
                        help="make this share of dermoscopy training images look like phone photos (phone_look.py)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--arch", default=DEFAULT_ARCHITECTURE, help="any timm model name")
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    parser.add_argument("--image-size", type=int, default=192, help="input size of the exported model")
    parser.add_argument("--warm-size", type=int, help="train the first --warm-epochs epochs at this smaller size")
    parser.add_argument("--warm-epochs", type=int, default=0)
    parser.add_argument("--crop-pct", type=float, default=1.0)
    parser.add_argument("--color-constancy", choices=COLOR_CONSTANCY, default="none",
                        help="shades_of_gray: train (and ship in the package's preprocessing) colour constancy")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=8e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--ema-decay", type=float, default=0.998, help="0 turns EMA weights off")
    parser.add_argument("--imbalance", choices=imbalance.STRATEGIES, default="sampler",
                        help="sampler: draw (source, class) groups ~ size ** -power")
    parser.add_argument("--balance-power", type=float, default=0.5)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: fp16 autocast on CUDA, bf16 on a CPU with native bf16 (AMX / AVX-512 BF16), "
                             "else fp32")
    parser.add_argument("--cache", type=Path, help="folder for the decoded-image cache")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke tests)")
    parser.add_argument("--limit-val", type=int, help="use only the first N validation images (smoke tests)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads per process")
    parser.add_argument("--workers", type=int, default=0, help="data-loader processes for augmentation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--no-export", action="store_true", help="train and select only (for sweeps)")
    parser.add_argument("--float32-weights", action="store_true",
                        help="store weights as float32 (default: int8, else float16 storage where that keeps the "
                             "probabilities: a quarter or half the download, float32 compute)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fit(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
