"""`python -m skin_demo.train publish` against the Hub stand-in (a real HTTP server for the real client)."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard, model_info
from huggingface_hub.errors import RepositoryNotFoundError

from skin_demo.hub import load_from_hub
from skin_demo.modelpack import ModelPack, load_package
from skin_demo.train import publish
from skin_demo.train.evaluate import evaluate_package, held_out_sets, record_evaluation
from skin_demo.train.metrics import compute_report
from skin_demo.train.publish import PublishError, publish_package
from skin_demo.train.report import write_report
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.fake_isic import make_fake_isic2017
from tests.tiny_packages import combine_classifiers, make_models_dir, make_package

TOKEN = "hf_test_token"
REPO = "skin-demo/malignancy-test"
HEADS = ("malignancy", "lesion_type")


@pytest.fixture
def held_out(tmp_path):
    """Synthetic held-out sets of both sources (HAM10000 and ISIC 2017), as `evaluate` reads them."""
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    split = write_fake_split(ham, tmp_path / "split.csv")
    isic = make_fake_isic2017(tmp_path / "isic2017", per_class_and_split=2, size=48)
    return held_out_sets(ham, split, isic)


@pytest.fixture
def package(tmp_path, held_out):
    """A tiny malignancy package, evaluated on synthetic data of both sources as `evaluate` would leave it."""
    folder = make_package(tmp_path / "pkg", "malignancy", config_overrides={"decision_threshold": 0.4})
    record_evaluation(folder, evaluate_package(folder, held_out))
    return folder


@pytest.fixture
def classifiers(tmp_path, held_out):
    """The tiny malignancy and lesion-type packages, each evaluated, then combined into one with a head each."""
    models = make_models_dir(tmp_path / "models")
    for task in HEADS:
        record_evaluation(models / task, evaluate_package(models / task, held_out))
    return combine_classifiers(models)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    publish.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["publish", *map(str, argv)])
    return args.func(args)


def test_publish_uploads_the_package_and_the_app_can_load_the_pinned_commit(package, hub, capsys):
    assert _cli(package, "--repo", REPO, "--token", TOKEN) == 0
    out = capsys.readouterr().out
    files = hub.repo_files(REPO)
    expected = {"model.onnx", "config.json", "README.md", "eval/metrics.json", "eval/EVAL.md",
                "eval/ham10000_confusion_matrix.png", "eval/ham10000_roc.png",
                "eval/isic2017_confusion_matrix.png", "eval/isic2017_roc.png"}
    assert set(files) == expected | {".gitattributes"}
    for name in expected:
        assert files[name] == (package / name).read_bytes(), name
    sha = next(line.split()[-1] for line in out.splitlines() if line.startswith("commit: "))
    assert len(sha) == 40
    assert f"pinned revision: {REPO}@{sha}" in out
    assert f"SKIN_DEMO_MALIGNANCY_REPO={REPO}" in out and f"SKIN_DEMO_MALIGNANCY_REVISION={sha}" in out
    assert any(h == f"Bearer {TOKEN}" for h in hub.auth_headers)
    # The serving side downloads exactly that commit and accepts it.
    assert load_from_hub(REPO, sha, endpoint=hub.endpoint)["malignancy"].config == ModelPack.load(package).config
    # The card on the Hub names the repo and carries the evaluation of both sources.
    card = ModelCard(files["README.md"].decode())
    assert card.data.model_name == "malignancy-test"
    assert f'snapshot_download("{REPO}"' in card.text
    by_source = {}
    for r in card.data.eval_results:
        by_source.setdefault(r.dataset_type, set()).add(r.metric_type)
    assert by_source["HAM10000"] >= {"balanced_accuracy", "roc_auc", "recall", "specificity"}
    assert by_source["ISIC-2017"] >= {"roc_auc", "recall", "specificity"}


def test_dry_run_uploads_and_writes_nothing(package, hub, capsys):
    readme = (package / "README.md").read_bytes()
    assert _cli(package, "--repo", REPO, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: would upload to" in out and "(README.md regenerated)" in out
    for name in ("model.onnx", "config.json", "README.md", "eval/metrics.json", "eval/isic2017_roc.png"):
        assert f"  {name}\n" in out
    assert hub.requests == []
    assert (package / "README.md").read_bytes() == readme


def test_a_broken_package_is_refused_before_any_upload(tmp_path, hub, capsys):
    broken = make_package(tmp_path / "broken", "malignancy", metadata=None)  # no embedded config
    assert _cli(broken, "--repo", REPO, "--token", TOKEN) == 1
    assert "refusing to publish a broken package" in capsys.readouterr().err
    assert hub.requests == []


def test_an_unevaluated_package_needs_an_explicit_flag(tmp_path, hub):
    folder = make_package(tmp_path / "pkg", "lesion_type")
    with pytest.raises(PublishError, match="run `python -m skin_demo.train evaluate"):
        publish_package(folder, REPO, token=TOKEN)
    result = publish_package(folder, REPO, token=TOKEN, allow_unevaluated=True)
    assert set(hub.repo_files(REPO)) == {".gitattributes", "model.onnx", "config.json", "README.md"}
    assert "No evaluation was recorded" in hub.repo_files(REPO)["README.md"].decode()
    assert result.pinned == f"{REPO}@{result.commit_sha}"


def test_metrics_out_of_step_with_the_evaluation_are_refused(package, hub):
    path = package / "eval" / "metrics.json"
    raw = json.loads(path.read_text())
    raw["reports"]["isic2017"]["split"] = "other:test"  # an evaluation config.json does not record
    path.write_text(json.dumps(raw))
    with pytest.raises(PublishError, match="do not match .*re-run evaluate"):
        publish_package(package, REPO, token=TOKEN)
    path.write_text('{"task": "malignancy"}')
    with pytest.raises(PublishError, match="not a per-source evaluation"):
        publish_package(package, REPO, token=TOKEN)
    assert hub.requests == []


def test_a_lesion_check_package_keeps_its_own_card(tmp_path, hub):
    folder = make_package(tmp_path / "lesion_check", "lesion_check", config_overrides={"decision_threshold": 0.5})
    own_card = (folder / "README.md").read_text()
    with pytest.raises(PublishError, match="metrics.json not found"):
        publish_package(folder, REPO, token=TOKEN)
    y = np.array([0, 0, 1, 1])
    p = np.array([0.9, 0.4, 0.3, 0.2])
    write_report(compute_report(y, np.stack([p, 1 - p], 1), ("lesion", "not_lesion"), task="lesion_check",
                                positive_label="lesion", threshold=0.5), folder / "eval")
    result = publish_package(folder, REPO, token=TOKEN)
    files = hub.repo_files(REPO)
    assert not result.card_changed and files["README.md"].decode() == own_card
    assert "eval/metrics.json" in files and "eval/EVAL.md" in files


def test_no_token_is_a_clear_error(package, hub):
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish_package(package, REPO)
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish_package(package, "just-a-name", token=TOKEN)


def test_branch_private_and_stale_eval_files(package, hub):
    (package / "eval" / "old_plot.png").write_bytes(b"\x89PNG stale")
    first = publish_package(package, REPO, branch="candidate", private=True, token=TOKEN)
    assert first.branch == "candidate"
    assert "eval/old_plot.png" in hub.repo_files(REPO, "candidate")
    assert set(hub.repo_files(REPO, "main")) == {".gitattributes"}  # main untouched
    with pytest.raises(RepositoryNotFoundError):
        model_info(REPO, token=False)  # private: invisible without a token
    # The next publish mirrors eval/: a file gone locally is deleted on the Hub too.
    (package / "eval" / "old_plot.png").unlink()
    second = publish_package(package, REPO, branch="candidate", token=TOKEN)
    files = hub.repo_files(REPO, second.commit_sha)
    assert "eval/old_plot.png" not in files and "eval/metrics.json" in files
    assert "eval/old_plot.png" in hub.repo_files(REPO, first.commit_sha)  # history keeps it


def test_a_package_with_a_head_per_task_goes_up_whole_and_serves_both_slots(package, classifiers, hub, capsys,
                                                                            monkeypatch):
    publish_package(package, REPO, token=TOKEN)  # the repo held the single-task package, with a flat eval/
    (classifiers / "eval" / "malignancy" / ".DS_Store").write_bytes(b"not for the Hub")
    card = (classifiers / "README.md").read_bytes()
    messages = []
    upload_folder = HfApi.upload_folder

    def spy(self, **kwargs):
        messages.append(kwargs["commit_message"])
        return upload_folder(self, **kwargs)

    monkeypatch.setattr(HfApi, "upload_folder", spy)
    assert _cli(classifiers, "--repo", REPO, "--dry-run") == 0
    dry = capsys.readouterr().out
    assert "  eval/lesion_type/metrics.json\n" in dry and ".DS_Store" not in dry and "regenerated" not in dry
    assert _cli(classifiers, "--repo", REPO, "--token", TOKEN) == 0
    out = capsys.readouterr().out
    files = hub.repo_files(REPO)
    local = {p.relative_to(classifiers).as_posix() for p in classifiers.rglob("*") if p.is_file()} - {
        "eval/malignancy/.DS_Store"}
    assert set(files) == local | {".gitattributes"}  # the flat eval/ of the single-task package is gone
    assert {"eval/malignancy/metrics.json", "eval/lesion_type/metrics.json", "eval/lesion_type/EVAL.md"} <= local
    for name in local:
        assert files[name] == (classifiers / name).read_bytes(), name
    assert files["README.md"] == card  # the card combine wrote, not one head's
    assert messages == ["skin-demo malignancy + lesion_type package (tiny_test_gemm, a head per task)"]
    sha = next(line.split()[-1] for line in out.splitlines() if line.startswith("commit: "))
    for task in ("MALIGNANCY", "LESION_TYPE"):
        assert f"  SKIN_DEMO_{task}_REPO={REPO}\n" in out and f"  SKIN_DEMO_{task}_REVISION={sha}\n" in out
    heads = load_from_hub(REPO, sha, endpoint=hub.endpoint)
    assert list(heads) == list(HEADS) and heads["malignancy"].graph is heads["lesion_type"].graph
    local_heads = load_package(classifiers, threads=1)
    assert all(heads[task].config == local_heads[task].config for task in HEADS)


def test_each_head_needs_its_evaluation_and_the_combined_card(classifiers, hub):
    (classifiers / "README.md").unlink()
    with pytest.raises(PublishError, match=r"README.md not found: .*run `python -m skin_demo.train combine"):
        publish_package(classifiers, REPO, token=TOKEN)
    path = classifiers / "eval" / "lesion_type" / "metrics.json"
    raw = json.loads(path.read_text())
    raw["reports"]["isic2017"]["split"] = "other:test"
    path.write_text(json.dumps(raw))
    with pytest.raises(PublishError, match=r"\(lesion_type head\) metrics .* do not match .*combine again"):
        publish_package(classifiers, REPO, token=TOKEN)
    shutil.rmtree(classifiers / "eval" / "lesion_type")
    with pytest.raises(PublishError, match="lesion_type/metrics.json not found: evaluate the lesion_type package"):
        publish_package(classifiers, REPO, token=TOKEN)
    with pytest.raises(PublishError, match="README.md not found"):
        publish_package(classifiers, REPO, token=TOKEN, allow_unevaluated=True)
    assert hub.requests == []
