"""Turn a trained torch module into a checked ONNX graph with its config: what every trainer ships.

Like timm's `onnx_export(..., check_forward=True)`: export in memory, compare torch with ONNX Runtime on real
images, store the weights in the smallest form that moves no probability noticeably (int8, else float16:
`weight_storage.compact_weights`), and record both checks in the config's provenance. The caller then writes the
package once (`package_files.write_package`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import torch

from skin_demo.config import PackageConfig
from skin_demo.train.attention_export import with_attention_config, with_attention_output
from skin_demo.train.export import max_logit_difference, to_onnx
from skin_demo.train.weight_storage import FLOAT32, compact_weights

PARITY_LIMIT = 1e-3  # largest |torch - ONNX Runtime| logit difference a package may ship with


class ParityError(RuntimeError):
    """ONNX Runtime does not reproduce the torch module's logits."""


def build_package(module: torch.nn.Module, config: PackageConfig, sample_batch: np.ndarray, *,
                  compact: bool = True, attention: bool = True) -> tuple[onnx.ModelProto, PackageConfig]:
    """The exported graph of `module` with `config` embedded, and `config` with the checks in its provenance.

    With `attention` (classifiers that pool their last feature map into a linear head), the graph also gives the
    class-activation map (`attention_export`), and the config names it.

    `sample_batch` (float32 [N, 3, H, W], preprocessed real images) is what both checks run on. Raises
    ParityError when ONNX Runtime differs from torch by more than PARITY_LIMIT in a logit. With `compact`, the
    weights are stored as int8 or float16 (float32 compute) where that keeps the probabilities
    (`weight_storage.compact_weights`).
    """
    if attention:
        config = with_attention_config(config)
    proto = to_onnx(module, config)
    if attention:
        proto = with_attention_output(proto)
    parity = max_logit_difference(module, proto, sample_batch)
    if parity > PARITY_LIMIT:
        raise ParityError(f"{config.task}: ONNX Runtime differs from torch by {parity:.2e} in a logit "
                          f"(limit {PARITY_LIMIT})")
    checks = {"onnx_parity_max_abs_logit_diff": float(f"{parity:.3g}"), "weights": FLOAT32}
    if compact:
        proto, storage = compact_weights(proto, sample_batch, config.temperature, config.task)
        checks.update(storage)
    return proto, dataclasses.replace(config, provenance={**config.provenance, **checks})
