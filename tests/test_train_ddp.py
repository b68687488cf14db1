"""`torchrun --nproc_per_node 2 -m skin_demo.train fit`: data-parallel training on CPU (gloo) gives the same kind
of result as one process: same epochs, finite losses, both packages exported with parity, one writer (rank 0)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from skin_demo.modelpack import ModelPack
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import make_fake_isic2017


def _fit_argv(ham, split, isic, out) -> list[str]:
    return ["fit", "--ham", str(ham), "--split", str(split), "--isic2017", str(isic), "--arch", "test_efficientnet",
            "--no-pretrained", "--image-size", "32", "--epochs", "2", "--batch-size", "4", "--threads", "1",
            "--out", str(out)]


@pytest.mark.slow
def test_two_process_run_matches_a_one_process_run(tmp_path):
    ham = make_fake_ham10000(tmp_path / "ham", per_class=4)
    split = write_fake_split(ham, tmp_path / "split.csv")
    isic = make_fake_isic2017(tmp_path / "isic2017")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single, double = tmp_path / "one", tmp_path / "two"
    done = subprocess.run([sys.executable, "-m", "skin_demo.train", *_fit_argv(ham, split, isic, single)],
                          env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, "-m", "skin_demo.train", *_fit_argv(ham, split, isic, double)],
                          env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    one = json.loads((single / "history.json").read_text())
    two = json.loads((double / "history.json").read_text())
    assert [r["epoch"] for r in two["history"]] == [r["epoch"] for r in one["history"]] == [1, 2]
    assert all(r["train_loss"] > 0 for r in two["history"])
    assert "2 x cpu" in two["hardware"][0] and "1 x cpu" in one["hardware"][0]
    for task in ("lesion_type", "malignancy"):
        a, b = ModelPack.load(single / "packages" / task), ModelPack.load(double / "packages" / task)
        assert a.config.labels == b.config.labels and a.config.preprocess == b.config.preprocess
        assert b.config.provenance["onnx_parity_max_abs_logit_diff"] < 1e-3
    # Each rank trains on its own share of the draws: per epoch, half the steps of the single process.
    assert two["history"][0]["steps"] == one["history"][0]["steps"] // 2
