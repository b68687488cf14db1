"""Turn a trained torch module into a checked ONNX graph with its config: what every trainer ships.

Like timm's `onnx_export(..., check_forward=True)`: export in memory, compare torch with ONNX Runtime on real
images, store the weights as float16 where that moves no probability noticeably, and record both checks in the
config's provenance. The caller then writes the package once (`package_files.write_package`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx
import torch

from skin_demo.config import PackageConfig
from skin_demo.train.export import max_logit_difference, max_probability_change, to_onnx, with_float16_weights

log = logging.getLogger(__name__)

PARITY_LIMIT = 1e-3  # largest |torch - ONNX Runtime| logit difference a package may ship with
FLOAT16_LIMIT = 1e-2  # float16 weight storage ships only if no probability moves more than this


class ParityError(RuntimeError):
    """ONNX Runtime does not reproduce the torch module's logits."""


def build_package(module: torch.nn.Module, config: PackageConfig, sample_batch: np.ndarray, *,
                  float16: bool = True) -> tuple[onnx.ModelProto, PackageConfig]:
    """The exported graph of `module` with `config` embedded, and `config` with the checks in its provenance.

    `sample_batch` (float32 [N, 3, H, W], preprocessed real images) is what both checks run on. Raises
    ParityError when ONNX Runtime differs from torch by more than PARITY_LIMIT in a logit. With `float16`, the
    weights are stored as float16 (float32 compute) unless that moves a probability by more than FLOAT16_LIMIT.
    """
    proto = to_onnx(module, config)
    parity = max_logit_difference(module, proto, sample_batch)
    if parity > PARITY_LIMIT:
        raise ParityError(f"{config.task}: ONNX Runtime differs from torch by {parity:.2e} in a logit "
                          f"(limit {PARITY_LIMIT})")
    checks = {"onnx_parity_max_abs_logit_diff": float(f"{parity:.3g}"), "weights": "float32"}
    if float16:
        compact = with_float16_weights(proto)
        change = max_probability_change(proto, compact, sample_batch, config.temperature)
        if change <= FLOAT16_LIMIT:
            proto = compact
            checks.update(weights="float16 storage, float32 compute",
                          float16_max_probability_change=float(f"{change:.3g}"))
        else:
            log.warning("%s: float16 weights move a probability by %.2e (limit %.0e): kept float32", config.task,
                        change, FLOAT16_LIMIT)
    return proto, dataclasses.replace(config, provenance={**config.provenance, **checks})
