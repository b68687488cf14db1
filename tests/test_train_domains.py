"""Training across image domains: the sampler leaves no domain's class prior to learn, the phone look changes a
dermoscopy image the way a phone photo differs from it, and the malignancy rule is chosen per domain."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from skin_demo.train.data import Sample
from skin_demo.train.decision import choose_domain_decisions, lowest_group_threshold
from skin_demo.train.imbalance import domain_class_weights
from skin_demo.train.phone_look import PhoneLook, fill_vignette, skin_colour
from skin_demo.train.selection import choose_logit_adjustment, class_log_prior
from skin_demo.train.task_nets import LogitAdjusted


def _samples(counts: dict[tuple[str, str, str, bool], int]) -> list[Sample]:
    out = []
    for (domain, source, dx, malignant), n in counts.items():
        out += [Sample(f"{source}{dx}{i}", Path("x.jpg"), None, dx or None, malignant, source, domain)
                for i in range(n)]
    return out


def test_each_domain_draws_benign_and_malignant_alike_whatever_its_prior():
    samples = _samples({
        ("dermoscopy", "ham10000", "nv", False): 4000, ("dermoscopy", "ham10000", "mel", True): 500,
        ("dermoscopy", "isic2017", "nv", False): 900, ("dermoscopy", "isic2017", "mel", True): 250,
        ("clinical", "clinical", "mel", True): 130, ("clinical", "clinical", "", True): 30,  # scc: no HAM code
        ("clinical", "clinical", "nv", False): 110,
    })
    weights = domain_class_weights(samples, power=0.5).numpy()
    assert weights.sum() == pytest.approx(1.0)
    share = defaultdict(float)
    for sample, weight in zip(samples, weights):
        share[sample.domain, sample.malignant] += weight
        share[sample.domain] += weight
    # Clinical is 59 % malignant here and dermoscopy 13 %: drawn, both are half and half.
    for domain in ("dermoscopy", "clinical"):
        assert share[domain, True] == pytest.approx(share[domain, False])
    # Domains by size ** 0.5: 5650 dermoscopy images against 270 clinical ones.
    assert share["clinical"] / share["dermoscopy"] == pytest.approx((270 / 5650) ** 0.5)
    # Within a domain's malignant side, (source, class) groups by size ** 0.5; within a group every image alike.
    ham_mel = weights[[s.source == "ham10000" and s.dx == "mel" for s in samples]]
    isic_mel = weights[[s.source == "isic2017" and s.dx == "mel" for s in samples]]
    assert np.ptp(ham_mel) == 0 and ham_mel.sum() / isic_mel.sum() == pytest.approx((500 / 250) ** 0.5)


def _dermoscopy_like(size: int = 120) -> torch.Tensor:
    """Pinkish skin with a brown blob in the middle and the dark round vignette of a dermatoscope."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    radius = (ys ** 2 + xs ** 2).sqrt()
    image = torch.tensor([0.85, 0.65, 0.6])[:, None, None].expand(3, size, size).clone()
    image[:, radius < 0.3] = torch.tensor([0.4, 0.25, 0.15])[:, None]
    image[:, radius > 0.95] = 0.02
    return (image * 255).round().to(torch.uint8)


def test_the_vignette_is_filled_with_the_skin_around_the_lesion():
    image = _dermoscopy_like().float() / 255
    skin = skin_colour(image)
    assert torch.allclose(skin, torch.tensor([0.85, 0.65, 0.6]), atol=0.01)
    filled = fill_vignette(image, skin)
    assert image[:, 0, 0].max() < 0.05 and torch.allclose(filled[:, 0, 0], skin, atol=0.02)
    assert torch.equal(filled[:, 60, 60], image[:, 60, 60])  # the lesion is untouched


def test_phone_look_is_seeded_keeps_the_image_format_and_changes_most_images():
    image = _dermoscopy_like()
    first = [PhoneLook(p=1.0, seed=k)(image) for k in range(12)]
    again = [PhoneLook(p=1.0, seed=k)(image) for k in range(12)]
    assert all(a.shape == image.shape and a.dtype == torch.uint8 for a in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sum(not torch.equal(a, image) for a in first) >= 11
    assert torch.equal(PhoneLook(p=0.0, seed=0)(image), image)


def test_lowest_group_threshold_meets_the_target_on_every_group_and_rounds_down():
    rng = np.random.default_rng(0)
    groups = np.repeat(["a", "b"], 200)
    positive = rng.random(400) < 0.3
    scores = np.where(positive, rng.uniform(0.2, 1.0, 400), rng.uniform(0.0, 0.8, 400))
    scores[groups == "b"] *= 0.5  # group b's scores run lower: its threshold must be the one served
    threshold, per_group = lowest_group_threshold(positive, scores, groups, 0.9)
    assert threshold == min(per_group.values()) or min(per_group.values()) - threshold < 1e-4
    for g in ("a", "b"):
        rows = (groups == g) & positive
        assert np.mean(scores[rows] >= threshold) >= 0.9


def test_each_domain_gets_the_score_that_ranks_it_better_and_its_own_threshold():
    rng = np.random.default_rng(1)
    n = 600
    domains = np.array(["dermoscopy"] * 400 + ["clinical"] * 200)
    sources = np.array(["ham10000"] * 250 + ["isic2017"] * 150 + ["clinical"] * 200)
    malignant = rng.random(n) < 0.4
    signal = malignant + rng.normal(0, 0.6, n)
    noise = rng.normal(0, 1, n)
    # The binary head ranks dermoscopy well and clinical photos badly; the lesion-type sum the other way round.
    binary = np.where(domains == "dermoscopy", signal, noise)
    lesion_sum = np.where(domains == "clinical", signal, noise)
    squash = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    decisions = choose_domain_decisions({"binary_head": squash(binary), "lesion_type_sum": squash(lesion_sum)},
                                        malignant, sources, domains, min_sensitivity=0.9)
    assert (decisions["dermoscopy"].score, decisions["clinical"].score) == ("binary_head", "lesion_type_sum")
    assert set(decisions["dermoscopy"].threshold_per_source) == {"ham10000", "isic2017"}
    clinical_rows = (domains == "clinical") & malignant
    assert np.mean(squash(lesion_sum)[clinical_rows] >= decisions["clinical"].threshold) >= 0.9


def test_the_class_prior_is_what_the_sampler_draws_and_unlabelled_samples_do_not_count():
    labels = np.array([0, 0, 0, 1, -100])
    weights = np.array([0.1, 0.1, 0.1, 0.3, 0.4])  # the unlabelled sample's weight must not count
    assert np.allclose(class_log_prior(labels, weights, 3).exp().numpy(), [0.5, 0.5, 1e-8], atol=1e-9)


def test_logit_adjustment_is_chosen_on_the_tuning_rows_and_subtracted_in_the_graph():
    class Rows:  # the part of Validation choose_logit_adjustment uses: balanced accuracy on the tuning rows
        def lesion_type_accuracy(self, logits, *, tuning):
            assert tuning
            return {"selection": float((logits.argmax(1) == torch.tensor([0, 1, 1, 1])).float().mean())}

    # Class 0 is frequent in training and wins every image; subtracting tau x log prior lets class 1 through.
    logits = torch.tensor([[2.0, 0.0], [1.0, 0.5], [1.0, 0.6], [1.2, 0.3]])
    log_prior = torch.log(torch.tensor([0.9, 0.1]))
    tau, by_tau = choose_logit_adjustment(logits, Rows(), log_prior)
    assert by_tau["0.0"] == 0.25 and tau > 0 and by_tau[str(tau)] == max(by_tau.values())
    adjusted = LogitAdjusted(torch.nn.Identity(), tau * log_prior)
    assert torch.allclose(adjusted(logits), logits - tau * log_prior)
