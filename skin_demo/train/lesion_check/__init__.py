"""The "is this a skin-lesion close-up?" package (models/lesion_check): `python -m skin_demo.train lesion-check`.

One job per module: `data` (the images and their split), `augment` (the nuisances), `features` (the frozen
feature network and its cached extraction), `head` (the logistic regression and its threshold), `measure` (test
numbers through the serving path), `table` and `card` (what the package reports), `pipeline` (`fit`: all of it
in order) and `cli` (the command).
"""

from __future__ import annotations

from skin_demo.train.lesion_check.augment import nuisance
from skin_demo.train.lesion_check.cli import register, run
from skin_demo.train.lesion_check.head import fit_logistic_regression, linear_head, p_lesion

__all__ = ["fit_logistic_regression", "linear_head", "nuisance", "p_lesion", "register", "run"]
