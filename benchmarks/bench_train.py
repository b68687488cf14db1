"""Training throughput (images/s) of the multi-task network for each way of using this CPU's matrix units.

    python -m benchmarks.bench_train [--arch tf_efficientnet_lite0] [--size 224] [--batch 32] [--steps 6]
                                     [--threads 2] [--json FILE]

One training step = forward of both heads, cross-entropy, backward, AdamW update: what `fit` does, on random
images (speed does not depend on the pixels). Settings, each alone and together: fp32 (the baseline), bf16
autocast, `channels_last` memory format, `torch.compile`. Every setting runs in this one process on the same
network and batch; the first steps of each (and torch.compile's compilation) are warm-up and are not timed.
Printed: images/s per setting and its ratio to fp32 measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from benchmarks.common import print_machine, table, write_json
from skin_demo.train.model import MultiTaskNet

SETTINGS = {
    "fp32": dict(bf16=False, channels_last=False, compile=False),
    "bf16": dict(bf16=True, channels_last=False, compile=False),
    "channels_last": dict(bf16=False, channels_last=True, compile=False),
    "bf16 + channels_last": dict(bf16=True, channels_last=True, compile=False),
    "compile": dict(bf16=False, channels_last=False, compile=True),
    "channels_last + compile": dict(bf16=False, channels_last=True, compile=True),
    "bf16 + channels_last + compile": dict(bf16=True, channels_last=True, compile=True),
}


def images_per_second(arch: str, size: int, batch: int, steps: int, warmup: int, *, bf16: bool,
                      channels_last: bool, compile: bool) -> float:
    """Median-free plain throughput: `steps` timed training steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    net = MultiTaskNet(arch, {"lesion_type": 7, "malignancy": 2}, pretrained=False)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format).train()
    model = torch.compile(net) if compile else net
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size).to(memory_format=memory_format)
    labels = {"lesion_type": torch.randint(0, 7, (batch,)), "malignancy": torch.randint(0, 2, (batch,))}

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = model(images)
            loss = sum(torch.nn.functional.cross_entropy(outputs[t].float(), labels[t]) for t in labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    results = {}
    for name, setting in SETTINGS.items():
        if name not in args.settings:
            continue
        warmup = args.warmup + (2 if setting["compile"] else 0)  # compilation happens in the first steps
        results[name] = images_per_second(args.arch, args.size, args.batch, args.steps, warmup, **setting)
        print(f"{name}: {results[name]:.1f} images/s", flush=True)
    baseline = results.get("fp32")
    rows = [[name, f"{value:.1f}", f"{value / baseline:.2f}x" if baseline else "-"] for name, value in results.items()]
    print(table(["setting", "images/s", "vs fp32"], rows))
    return {"arch": args.arch, "size": args.size, "batch": args.batch, "threads": args.threads, "images_per_s": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="tf_efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per setting")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    info, _ = print_machine()
    figures = run(args)
    write_json(args.json, {"machine": info, **figures})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
