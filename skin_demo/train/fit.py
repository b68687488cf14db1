"""A whole training run: data, network, optimiser and schedule around the training loop, per-epoch validation and
checkpoints, then the best epoch per task exported as a package and the malignancy decision made per domain.

Runs on CPU or CUDA and data-parallel under `torchrun --nproc_per_node N -m skin_demo.train fit ...` (gloo on CPU,
NCCL on GPU). A run folder holds `args.json`, `train.log`, `history.json`, `last.pt` (for --resume, also across
machines), `best_<task>.pt`, `choices.json` and `packages/<task>/`. The test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from skin_demo.config import PackageConfig, PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.taxonomy import MALIGNANT_CODES
from skin_demo.train import decide, imbalance, sources
from skin_demo.train.calibrate import fit_temperature
from skin_demo.train.card import render_model_card
from skin_demo.train.data import Sample, task_labels
from skin_demo.train.dataset import CachedImages, decode_cached
from skin_demo.train.model import MultiTaskNet, preprocess_config
from skin_demo.train.package_build import build_package
from skin_demo.train.package_files import write_package
from skin_demo.train.phone_look import PhoneLook
from skin_demo.train.run_info import git_commit, jsonable
from skin_demo.train.selection import TaskChoice, choose_task_module, class_log_prior
from skin_demo.train.training_loop import (
    TrainState,
    Validation,
    load_checkpoint,
    predict,
    save_checkpoint,
    train_one_epoch,
)
from skin_demo.train.transforms import train_transform

log = logging.getLogger("skin_demo.train")


def fit(args: argparse.Namespace) -> dict[str, Path]:
    """Train, select, calibrate and export; returns task -> package folder (empty with --no-export or off rank 0)."""
    rank, world = _init_distributed()
    out = Path(args.out)
    device = _device(rank)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _log_to(out / "train.log")
        (out / "args.json").write_text(json.dumps(jsonable(vars(args)), indent=2))
    _seed_everything(args.seed + rank)
    torch.set_num_threads(args.threads)
    tasks = tuple(args.tasks)
    autocast_dtype = _autocast_dtype(args.precision, device)
    log.info("rank %d/%d, device %s, %d threads, autocast %s, tasks %s", rank, world, device, args.threads,
             autocast_dtype, tasks)

    table = sources.label_table(args.ham, args.split, args.isic2017, args.clinical)
    train_samples = sources.samples(table, "train")[: args.limit_train]
    val_samples = sources.samples(table, "val")[: args.limit_val]
    log.info("training on %s, validating on %s", _counts(train_samples), _counts(val_samples))
    net = MultiTaskNet(args.arch, {t: len(task_labels(t)) for t in tasks}, pretrained=not args.no_pretrained)
    pre = preprocess_config(net.backbone, args.image_size, args.crop_pct, args.color_constancy)
    # Every source at the scale serving shows it (shorter side to the resize length), so that an image's size
    # or resampling blur cannot tell the network which source, and so which class prior, it came from.
    train_set = CachedImages(train_samples, decode_cached(train_samples, args.cache, pre.resize_shorter_side),
                             tasks, train_transform(pre),
                             phone_look=PhoneLook(args.phone_look) if args.phone_look > 0 else None)
    val = Validation(val_samples, pre, tasks, args.cache)

    net = net.to(device, memory_format=torch.channels_last)
    ema = ModelEmaV3(net, decay=args.ema_decay) if args.ema_decay > 0 else None
    model = DistributedDataParallel(net) if world > 1 else net
    losses = {
        t: imbalance.make_loss(args.imbalance, train_set.labels[:, i], len(task_labels(t)), args.balance_power).to(device)
        for i, t in enumerate(tasks)
    }
    steps_per_epoch = len(train_samples) // world // args.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_samples)} training images are fewer than one batch per process")
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = CosineLRScheduler(
        optimiser, t_initial=args.epochs * steps_per_epoch, lr_min=args.lr * 0.01,
        warmup_t=steps_per_epoch, warmup_lr_init=args.lr * 0.01, t_in_epochs=False,
    )
    scaler = torch.amp.GradScaler(enabled=autocast_dtype == torch.float16)

    state = TrainState()
    if args.resume and (out / "last.pt").is_file():
        state = load_checkpoint(out / "last.pt", net, ema, optimiser, device)
        log.info("resumed after epoch %d", state.epoch)
    hardware = _hardware(device, args.threads, world)
    if hardware not in state.hardware:
        state.hardware.append(hardware)

    for epoch in range(state.epoch + 1, args.epochs + 1):
        started = time.time()
        size = args.warm_size if args.warm_size and epoch <= args.warm_epochs else args.image_size
        train_set.transform = train_transform(pre, size=(size, size))
        loader = _train_loader(args, train_set, train_samples, epoch, rank, world, steps_per_epoch)
        train_loss = train_one_epoch(model, ema, loader, losses, optimiser, schedule, scaler, device=device,
                                     autocast_dtype=autocast_dtype, first_update=(epoch - 1) * steps_per_epoch)
        if rank == 0:
            record = {"epoch": epoch, "size": size, "steps": steps_per_epoch, "train_loss": train_loss}
            for weights, candidate in (("raw", net), ("ema", ema.module if ema else None)):
                if candidate is None:
                    continue
                metrics = val.metrics(candidate, device)
                record[weights] = metrics
                for task in tasks:
                    score = metrics[task]["selection"]
                    if score > state.best.get(task, {}).get("metric", -1.0):
                        state.best[task] = {"epoch": epoch, "weights": weights, "metric": score}
                        torch.save({"model": candidate.state_dict(), "epoch": epoch, "weights": weights,
                                    "args": jsonable(vars(args))}, out / f"best_{task}.pt")
            state.train_seconds += time.time() - started
            record["seconds"] = round(time.time() - started, 1)
            state.history.append(record)
            state.epoch = epoch
            log.info("epoch %d: %s", epoch, json.dumps(record))
            save_checkpoint(out / "last.pt", net, ema, optimiser, state, jsonable(vars(args)))
            (out / "history.json").write_text(json.dumps(state.to_dict(), indent=2))
        else:
            state.epoch = epoch
        if world > 1:
            dist.barrier()

    if args.no_export or rank != 0:
        return {}
    return finish(args, net, tasks, pre, state, val, device, train_set)


def finish(args: argparse.Namespace, net: MultiTaskNet, tasks: tuple[str, ...], pre: PreprocessConfig,
           state: TrainState, val: Validation, device: torch.device, train_set: CachedImages) -> dict[str, Path]:
    """Best checkpoint per task -> flip TTA and logit adjustment chosen on validation -> temperature -> package;
    then the malignancy decision (score and threshold per domain) made on the written packages, as `decide`
    makes it."""
    out = Path(args.out)
    choices: dict[str, TaskChoice] = {}
    packages = {}
    draw_weights = (imbalance.domain_class_weights(train_set.samples, args.balance_power).numpy()
                    if args.imbalance == "sampler" else np.ones(len(train_set.samples)))
    for index, task in enumerate(tasks):
        best = torch.load(out / f"best_{task}.pt", map_location="cpu", weights_only=False)
        net.load_state_dict(best["model"])
        log_prior = class_log_prior(train_set.labels[:, index].numpy(), draw_weights, len(task_labels(task)))
        module, choices[task] = choose_task_module(net, task, best, val, device, log_prior)
        packages[task] = _write_task_package(args, module, task, pre, state, choices[task], val, out)
    (out / "choices.json").write_text(json.dumps({t: c.to_json() for t, c in choices.items()}, indent=2))
    if "malignancy" in packages:
        decide.decide_packages(packages["malignancy"], packages.get("lesion_type"), val.samples, threads=args.threads)
    return packages


def _write_task_package(args, module: torch.nn.Module, task: str, pre: PreprocessConfig, state: TrainState,
                        choice: TaskChoice, val: Validation, out: Path) -> Path:
    """Temperature fitted on validation, the package checked in memory, then written once."""
    logits = predict(_Logits(module), val.images, torch.device("cpu"))["logits"]
    labels = torch.from_numpy(val.labels[task])
    labelled = labels >= 0
    temperature = fit_temperature(logits[labelled], labels[labelled])
    codes = task_labels(task)
    config = PackageConfig(
        task=task,
        labels=codes,
        malignant_labels=tuple(c for c in codes if c in MALIGNANT_CODES or c == "malignant"),
        preprocess=pre,
        architecture=args.arch,
        temperature=round(temperature, 4),
        metrics={},
        provenance=_provenance(args, task, state, choice),
    )
    sample_batch = np.stack([preprocess(load_image(s.path), pre) for s in val.samples[:32]])
    proto, config = build_package(module, config, sample_batch, compact=not args.float32_weights)
    package_dir = write_package(out / "packages" / task, proto, config, render_model_card(config, None))
    log.info("%s: %s, temperature %.3f -> %s", task, json.dumps(choice.to_json()), temperature, package_dir)
    return package_dir


class _Logits(torch.nn.Module):
    """A package's module (image -> logits) in the shape `predict` takes (image -> {name: logits})."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.module(images)}


def _train_loader(args, train_set: CachedImages, samples: list[Sample], epoch: int, rank: int, world: int,
                  steps: int) -> DataLoader:
    """One epoch's batches for this process: each rank draws its own share with its own seed."""
    seed = args.seed + 1000 * epoch + rank
    if args.imbalance == "sampler":
        weights = imbalance.domain_class_weights(samples, args.balance_power)
        sampler = imbalance.weighted_sampler(weights, seed, num_samples=steps * args.batch_size)
        return DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                          num_workers=args.workers)
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(train_set), generator=generator)[: steps * args.batch_size].tolist()
    return DataLoader(torch.utils.data.Subset(train_set, subset), batch_size=args.batch_size, drop_last=True,
                      num_workers=args.workers)


def _provenance(args, task: str, state: TrainState, choice: TaskChoice) -> dict:
    data = ["HAM10000 (200x150 copy, models/ham10000_split.csv)"]
    if args.isic2017:
        data.append("ISIC 2017 (256x256, challenge split, no group_id across splits)")
    if args.clinical:
        data.append("clinical photos (DermNet NZ + SD-198, grouped split)")
    return {
        "data": " + ".join(data),
        "split": str(args.split),
        "code_commit": git_commit(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": state.hardware,
        "train_minutes": round(state.train_seconds / 60, 1),
        "epochs": len(state.history),
        "selection_metric": ("mean over sources of val balanced accuracy" if task == "lesion_type"
                             else "mean over sources of val ROC AUC"),
        "selection_value": state.best[task]["metric"],
        "choice": choice.to_json(),
        "args": jsonable(vars(args)),
    }


def _counts(samples: list[Sample]) -> str:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.source] = counts.get(s.source, 0) + 1
    return ", ".join(f"{n} {src}" for src, n in sorted(counts.items()))


def _init_distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
        return torch.device("cuda")
    return torch.device("cpu")


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """fp16 autocast on CUDA; bf16 on a CPU with native bf16 matrix instructions (AMX or AVX-512 BF16), where it
    pays; none on other CPUs, where bf16 is emulated and slower than fp32 (benchmarks/bench_train.py: 4x slower
    on a 2-core AVX2 EPYC)."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.float16
    native_bf16 = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return torch.bfloat16 if precision == "bf16" or native_bf16 else None


def _hardware(device: torch.device, threads: int, world: int) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    return f"{world} x {device.type} ({name}, {threads} threads)"


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
