"""`python -m skin_demo.train publish` against the Hub stand-in (a real HTTP server for the real client)."""

from __future__ import annotations

import argparse

import pytest
from huggingface_hub import ModelCard, model_info
from huggingface_hub.errors import RepositoryNotFoundError

from skin_demo.hub import load_from_hub
from skin_demo.modelpack import ModelPack
from skin_demo.train import publish
from skin_demo.train.data import read_ham10000, read_split
from skin_demo.train.evaluate import evaluate_package, record_evaluation, select_samples
from skin_demo.train.publish import PublishError, publish_package
from tests.fake_ham import make_fake_ham10000, write_fake_split
from tests.tiny_packages import make_package

TOKEN = "hf_test_token"
REPO = "skin-demo/malignancy-test"


@pytest.fixture
def package(tmp_path):
    """A tiny malignancy package, evaluated on synthetic data as `evaluate` would leave it."""
    ham = make_fake_ham10000(tmp_path / "ham", per_class=6)
    split = write_fake_split(ham, tmp_path / "split.csv")
    folder = make_package(tmp_path / "pkg", "malignancy", config_overrides={"decision_threshold": 0.4})
    samples = select_samples(read_ham10000(ham), read_split(split), "test")
    record_evaluation(folder, evaluate_package(folder, samples, split="fake_split.csv:test"))
    return folder


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
                "eval/confusion_matrix.png", "eval/per_class_f1.png", "eval/roc.png"}
    assert set(files) == expected | {".gitattributes"}
    for name in expected:
        assert files[name] == (package / name).read_bytes(), name
    sha = next(line.split()[-1] for line in out.splitlines() if line.startswith("commit: "))
    assert len(sha) == 40
    assert f"pinned revision: {REPO}@{sha}" in out
    assert f"SKIN_DEMO_MALIGNANCY_REPO={REPO}" in out and f"SKIN_DEMO_MALIGNANCY_REVISION={sha}" in out
    assert any(h == f"Bearer {TOKEN}" for h in hub.auth_headers)
    # The serving side downloads exactly that commit and accepts it.
    pack = load_from_hub(REPO, sha, endpoint=hub.endpoint)
    assert pack.config == ModelPack.load(package).config
    # The card on the Hub names the repo and carries the evaluation.
    card = ModelCard(files["README.md"].decode())
    assert card.data.model_name == "malignancy-test"
    assert {r.metric_type for r in card.data.eval_results} >= {"balanced_accuracy", "roc_auc", "recall"}


def test_dry_run_uploads_and_writes_nothing(package, hub, capsys):
    readme = (package / "README.md").read_bytes()
    assert _cli(package, "--repo", REPO, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: would upload to" in out and "(README.md regenerated)" in out
    for name in ("model.onnx", "config.json", "README.md", "eval/metrics.json", "eval/roc.png"):
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
    assert "No evaluation report was recorded" in hub.repo_files(REPO)["README.md"].decode()
    assert result.pinned == f"{REPO}@{result.commit_sha}"


def test_metrics_out_of_step_with_the_report_are_refused(package, hub):
    (package / "eval" / "metrics.json").write_text(
        (package / "eval" / "metrics.json").read_text().replace('"split": "fake_split.csv:test"', '"split": "other"')
    )
    with pytest.raises(PublishError, match="re-run evaluate"):
        publish_package(package, REPO, token=TOKEN)
    assert hub.requests == []


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
