"""Leave one source out: how the check does on a lesion source it was never fitted on.

For each positive source, the head is fitted again (with the chosen penalty) without that source's images,
its threshold chosen on the other sources' validation images, and the left-out source's test images are measured:
how many pass, and how many of those get their own domain. A new clinic's dermatoscope or a new camera is exactly
such a source.
"""

from __future__ import annotations

import numpy as np

from skin_demo.postprocess import DOMAIN_LABELS
from skin_demo.train.lesion_check.data import POSITIVE_TEST_SOURCES, Item
from skin_demo.train.lesion_check.head import Head, fit_mlp, lesion_scores, pass_threshold, probabilities


def leave_one_source_out(head: Head, x_fit: np.ndarray, y_fit: np.ndarray, fit_groups: list[str],
                         x_val_pos: np.ndarray, val_items: list[Item], x_val_neg: np.ndarray, *,
                         test_items: list[Item], x_test: np.ndarray, min_pass: dict[str, float]) -> dict[str, dict]:
    """Per left-out positive source: n test images, pass rate, share of passed given their own domain, and the
    rejection of the validation non-lesions at that fit's threshold."""
    fit_groups_arr = np.array(fit_groups)
    val_groups = np.array([i.group for i in val_items])
    test_groups = np.array([i.group for i in test_items])
    own_domain = np.array([DOMAIN_LABELS.index(i.label) for i in test_items])
    out = {}
    for source in POSITIVE_TEST_SOURCES:
        if not (fit_groups_arr == source).any() or not (test_groups == source).any():
            continue
        keep = fit_groups_arr != source
        layers = fit_mlp(x_fit[keep], y_fit[keep], head.alpha)
        others = val_groups != source
        threshold = pass_threshold(lesion_scores(probabilities(x_val_pos[others], layers)),
                                   [i for i, other in zip(val_items, others) if other], min_pass)
        rows = test_groups == source
        probs = probabilities(x_test[rows], layers)
        passed = lesion_scores(probs) >= threshold
        right = probs[:, :2].argmax(1) == own_domain[rows]
        out[source] = {
            "n": int(rows.sum()),
            "pass_rate": round(float(passed.mean()), 4),
            "domain_rate": round(float(right[passed].mean()), 4) if passed.any() else None,
            "val_rejection": round(float(np.mean(lesion_scores(probabilities(x_val_neg, layers)) < threshold)), 4),
        }
    return out
