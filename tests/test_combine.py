"""A package with a head per task (`python -m skin_demo.train combine`): the merged graph keeps what the heads share
once, gives each head's outputs as its own package did, loads as one session for both slots (bundled or from the
Hub), and answers an image exactly as the two packages did."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from skin_demo.config import CONFIG_FILE, MODEL_FILE, ConfigError, package_heads
from skin_demo.hub import load_models
from skin_demo.modelpack import ModelPack, PackageError, load_package
from skin_demo.predictor import Predictor
from skin_demo.settings import HubSource, Settings
from skin_demo.train.cli import main as train_main
from skin_demo.train.combine import CombineError, combine_packages
from tests.tiny_packages import (
    TASK_LABELS,
    combine_classifiers,
    make_models_dir,
    make_package,
    package_files,
    tiny_config,
)

HEADS = ("malignancy", "lesion_type")


def image_batch(size=(32, 32), n=3) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (n, 3, *size)).astype(np.float32)


def test_combine_keeps_the_shared_nodes_once_and_each_heads_outputs(tmp_path, capsys):
    models = make_models_dir(tmp_path / "models")
    parts = [models / task for task in HEADS]
    assert train_main(["combine", *map(str, parts), "--out", str(tmp_path / "both")]) == 0
    assert "wrote" in capsys.readouterr().out
    heads = load_package(tmp_path / "both", threads=1)
    assert list(heads) == list(HEADS)
    assert heads["malignancy"].graph is heads["lesion_type"].graph  # one session
    with pytest.raises(PackageError, match="load it with load_package"):
        ModelPack.load(tmp_path / "both", threads=1)  # which head would it be?
    batch = image_batch()
    for task in HEADS:
        alone = ModelPack.load(models / task, threads=1)
        assert heads[task].config == alone.config  # each head's config verbatim
        for name, value in alone.outputs(batch).items():
            np.testing.assert_allclose(heads[task].outputs(batch)[name], value, atol=1e-6)
    merged = onnx.load(str(tmp_path / "both" / MODEL_FILE))
    # The feature nodes (pooling, slicing) are shared; each head's Gemm and map are its own, plus one Identity per
    # output.
    separate = sum(len(onnx.load(str(p / MODEL_FILE)).graph.node) for p in parts)
    assert len(merged.graph.node) < separate
    assert sorted(o.name for o in merged.graph.output) == sorted(f"{t}/{n}" for t in HEADS for n in ("logits", "cam"))
    raw = json.loads((tmp_path / "both" / CONFIG_FILE).read_text())
    assert raw["format_version"] == 2 and [h["task"] for h in raw["heads"]] == list(HEADS)
    card = (tmp_path / "both" / "README.md").read_text()
    assert "## The malignancy head" in card and "## The lesion_type head" in card and "`malignancy/logits`" in card
    assert card.startswith("---") and "# skin-demo-both: one network" in card  # named after its folder


def test_combine_refuses_heads_that_cannot_share_one_input(tmp_path):
    make_package(tmp_path / "m", "malignancy", size=(32, 32))
    make_package(tmp_path / "t", "lesion_type", size=(48, 48))
    with pytest.raises(CombineError, match="input differs"):
        combine_packages([tmp_path / "m", tmp_path / "t"], tmp_path / "both")
    assert not (tmp_path / "both").exists()
    with pytest.raises(CombineError, match="different tasks"):
        combine_packages([tmp_path / "m", tmp_path / "m"], tmp_path / "both")


@pytest.mark.parametrize(
    ("heads", "problem"),
    [([], "non-empty list"), (["lesion_type", "lesion_type"], "a second head"),
     (["malignancy", ("lesion_type", (48, 48))], "preprocess differs")],
)  # fmt: skip
def test_a_heads_config_that_cannot_be_one_graph_is_refused(heads, problem):
    def head(task, size=(32, 32)):
        labels = TASK_LABELS[task]
        return tiny_config(task, labels, [c for c in labels if c in ("malignant", "mel")], size)

    configs = [head(h) if isinstance(h, str) else head(*h) for h in heads]
    with pytest.raises(ConfigError, match=problem):
        package_heads({"format_version": 2, "heads": configs})


def test_a_graph_without_a_heads_output_is_refused(tmp_path):
    both = combine_classifiers(make_models_dir(tmp_path / "models"))
    raw = json.loads((both / CONFIG_FILE).read_text())
    raw["heads"][1]["task"] = "other_task"  # the graph has no other_task/logits
    model = onnx.load(str(both / MODEL_FILE))
    model.metadata_props[0].value = json.dumps(raw)
    onnx.save(model, str(both / MODEL_FILE))
    (both / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="no output 'other_task/logits'"):
        load_package(both, threads=1)


def test_a_combined_bundled_package_fills_both_slots_with_one_session_and_the_same_answers(tmp_path):
    separate = load_models(Settings(models_dir=make_models_dir(tmp_path / "separate"), threads=1))
    combined_dir = make_models_dir(tmp_path / "combined")
    combine_classifiers(combined_dir)
    combined = load_models(Settings(models_dir=combined_dir, threads=1))
    assert combined["malignancy"].graph is combined["lesion_type"].graph
    assert combined["malignancy"].source == "bundled combined/classifiers"
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    want = Predictor.from_models(separate).predict(photo).to_json()
    got = Predictor.from_models(combined).predict(photo).to_json()
    del want["timings_ms"], got["timings_ms"]
    assert got == want


def test_both_slots_naming_one_hub_package_download_it_once(hub, tmp_path):
    repo = "skin-demo/classifiers"
    both = combine_classifiers(make_models_dir(tmp_path / "published"))
    sha = hub.add_commit(repo, package_files(both))
    settings = Settings(models_dir=make_models_dir(tmp_path / "bundled"), threads=1,
                        hub={task: HubSource(repo, sha) for task in HEADS})  # fmt: skip
    models = load_models(settings)
    assert models.notices == {}
    assert models["malignancy"].source == models["lesion_type"].source == f"hub {repo}@{sha}"
    assert models["malignancy"].graph is models["lesion_type"].graph
    model_gets = [path for method, path in hub.requests if method == "GET" and path.endswith(f"/{MODEL_FILE}")]
    assert len(model_gets) == 1, model_gets


def test_a_single_task_config_marked_as_several_heads_is_refused():
    config = tiny_config("lesion_type", TASK_LABELS["lesion_type"], ["mel"], (32, 32))
    with pytest.raises(ConfigError, match="only format_version and heads; found .*'labels'"):
        package_heads({**config, "format_version": 2})
