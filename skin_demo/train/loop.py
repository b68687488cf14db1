"""`python -m skin_demo.train fit`: train both tasks on one backbone over every source, pick the best epoch per
task on validation (per source), choose how malignancy is computed, calibrate, and write one package per task.

Runs on CPU or CUDA (picked automatically; bf16 autocast on CPU, fp16 on CUDA) and data-parallel under
`torchrun --nproc_per_node N -m skin_demo.train fit ...` (gloo on CPU, NCCL on GPU). A run folder holds
`args.json`, `train.log`, `history.json`, `last.pt` (for --resume, also across machines), `best_<task>.pt`, and
`packages/<task>/`. With `--cache DIR` the decoded images are kept as uint8 arrays there, so a run folder and its
cache can be carried to another machine. The test split is never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from skin_demo.config import COLOR_CONSTANCY, PackageConfig, PreprocessConfig
from skin_demo.imaging import load_image, preprocess
from skin_demo.taxonomy import LESION_CODES, MALIGNANT_CODES
from skin_demo.train import imbalance, sources
from skin_demo.train.calibrate import fit_temperature
from skin_demo.train.card import render_model_card
from skin_demo.train.data import TASKS, Sample, label_index, task_labels
from skin_demo.train.dataset import CachedImages, decode_cached
from skin_demo.train.export import max_logit_difference, max_probability_change, to_onnx, with_float16_weights
from skin_demo.train.metrics import choose_threshold
from skin_demo.train.model import DEFAULT_ARCHITECTURE, MultiTaskNet, preprocess_config
from skin_demo.train.package_files import write_package
from skin_demo.train.run_info import git_commit, jsonable
from skin_demo.train.task_nets import FlipAveraged, LesionSumMalignancy, SingleTaskNet
from skin_demo.train.transforms import eval_transform, train_transform

log = logging.getLogger("skin_demo.train")

MIN_SENSITIVITY = 0.90  # the malignancy threshold keeps validation sensitivity at least here, on every source
TTA_MIN_GAIN = 0.01  # flip test-time augmentation ships only if it lifts the validation metric by a point
PARITY_LIMIT = 1e-3  # largest |torch - ONNX Runtime| logit difference a package may ship with
FLOAT16_LIMIT = 1e-2  # float16 weight storage ships only if no probability moves more than this on validation


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="train the models and write model packages", description=__doc__)
    parser.add_argument("--ham", type=Path, required=True, help="HAM10000 folder (metadata CSV + images)")
    parser.add_argument("--split", type=Path, default=Path("models/ham10000_split.csv"))
    parser.add_argument("--isic2017", type=Path, help="ISIC 2017 folder (labels.csv + images): a second source")
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
    parser.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                        help="auto: bf16 autocast on CPU, fp16 on CUDA")
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
                        help="store weights as float32 (default: float16 storage, half the download, float32 compute)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fit(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


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
    autocast_dtype = _autocast_dtype(args, device)
    log.info("rank %d/%d, device %s, %d threads, autocast %s, tasks %s", rank, world, device, args.threads,
             autocast_dtype, tasks)

    table = sources.label_table(args.ham, args.split, args.isic2017)
    train_samples = sources.samples(table, "train")[: args.limit_train]
    val_samples = sources.samples(table, "val")[: args.limit_val]
    log.info("training on %s, validating on %s", _counts(train_samples), _counts(val_samples))
    pre = preprocess_config(args.arch, args.image_size, args.crop_pct, args.color_constancy)
    train_set = CachedImages(train_samples, decode_cached(train_samples, args.cache), tasks, train_transform(pre))
    val = _Validation(val_samples, pre, tasks, args.cache)

    net = MultiTaskNet(args.arch, {t: len(task_labels(t)) for t in tasks}, pretrained=not args.no_pretrained)
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

    state = {"epoch": 0, "history": [], "best": {}, "train_seconds": 0.0, "hardware": []}
    if args.resume and (out / "last.pt").is_file():
        checkpoint = torch.load(out / "last.pt", map_location=device, weights_only=False)
        net.load_state_dict(checkpoint["model"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        optimiser.load_state_dict(checkpoint["optimiser"])
        state = checkpoint["state"]
        log.info("resumed after epoch %d", state["epoch"])
    hardware = _hardware(device, args.threads, world)
    if hardware not in state["hardware"]:
        state["hardware"].append(hardware)

    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        started = time.time()
        size = args.warm_size if args.warm_size and epoch <= args.warm_epochs else args.image_size
        train_set.transform = train_transform(pre, size=(size, size))
        loader = _train_loader(args, train_set, train_samples, epoch, rank, world, steps_per_epoch)
        train_loss = _train_one_epoch(model, ema, loader, losses, tasks, optimiser, schedule, scaler, device,
                                      autocast_dtype, epoch, steps_per_epoch)
        if rank == 0:
            record = {"epoch": epoch, "size": size, "steps": steps_per_epoch, "train_loss": train_loss}
            for weights, candidate in (("raw", net), ("ema", ema.module if ema else None)):
                if candidate is None:
                    continue
                metrics = val.metrics(candidate, device)
                record[weights] = metrics
                for task in tasks:
                    score = metrics[task]["selection"]
                    if score > state["best"].get(task, {}).get("metric", -1.0):
                        state["best"][task] = {"epoch": epoch, "weights": weights, "metric": score}
                        torch.save({"model": candidate.state_dict(), "epoch": epoch, "weights": weights},
                                   out / f"best_{task}.pt")
            state["train_seconds"] += time.time() - started
            record["seconds"] = round(time.time() - started, 1)
            state["history"].append(record)
            state["epoch"] = epoch
            log.info("epoch %d: %s", epoch, json.dumps(record))
            torch.save({"model": net.state_dict(), "ema": ema.state_dict() if ema else None,
                        "optimiser": optimiser.state_dict(), "state": state, "args": jsonable(vars(args))},
                       out / "last.pt")
            (out / "history.json").write_text(json.dumps(state, indent=2))
        else:
            state["epoch"] = epoch
        if world > 1:
            dist.barrier()

    if args.no_export or rank != 0:
        return {}
    return _finish(args, net, tasks, pre, state, val, device)


class _Validation:
    """The validation images through training's eval transform, with labels and sources, measured per source."""

    def __init__(self, samples: list[Sample], pre: PreprocessConfig, tasks: tuple[str, ...], cache: Path | None):
        transform = eval_transform(pre)
        self.samples = samples
        self.images = torch.stack([transform(Image.fromarray(a)) for a in decode_cached(samples, cache)])
        self.labels = {t: np.array([label_index(s, t) for s in samples]) for t in tasks}
        self.sources = np.array([s.source for s in samples])
        self.malignant = np.array([s.malignant for s in samples])
        self.tasks = tasks

    def logits(self, net: torch.nn.Module, device, *, flip: bool = False) -> dict[str, torch.Tensor]:
        """Logits per task; with `flip`, the mean of the image's and its mirror image's logits."""
        outputs = _predict(net, self.images, device)
        if flip:
            mirrored = _predict(net, self.images.flip(3), device)
            outputs = {t: (outputs[t] + mirrored[t]) / 2 for t in outputs}
        return outputs

    def metrics(self, net: torch.nn.Module, device, *, flip: bool = False) -> dict[str, dict]:
        """Per task and source: balanced accuracy (lesion type), ROC AUC (malignancy, and from the lesion head's
        malignant sum); `selection` is the mean over sources, so every source counts the same."""
        logits = self.logits(net, device, flip=flip)
        out = {}
        if "lesion_type" in logits:
            probs = torch.softmax(logits["lesion_type"], 1).numpy()
            out["lesion_type"] = self._per_source(lambda m: _balanced_accuracy(
                self.labels["lesion_type"][m], probs[m].argmax(1)))
            out["lesion_sum_malignancy"] = self._per_source(lambda m: _auc(
                self.malignant[m], malignant_sum(probs[m])))
        if "malignancy" in logits:
            p = torch.softmax(logits["malignancy"], 1)[:, 1].numpy()
            out["malignancy"] = self._per_source(lambda m: _auc(self.labels["malignancy"][m], p[m]))
        return out

    def _per_source(self, metric) -> dict:
        values = {src: round(float(metric(self.sources == src)), 4) for src in np.unique(self.sources)}
        return {**values, "selection": round(float(np.mean(list(values.values()))), 4)}


def malignant_sum(lesion_probs: np.ndarray) -> np.ndarray:
    """P(malignant) from lesion-type probabilities [N, 7]: the sum over the malignant codes."""
    columns = [i for i, code in enumerate(LESION_CODES) if code in MALIGNANT_CODES]
    return lesion_probs[:, columns].sum(1)


def _balanced_accuracy(y_true, y_pred) -> float:
    """Mean recall over the classes present in `y_true`. A source with 3 of the 7 classes (ISIC 2017) still gets
    predictions of the other 4, which is exactly what should count as wrong, so sklearn's warning is noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return balanced_accuracy_score(y_true, y_pred)


def _auc(y_true, scores) -> float:
    y_true = np.asarray(y_true).astype(int)
    return roc_auc_score(y_true, scores) if 0 < y_true.sum() < len(y_true) else float("nan")


def _finish(args, net, tasks, pre, state, val: _Validation, device) -> dict[str, Path]:
    """Best checkpoints -> malignancy source and flip TTA chosen on validation -> temperature, threshold -> packages."""
    out = Path(args.out)
    best = {t: torch.load(out / f"best_{t}.pt", map_location="cpu", weights_only=False) for t in tasks}
    choices: dict[str, dict] = {}
    packages = {}
    for task in tasks:
        net.load_state_dict(best[task]["model"])
        module, choice = _task_module(net, task, best, val, device)
        choices[task] = choice
        packages[task] = _write_task_package(args, module, task, pre, state, choice, val, out)
    (out / "choices.json").write_text(json.dumps(choices, indent=2))
    return packages


def _task_module(net, task, best, val: _Validation, device) -> tuple[torch.nn.Module, dict]:
    """The network one package exports, and why: which head gives malignancy, and whether flip TTA is in."""
    choice: dict = {"best_epoch": best[task]["epoch"], "weights": best[task]["weights"]}
    plain = val.metrics(net, device)  # each candidate is measured once; flip TTA is measured on the chosen one
    module: torch.nn.Module = SingleTaskNet(net, task)
    metric_key = task
    if task == "malignancy" and "lesion_type" in best:
        lesion_net = MultiTaskNet(net.architecture, {t: h.out_features for t, h in net.heads.items()},
                                  pretrained=False)
        lesion_net.load_state_dict(best["lesion_type"]["model"])
        lesion_plain = val.metrics(lesion_net, device)
        binary, summed = plain["malignancy"], lesion_plain["lesion_sum_malignancy"]
        choice["val_auc"] = {"binary_head": binary, "lesion_type_sum": summed}
        choice["source"] = "binary malignancy head"
        if summed["selection"] > binary["selection"]:
            choice["source"] = "lesion_type head: P(akiec) + P(bcc) + P(mel)"
            choice.update(best_epoch=best["lesion_type"]["epoch"], weights=best["lesion_type"]["weights"])
            net, plain, metric_key = lesion_net, lesion_plain, "lesion_sum_malignancy"
            module = LesionSumMalignancy(net)
    without = plain[metric_key]["selection"]
    flipped = val.metrics(net, device, flip=True)[metric_key]["selection"]
    choice["flip_tta"] = {"val_without": without, "val_with": flipped, "used": flipped - without >= TTA_MIN_GAIN}
    if choice["flip_tta"]["used"]:
        module = FlipAveraged(module)
    return module.cpu().eval(), choice


def _write_task_package(args, module, task, pre, state, choice, val: _Validation, out: Path) -> Path:
    """Temperature (and threshold) on validation, parity checked in memory, then the package written once."""
    with torch.no_grad():
        logits = torch.cat([module(val.images[i:i + 128]) for i in range(0, len(val.images), 128)])
    labels = torch.from_numpy(val.labels[task])
    temperature = fit_temperature(logits, labels)
    threshold = None
    if task == "malignancy":
        p_malignant = torch.softmax(logits / temperature, dim=1)[:, 1].numpy()
        # Per source, then the lowest: a threshold pooled over sources meets the target on the big source only.
        malignant, per_source = labels.numpy(), {}
        for source in np.unique(val.sources):
            mask = val.sources == source
            if malignant[mask].any():
                per_source[str(source)] = choose_threshold(malignant[mask], p_malignant[mask], MIN_SENSITIVITY)
        choice["threshold_per_source"] = {source: round(t, 4) for source, t in per_source.items()}
        # Round down: rounding up could lift the threshold past the score that met the sensitivity target.
        threshold = math.floor(min(per_source.values()) * 1e4) / 1e4
    codes = task_labels(task)
    config = PackageConfig(
        task=task,
        labels=codes,
        malignant_labels=tuple(c for c in codes if c in MALIGNANT_CODES or c == "malignant"),
        preprocess=pre,
        architecture=args.arch,
        temperature=round(temperature, 4),
        decision_threshold=threshold,
        metrics={},
        provenance=_provenance(args, task, state, choice),
    )
    proto = to_onnx(module, config)
    parity_batch = np.stack([preprocess(load_image(s.path), pre) for s in val.samples[:32]])
    parity = max_logit_difference(module, proto, parity_batch)
    if parity > PARITY_LIMIT:
        raise RuntimeError(f"{task}: ONNX Runtime differs from torch by {parity:.2e} in a logit (limit {PARITY_LIMIT})")
    provenance = {**config.provenance, "onnx_parity_max_abs_logit_diff": float(f"{parity:.3g}"),
                  "weights": "float32"}
    if not args.float32_weights:
        compact = with_float16_weights(proto)
        change = max_probability_change(proto, compact, parity_batch, temperature)
        if change <= FLOAT16_LIMIT:
            proto = compact
            provenance.update(weights="float16 storage, float32 compute",
                              float16_max_probability_change=float(f"{change:.3g}"))
        else:
            log.warning("%s: float16 weights move a probability by %.2e (limit %.0e): kept float32", task, change,
                        FLOAT16_LIMIT)
    config = PackageConfig(**{**config.__dict__, "provenance": provenance})
    package_dir = write_package(out / "packages" / task, proto, config, render_model_card(config, None))
    log.info("%s: %s, temperature %.3f, threshold %s, parity %.2e, weights %s -> %s", task, json.dumps(choice),
             temperature, threshold, parity, provenance["weights"], package_dir)
    return package_dir


def _train_loader(args, train_set, samples, epoch, rank, world, steps) -> DataLoader:
    """One epoch's batches for this process: each rank draws its own share with its own seed."""
    seed = args.seed + 1000 * epoch + rank
    if args.imbalance == "sampler":
        keys = [f"{s.source}:{s.dx}" for s in samples]
        sampler = imbalance.balanced_sampler(keys, args.balance_power, seed, num_samples=steps * args.batch_size)
        return DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                          num_workers=args.workers)
    generator = torch.Generator().manual_seed(seed)
    subset = torch.randperm(len(train_set), generator=generator)[: steps * args.batch_size].tolist()
    return DataLoader(torch.utils.data.Subset(train_set, subset), batch_size=args.batch_size, drop_last=True,
                      num_workers=args.workers)


def _train_one_epoch(model, ema, loader, losses, tasks, optimiser, schedule, scaler, device, autocast_dtype,
                     epoch, steps_per_epoch) -> float:
    model.train()
    total, count = 0.0, 0
    updates = (epoch - 1) * steps_per_epoch
    for images, labels in tqdm(loader, desc=f"epoch {epoch}", leave=False, mininterval=30):
        images = images.to(device, memory_format=torch.channels_last, non_blocking=True)
        labels = labels.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            outputs = model(images)
            loss = sum(losses[t](outputs[t].float(), labels[:, i]) for i, t in enumerate(tasks))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        updates += 1
        schedule.step_update(updates)
        if ema is not None:
            ema.update(model.module if isinstance(model, DistributedDataParallel) else model)
        total += loss.item() * len(images)
        count += len(images)
    return round(total / max(count, 1), 4)


@torch.no_grad()
def _predict(net, images: torch.Tensor, device, batch_size: int = 128) -> dict[str, torch.Tensor]:
    net.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device, memory_format=torch.channels_last)
        for task, logits in net(batch).items():
            outputs.setdefault(task, []).append(logits.float().cpu())
    return {task: torch.cat(chunks) for task, chunks in outputs.items()}


def _provenance(args, task, state, choice) -> dict:
    history = state["history"]
    data = "HAM10000 (200x150 copy, models/ham10000_split.csv)"
    if args.isic2017:
        data += " + ISIC 2017 (256x256, challenge split, no group_id across splits)"
    return {
        "data": data,
        "split": str(args.split),
        "code_commit": git_commit(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hardware": state["hardware"],
        "train_minutes": round(state["train_seconds"] / 60, 1),
        "epochs": len(history),
        "selection_metric": ("mean over sources of val balanced accuracy" if task == "lesion_type"
                             else "mean over sources of val ROC AUC"),
        "selection_value": state["best"][task]["metric"],
        "choice": choice,
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


def _autocast_dtype(args, device) -> torch.dtype | None:
    """bf16 on CPU (1.5x faster at 192 px on an AVX-512 BF16 CPU, measured), fp16 on CUDA, none with fp32."""
    if args.precision == "fp32":
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def _hardware(device, threads: int, world: int) -> str:
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
