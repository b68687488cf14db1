"""The lesion check's model card comes from its template and the package config: the bundled README.md is what
`render_card` gives for the bundled config.json, and it shows the config's threshold and every recorded row."""

from __future__ import annotations

from huggingface_hub import ModelCard

from skin_demo.config import PackageConfig
from skin_demo.train.card import LICENSE
from skin_demo.train.lesion_check.card import render_card
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "models" / "lesion_check"


def test_bundled_card_is_the_template_rendered_from_the_bundled_config():
    config = PackageConfig.from_json((PACKAGE / "config.json").read_text())
    card = render_card(config)
    assert card == (PACKAGE / "README.md").read_text(), "re-render models/lesion_check/README.md from config.json"

    metadata = ModelCard(card).data
    assert metadata.license == LICENSE and {"lesion-check", config.architecture} <= set(metadata.tags)
    assert f"P(dermoscopy) + P(clinical) >= **{config.decision_threshold:.4f}**" in card
    m = config.metrics
    for category, r in m["per_category"].items():
        assert f"| not a lesion: {category} | {r['n']} | {r['passed']} | reject {r['rejection_rate']:.1%} |" in card
    for r in m["per_source"].values():
        assert f"| {r['n']} | {r['passed']} | pass {r['pass_rate']:.1%} |" in card
    for r in m["leave_one_source_out"].values():
        assert f"| {r['n']} | {r['pass_rate']:.1%} |" in card
    assert f"rejects\n{m['validation']['rejection_rate']:.1%} of the non-lesion photos" in card
    assert f"| Code commit | {config.provenance['code_commit']} |" in card
