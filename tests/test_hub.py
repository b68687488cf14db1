"""Model packages from the Hub (a real HTTP stand-in, the real huggingface_hub client): pinning, cache, fallback."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from skin_demo.hub import HubError, load_from_hub
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.settings import HubSource, Settings, load_models
from skin_demo.ui import build_app
from tests.tiny_packages import make_models_dir, make_package, package_files, tiny_config

REPO = "skin-demo/lesion-type"
LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def resolve_gets(hub) -> list[str]:
    return [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]


@pytest.fixture
def published(hub, tmp_path):
    """Two commits of a lesion-type package: v1 (tagged "v1", temperature 1) and v2 on main (temperature 3)."""
    v1 = make_package(tmp_path / "v1", "lesion_type")
    sha1 = hub.add_commit(REPO, package_files(v1), message="v1")
    hub.create_tag(REPO, "v1", sha1)
    v2 = make_package(tmp_path / "v2", "lesion_type", config_overrides={"temperature": 3.0})
    sha2 = hub.add_commit(REPO, package_files(v2), message="v2")
    return {"v1": (sha1, v1), "v2": (sha2, v2)}


def test_download_pins_the_revision_by_sha_or_tag(hub, published):
    sha1, v1 = published["v1"]
    sha2, _ = published["v2"]
    by_sha = load_from_hub(REPO, sha1, threads=1)
    assert by_sha.source == f"hub {REPO}@{sha1}"
    assert by_sha.config.temperature == 1.0
    by_tag = load_from_hub(REPO, "v1", threads=1)
    assert by_tag.source == f"hub {REPO}@{sha1} (revision v1)"
    assert by_tag.config.temperature == 1.0
    assert load_from_hub(REPO, sha2, threads=1).config.temperature == 3.0
    assert load_from_hub(REPO, "main", threads=1).config.temperature == 3.0
    # Same bytes as the local package, same answers.
    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(by_sha.logits(batch), ModelPack.load(v1, threads=1).logits(batch))
    assert by_sha.readme is not None


def test_second_load_is_served_from_the_cache(hub, published):
    sha1, _ = published["v1"]
    load_from_hub(REPO, sha1, threads=1)
    assert len(resolve_gets(hub)) == 3  # config.json, model.onnx, README.md
    hub.requests.clear()
    load_from_hub(REPO, sha1, threads=1)
    assert hub.requests == []  # a commit sha already in the cache needs no request at all
    load_from_hub(REPO, "v1", threads=1)
    assert resolve_gets(hub) == []  # a tag is re-checked (HEAD) but nothing is downloaded again


def test_unreachable_hub_uses_a_cached_copy_of_the_same_revision(hub, published):
    sha1, _ = published["v1"]
    load_from_hub(REPO, "v1", threads=1)
    hub.set_fault("down")
    pack = load_from_hub(REPO, "v1", threads=1)
    assert pack.source.startswith(f"hub {REPO}@{sha1} (revision v1) (from the cache; the Hub did not answer")
    with pytest.raises(HubError, match="download failed"):
        load_from_hub(REPO, "main", threads=1)  # never downloaded: nothing to fall back on in the cache


def test_offline_mode_uses_the_cache_only(hub, published, monkeypatch):
    sha1, _ = published["v1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=REPO):
        load_from_hub(REPO, sha1, threads=1)  # nothing cached yet
    monkeypatch.delenv("HF_HUB_OFFLINE")
    load_from_hub(REPO, sha1, threads=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    assert load_from_hub(REPO, sha1, threads=1).config.labels == LABELS
    assert hub.requests == []


def settings_for(tmp_path, revision: str, **kwargs) -> Settings:
    return Settings(
        models_dir=make_models_dir(tmp_path / "bundled"),
        hub={"lesion_type": HubSource(REPO, revision)},
        hub_timeout_s=kwargs.pop("hub_timeout_s", 1.0),
        threads=1,
        **kwargs,
    )


def test_configured_hub_package_is_used(hub, published, tmp_path):
    sha2, _ = published["v2"]
    models = load_models(settings_for(tmp_path, sha2))
    assert models.lesion_type.source == f"hub {REPO}@{sha2}"
    assert models.malignancy.source.startswith("bundled ")
    assert models.notices == {}


def fall_back(tmp_path, revision, caplog, **kwargs):
    with caplog.at_level(logging.WARNING, logger="skin_demo.settings"):
        start = time.perf_counter()
        models = load_models(settings_for(tmp_path, revision, **kwargs))
        elapsed = time.perf_counter() - start
    assert models.lesion_type.source.startswith("bundled ")
    notice = models.notices["lesion_type"]
    assert REPO in notice and "using the bundled model" in notice
    assert any("falling back" in r.getMessage() and REPO in r.getMessage() for r in caplog.records)
    return models, notice, elapsed


@pytest.mark.parametrize("fault", ["down", "error500", "truncate"])
def test_unreachable_or_broken_hub_falls_back_to_the_bundled_package(hub, published, tmp_path, caplog, fault):
    sha1, _ = published["v1"]
    hub.set_fault(fault)
    _, notice, elapsed = fall_back(tmp_path, sha1, caplog)
    assert "download failed" in notice or "model.onnx" in notice, notice
    assert elapsed < 30


def test_slow_hub_times_out_quickly_and_falls_back(hub, published, tmp_path, caplog):
    sha1, _ = published["v1"]
    hub.set_fault("slow", delay_s=10.0)
    _, notice, elapsed = fall_back(tmp_path, sha1, caplog, hub_timeout_s=0.3)
    assert elapsed < 8, f"took {elapsed:.1f} s: the per-request timeout was not applied"
    assert "download failed" in notice


def test_overall_deadline_bounds_a_slow_download(hub, published, tmp_path, caplog):
    sha1, _ = published["v1"]
    hub.set_fault("slow", delay_s=2.0)
    _, notice, elapsed = fall_back(tmp_path, sha1, caplog, hub_timeout_s=30.0, hub_deadline_s=0.5)
    assert "did not finish within 0.5 s" in notice
    assert elapsed < 2
    # The abandoned download goes on in its daemon thread; let it finish here rather than in a later test.
    hub.set_fault(None)
    for thread in threading.enumerate():
        if thread.name == "hub-download":
            thread.join(timeout=20)


def test_hub_package_with_wrong_labels_falls_back(hub, tmp_path, caplog):
    folder = make_package(tmp_path / "bad", "lesion_type")
    # config.json lists other labels than the model was exported with (and embeds).
    wrong = tiny_config("lesion_type", ("a", "b", "c", "d", "e", "f", "g"), ("a",))
    (folder / "config.json").write_text(__import__("json").dumps(wrong))
    sha = hub.add_commit(REPO, package_files(folder))
    _, notice, _ = fall_back(tmp_path, sha, caplog)
    assert "model.onnx" in notice and "differs from" in notice and "labels" in notice


def test_hub_package_for_the_wrong_task_falls_back(hub, tmp_path, caplog):
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "m", "malignancy")))
    _, notice, _ = fall_back(tmp_path, sha, caplog)
    assert "expected 'lesion_type'" in notice


def test_unknown_repo_or_revision_falls_back(hub, published, tmp_path, caplog):
    _, notice, _ = fall_back(tmp_path, "no-such-tag", caplog)
    assert "no-such-tag" in notice


def test_page_shows_the_fallback_reason(hub, published, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    sha1, _ = published["v1"]
    hub.set_fault("down")
    models, notice, _ = fall_back(tmp_path, sha1, caplog)
    demo = build_app(Settings(examples_dir=tmp_path / "none"), models=models)
    (box,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-notice"]
    assert REPO in box.value and "bundled model" in box.value
    (listing,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models"]
    assert "bundled" in listing.value


def test_a_broken_hub_package_is_a_package_error_naming_the_file(hub, tmp_path):
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "p", "lesion_type", metadata=None)))
    with pytest.raises(PackageError, match=r"hub skin-demo/lesion-type@.*model\.onnx.*skin_demo\.config"):
        load_from_hub(REPO, sha, threads=1)


def test_only_the_package_files_are_downloaded(hub, tmp_path):
    """snapshot_download with allow_patterns: other files in the repo (a checkpoint, notes) are never fetched."""
    extra = {"checkpoint.bin": bytes(range(256)) * 64, "notes/training.md": b"# notes"}
    sha = hub.add_commit(REPO, {**package_files(make_package(tmp_path / "p", "lesion_type")), **extra})
    pack = load_from_hub(REPO, sha, threads=1)
    assert sorted(p.name for p in pack.path.iterdir()) == ["README.md", "config.json", "model.onnx"]
    assert sorted(path.rsplit("/", 1)[-1] for path in resolve_gets(hub)) == ["README.md", "config.json", "model.onnx"]


def test_a_repo_without_a_package_is_a_hub_error(hub, tmp_path):
    sha = hub.add_commit(REPO, {"README.md": b"# not a package"})
    with pytest.raises(HubError, match=r"has no config\.json or model\.onnx at this revision"):
        load_from_hub(REPO, sha, threads=1)
