"""`python -m skin_demo.train fit`: train both tasks on one backbone, pick the best epoch per task on
validation, calibrate, and write one model package per task.

Runs on CPU or CUDA (picked automatically; mixed precision on CUDA). A run folder holds `args.json`,
`train.log`, `history.json`, `last.pt` (for --resume) and `best_<task>.pt`; `packages/<task>/` gets the
exported packages. The test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from skin_demo.config import PackageConfig, PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.taxonomy import MALIGNANT_CODES
from skin_demo.train import imbalance
from skin_demo.train.calibrate import fit_temperature
from skin_demo.train.data import (
    TASKS, Sample, label_index, read_ham10000, read_malignant_vs_benign, read_split, task_labels,
)
from skin_demo.train.dataset import CachedImages, decode_all
from skin_demo.train.export import export_package, max_logit_difference
from skin_demo.train.package_files import write_package_config
from skin_demo.train.metrics import choose_threshold, compute_report
from skin_demo.train.model import DEFAULT_ARCHITECTURE, MultiTaskNet, SingleTaskNet, cosine_with_warmup, preprocess_config
from skin_demo.train.transforms import eval_transform, train_transform

log = logging.getLogger("skin_demo.train")

MIN_SENSITIVITY = 0.90  # the malignancy threshold is the highest one that keeps validation sensitivity here


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="train the models and write model packages", description=__doc__)
    parser.add_argument("--ham", type=Path, required=True, help="HAM10000 folder (metadata CSV + images)")
    parser.add_argument("--split", type=Path, default=Path("models/ham10000_split.csv"))
    parser.add_argument("--extra-malignant", type=Path, help="ISIC malignant-vs-benign folder: adds its non-HAM "
                        "images to the malignancy task's training data")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--arch", default=DEFAULT_ARCHITECTURE, help="any timm model name")
    parser.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--crop-pct", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--imbalance", choices=imbalance.STRATEGIES, default="weighted_loss")
    parser.add_argument("--balance-power", type=float, default=0.5)
    parser.add_argument("--freeze-blocks", type=int, default=2, help="freeze the stem and this many stages")
    parser.add_argument("--limit-train", type=int, help="use only the first N training images (smoke tests)")
    parser.add_argument("--limit-val", type=int, help="use only the first N validation images (smoke tests)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    parser.add_argument("--no-export", action="store_true", help="train and select only (for sweeps)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fit(args)
    return 0


def fit(args: argparse.Namespace) -> dict[str, Path]:
    """Train, select, calibrate and export; returns task -> package folder (empty with --no-export)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _log_to(out / "train.log")
    (out / "args.json").write_text(json.dumps(_jsonable(vars(args)), indent=2))
    _seed_everything(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tasks = tuple(args.tasks)
    log.info("device %s, %d threads, tasks %s, imbalance %s", device, args.threads, tasks, args.imbalance)

    train_samples, val_samples = _training_and_validation_samples(args)
    log.info("decoding %d training and %d validation images", len(train_samples), len(val_samples))
    pre = preprocess_config(args.arch, args.image_size, args.crop_pct)
    train_set = CachedImages(train_samples, decode_all(train_samples), tasks, train_transform(pre))
    val_images = _eval_batch(val_samples, pre)
    val_labels = {t: torch.tensor([label_index(s, t) for s in val_samples]) for t in tasks}

    net = MultiTaskNet(args.arch, {t: len(task_labels(t)) for t in tasks}, pretrained=not args.no_pretrained)
    net.freeze_early_blocks(args.freeze_blocks)
    net = net.to(device, memory_format=torch.channels_last)
    losses = {
        t: imbalance.make_loss(
            args.imbalance, train_set.labels[:, i], len(task_labels(t)), args.balance_power
        ).to(device)
        for i, t in enumerate(tasks)
    }
    loader = _train_loader(args, train_set, train_samples)
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=args.lr,
                                  weight_decay=args.weight_decay)
    total_steps = args.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: cosine_with_warmup(step, total_steps, warmup=len(loader))
    )
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")

    state = {"epoch": 0, "history": [], "best": {}, "train_seconds": 0.0}
    if args.resume and (out / "last.pt").is_file():
        checkpoint = torch.load(out / "last.pt", map_location=device, weights_only=False)
        net.load_state_dict(checkpoint["model"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        schedule.load_state_dict(checkpoint["schedule"])
        state = checkpoint["state"]
        log.info("resumed after epoch %d", state["epoch"])

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        started = time.time()
        train_loss = _train_one_epoch(net, loader, losses, tasks, optimiser, schedule, scaler, device, epoch)
        val_logits = _predict(net, val_images, device)
        record = {"epoch": epoch, "train_loss": train_loss}
        for task in tasks:
            metric = _selection_metric(task, val_logits[task], val_labels[task])
            record[f"val_{task}"] = metric
            if metric > state["best"].get(task, {}).get("metric", -1.0):
                state["best"][task] = {"epoch": epoch, "metric": metric}
                torch.save({"model": net.state_dict(), "epoch": epoch, "args": _jsonable(vars(args))},
                           out / f"best_{task}.pt")
        state["train_seconds"] += time.time() - started
        record["seconds"] = round(time.time() - started, 1)
        state["history"].append(record)
        state["epoch"] = epoch
        log.info("epoch %d: %s", epoch, json.dumps(record))
        torch.save({"model": net.state_dict(), "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(), "state": state, "args": _jsonable(vars(args))},
                   out / "last.pt")
        (out / "history.json").write_text(json.dumps(state, indent=2))

    if args.no_export:
        return {}
    return {task: _finish_task(args, net, task, pre, state, val_images, val_labels[task], val_samples, device)
            for task in tasks}


def _training_and_validation_samples(args) -> tuple[list[Sample], list[Sample]]:
    ham = read_ham10000(args.ham)
    split = read_split(args.split)
    unsplit = [s.image_id for s in ham if s.image_id not in split]
    if unsplit:
        raise ValueError(f"{len(unsplit)} images are not in {args.split}, e.g. {unsplit[:5]}")
    train = [s for s in ham if split[s.image_id] == "train"]
    val = [s for s in ham if split[s.image_id] == "val"]
    if args.extra_malignant and "malignancy" in args.tasks:
        # Only images that are not HAM10000 lesions: the others duplicate HAM images, and any whose lesion is
        # in val or test would leak those splits into training.
        extra = [s for s in read_malignant_vs_benign(args.extra_malignant) if s.lesion_id is None]
        log.info("adding %d non-HAM10000 images from %s (malignancy only)", len(extra), args.extra_malignant)
        train += extra
    if args.limit_train:
        train = train[: args.limit_train]
    if args.limit_val:
        val = val[: args.limit_val]
    return train, val


def _train_loader(args, train_set: CachedImages, samples: list[Sample]) -> DataLoader:
    generator = torch.Generator().manual_seed(args.seed)
    if args.imbalance == "sampler":
        keys = [s.dx or ("malignant" if s.malignant else "benign") for s in samples]
        sampler = imbalance.balanced_sampler(keys, args.balance_power, args.seed)
        return DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True)
    return DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator)


def _train_one_epoch(net, loader, losses, tasks, optimiser, schedule, scaler, device, epoch) -> float:
    net.train()
    total, count = 0.0, 0
    for images, labels in tqdm(loader, desc=f"epoch {epoch}", leave=False, mininterval=10):
        images = images.to(device, memory_format=torch.channels_last, non_blocking=True)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            outputs = net(images)
            loss = sum(losses[t](outputs[t].float(), labels[:, i]) for i, t in enumerate(tasks))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        schedule.step()
        total += loss.item() * len(images)
        count += len(images)
    return round(total / max(count, 1), 4)


@torch.no_grad()
def _predict(net, images: torch.Tensor, device, batch_size: int = 256) -> dict[str, torch.Tensor]:
    net.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device, memory_format=torch.channels_last)
        for task, logits in net(batch).items():
            outputs.setdefault(task, []).append(logits.float().cpu())
    return {task: torch.cat(chunks) for task, chunks in outputs.items()}


def _selection_metric(task: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Balanced accuracy for lesion type, ROC AUC for malignancy (both robust to imbalance)."""
    probs = torch.softmax(logits, dim=1).numpy()
    report = compute_report(labels.numpy(), probs, task_labels(task), task=task,
                            positive_label="malignant" if task == "malignancy" else None)
    value = report.balanced_accuracy if task == "lesion_type" else report.binary.roc_auc
    return float(value) if value is not None else 0.0


def _eval_batch(samples: list[Sample], pre: PreprocessConfig) -> torch.Tensor:
    """Validation images through training's eval transform (the one that must equal imaging.preprocess)."""
    transform = eval_transform(pre)
    return torch.stack([transform(Image.fromarray(a)) for a in decode_all(samples)])


def _finish_task(args, net, task, pre, state, val_images, val_labels, val_samples, device) -> Path:
    """Best epoch -> temperature (and threshold) on validation -> package with parity checked."""
    best = torch.load(Path(args.out) / f"best_{task}.pt", map_location=device, weights_only=False)
    net.load_state_dict(best["model"])
    logits = _predict(net, val_images, device)[task]
    temperature = fit_temperature(logits, val_labels)
    threshold = None
    if task == "malignancy":
        p_malignant = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
        threshold = float(choose_threshold(val_labels.numpy(), p_malignant, min_sensitivity=MIN_SENSITIVITY))
    labels = task_labels(task)
    config = PackageConfig(
        task=task,
        labels=labels,
        malignant_labels=tuple(code for code in labels if code in MALIGNANT_CODES or code == "malignant"),
        preprocess=pre,
        architecture=args.arch,
        temperature=round(temperature, 4),
        # Round down: rounding up could lift the threshold past the score that met the sensitivity target.
        decision_threshold=None if threshold is None else math.floor(threshold * 1e4) / 1e4,
        metrics={},
        provenance=_provenance(args, task, state, best["epoch"]),
    )
    package_dir = Path(args.out) / "packages" / task
    single = SingleTaskNet(net, task).cpu().eval()
    export_package(single, config, package_dir)
    sample_batch = np.stack([preprocess(load_image(s.path), pre) for s in val_samples[:32]])
    parity = max_logit_difference(single, package_dir, sample_batch)
    provenance = {**config.provenance, "onnx_parity_max_abs_logit_diff": float(f"{parity:.3g}")}
    write_package_config(package_dir, PackageConfig(**{**config.__dict__, "provenance": provenance}))
    log.info("%s: best epoch %d, temperature %.3f, threshold %s, parity max |dlogit| %.2e -> %s",
             task, best["epoch"], temperature, threshold, parity, package_dir)
    if parity > 1e-3:
        raise RuntimeError(f"{task}: ONNX Runtime differs from torch by {parity:.2e} in a logit (limit 1e-3)")
    net.to(device)
    return package_dir


def _provenance(args, task, state, best_epoch) -> dict:
    history = state["history"]
    return {
        "data": "HAM10000 (200x150 copy)" + (" + ISIC malignant-vs-benign non-HAM images"
                                              if args.extra_malignant and task == "malignancy" else ""),
        "split": str(args.split),
        "code_commit": _git_commit(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": f"{'cuda' if torch.cuda.is_available() else 'cpu'} ({platform.processor() or platform.machine()}, "
                    f"{args.threads} threads)",
        "train_minutes": round(state["train_seconds"] / 60, 1),
        "epochs": len(history),
        "best_epoch": best_epoch,
        "selection_metric": "val balanced accuracy" if task == "lesion_type" else "val ROC AUC",
        "selection_value": round(state["best"][task]["metric"], 4),
        "imbalance": args.imbalance,
        "args": _jsonable(vars(args)),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _jsonable(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in values.items() if k != "func"}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log_to(path: Path) -> None:
    """Send the `skin_demo` log to this run's train.log (only: a sweep runs several fits in one process)."""
    root = logging.getLogger("skin_demo")
    root.setLevel(logging.INFO)
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
