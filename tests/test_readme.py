"""What the README and the Space card say about the bundled models comes from the packages: the thresholds of the
API example, the Space card's model list. So they cannot go stale when the models change."""

from __future__ import annotations

import json
import re

import yaml

from skin_demo.modelpack import ModelPack, load_package
from tests.conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _api_example() -> dict:
    section = README[README.index("## API usage"):]
    return json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))


def test_the_api_example_quotes_the_bundled_thresholds():
    example = _api_example()
    malignancy = load_package(REPO_ROOT / "models" / "classifiers")["malignancy"].config
    check = ModelPack.load(REPO_ROOT / "models" / "lesion_check").config
    flag = example["malignancy_flag"]
    assert flag["threshold"] == malignancy.decision_thresholds[flag["domain"]]
    assert flag["score_from"] == malignancy.decision_scores[flag["domain"]]
    assert example["lesion_check"]["threshold"] == check.decision_threshold
    assert list(example["image_domain"]["probabilities"]) == list(check.labels)


def test_the_space_card_lists_a_hub_repo_per_bundled_package():
    front_matter = yaml.safe_load(README.split("---\n")[1])
    bundled = sorted(p.name for p in (REPO_ROOT / "models").iterdir() if (p / "config.json").is_file())
    assert sorted(repo.split("/")[1] for repo in front_matter["models"]) == [
        f"skin-demo-{task.replace('_', '-')}" for task in bundled]
    assert len(front_matter["short_description"]) <= 60  # the Hub refuses longer ones
