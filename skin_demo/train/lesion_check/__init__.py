"""The image-domain check (models/lesion_check: dermoscopy / clinical / not_lesion): `python -m skin_demo.train
lesion-check`.

One job per module: `data` (the images and their split), `augment` (the nuisances), `features` (the frozen
feature network and its cached extraction), `head` (the MLP and its threshold), `loso` (each
positive source left out once), `measure` (test numbers through the serving path), `table` and `card` (what the
package reports), `pipeline` (`fit`: all of it in order) and `cli` (the command).
"""

from __future__ import annotations

from skin_demo.train.lesion_check.augment import nuisance
from skin_demo.train.lesion_check.cli import register, run
from skin_demo.train.lesion_check.head import fit_mlp, probabilities, torch_head

__all__ = ["fit_mlp", "nuisance", "probabilities", "register", "run", "torch_head"]
