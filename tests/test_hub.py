"""Model packages from the Hub (a real HTTP stand-in, the real huggingface_hub client): pinning, cache, fallback,
and the bounds a hostile Hub cannot stretch (byte caps, deadline, commit pins, nothing of the server in notices)."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest

from skin_demo.hub import HubError, Limits, load_from_hub, load_models
from skin_demo.modelpack import ModelPack, PackageError
from skin_demo.settings import HubSource, Settings
from skin_demo.ui import build_app
from tests.hub_standin import Generated
from tests.tiny_packages import make_models_dir, make_package, package_files, tiny_config

REPO = "skin-demo/lesion-type"
LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
MODEL_URL = f"/{REPO}/resolve/{{sha}}/model.onnx"


def load_one(*args, **kwargs) -> ModelPack:
    """load_from_hub for the single-task packages these tests publish: their one ModelPack."""
    (pack,) = load_from_hub(*args, **kwargs).values()
    return pack


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


def test_download_pins_the_revision_by_sha(hub, published):
    sha1, v1 = published["v1"]
    sha2, _ = published["v2"]
    by_sha = load_one(REPO, sha1, threads=1)
    assert by_sha.source == f"hub {REPO}@{sha1}"
    assert by_sha.config.temperature == 1.0
    assert load_one(REPO, sha2, threads=1).config.temperature == 3.0
    # Same bytes as the local package, same answers.
    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(by_sha.logits(batch), ModelPack.load(v1, threads=1).logits(batch))
    assert by_sha.readme is not None


def test_a_branch_or_tag_is_refused_unless_unpinned_revisions_are_allowed(hub, published):
    sha1, _ = published["v1"]
    for revision in ("main", "v1"):
        with pytest.raises(HubError, match="not a 40-hex commit sha"):
            load_one(REPO, revision, threads=1)
    assert resolve_gets(hub) == [], "nothing is downloaded for an unpinned revision"
    by_tag = load_one(REPO, "v1", threads=1, allow_unpinned=True)
    assert by_tag.source == f"hub {REPO}@{sha1} (revision v1)"
    assert load_one(REPO, "main", threads=1, allow_unpinned=True).config.temperature == 3.0


def test_second_load_is_served_from_the_cache(hub, published):
    sha1, _ = published["v1"]
    load_one(REPO, sha1, threads=1)
    assert len(resolve_gets(hub)) == 3  # config.json, model.onnx, README.md
    hub.requests.clear()
    load_one(REPO, sha1, threads=1)
    assert hub.requests == []  # a commit sha already in the cache needs no request at all
    load_one(REPO, "v1", threads=1, allow_unpinned=True)
    assert resolve_gets(hub) == []  # a tag is re-checked but nothing is downloaded again


def test_unreachable_hub_uses_a_cached_copy_of_the_same_revision(hub, published):
    sha1, _ = published["v1"]
    load_one(REPO, "v1", threads=1, allow_unpinned=True)
    hub.set_fault("down")
    pack = load_one(REPO, "v1", threads=1, allow_unpinned=True)
    assert pack.source == f"hub {REPO}@{sha1} (revision v1) (from the cache; the Hub did not answer)"
    with pytest.raises(HubError, match="download failed"):
        load_one(REPO, "main", threads=1, allow_unpinned=True)  # never downloaded: nothing in the cache


def test_offline_mode_uses_the_cache_only(hub, published, monkeypatch):
    sha1, _ = published["v1"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=REPO):
        load_one(REPO, sha1, threads=1)  # nothing cached yet
    monkeypatch.delenv("HF_HUB_OFFLINE")
    load_one(REPO, sha1, threads=1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.requests.clear()
    assert load_one(REPO, sha1, threads=1).config.labels == LABELS
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
    assert models["lesion_type"].source == f"hub {REPO}@{sha2}"
    assert models["malignancy"].source == "bundled bundled/malignancy"
    assert models.notices == {}


def fall_back(tmp_path, revision, caplog, hub=None, **kwargs):
    """load_models with the lesion-type package at `revision`: it must fall back, with a notice naming the repo and
    nothing of this server (no cache path, no Hub URL); returns the models, the notice and the seconds it took."""
    with caplog.at_level(logging.WARNING, logger="skin_demo.hub"):
        start = time.perf_counter()
        models = load_models(settings_for(tmp_path, revision, **kwargs))
        elapsed = time.perf_counter() - start
    assert models["lesion_type"].source.startswith("bundled ")
    notice = models.notices["lesion_type"]
    assert REPO in notice and "using the bundled model" in notice
    assert str(tmp_path) not in notice and "http" not in notice and "127.0.0.1" not in notice, notice
    assert any("falling back" in r.getMessage() and REPO in r.getMessage() for r in caplog.records)
    return models, notice, elapsed


@pytest.mark.parametrize("fault", ["down", "error500", "truncate"])
def test_unreachable_or_broken_hub_falls_back_to_the_bundled_package(hub, published, tmp_path, caplog, fault):
    sha1, _ = published["v1"]
    hub.set_fault(fault)
    _, notice, elapsed = fall_back(tmp_path, sha1, caplog)
    assert "download failed" in notice, notice
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
    # The abandoned request finishes in its daemon thread; let it end here rather than in a later test.
    hub.set_fault(None)
    for thread in threading.enumerate():
        if thread.name == "hub-download":
            thread.join(timeout=20)


def test_hub_package_with_wrong_labels_falls_back(hub, tmp_path, caplog):
    folder = make_package(tmp_path / "bad", "lesion_type")
    # config.json lists other labels than the model was exported with (and embeds).
    wrong = tiny_config("lesion_type", ("a", "b", "c", "d", "e", "f", "g"), ("a",))
    (folder / "config.json").write_text(json.dumps(wrong))
    sha = hub.add_commit(REPO, package_files(folder))
    _, notice, _ = fall_back(tmp_path, sha, caplog)
    differs = "model.onnx: the config embedded in the model differs from config.json (fields: labels, malignant_labels)"
    assert differs in notice


def test_hub_package_for_the_wrong_task_falls_back(hub, tmp_path, caplog):
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "m", "malignancy")))
    _, notice, _ = fall_back(tmp_path, sha, caplog)
    assert "expected 'lesion_type'" in notice


def test_unknown_revision_falls_back(hub, published, tmp_path, caplog):
    _, notice, _ = fall_back(tmp_path, "0" * 40, caplog)
    assert "0" * 40 in notice and "no such revision" in notice


def test_page_shows_the_fallback_reason(hub, published, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    sha1, _ = published["v1"]
    hub.set_fault("down")
    models, notice, _ = fall_back(tmp_path, sha1, caplog)
    demo = build_app(Settings(examples_dir=tmp_path / "none"), models=models)
    (box,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-notice"]
    assert REPO.replace("-", "\\-").replace("/", "\\/") in box.value and "bundled model" in box.value
    (listing,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "models"]
    assert "bundled" in listing.value


def test_a_broken_hub_package_is_a_package_error_naming_the_file_in_the_repo(hub, tmp_path):
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "p", "lesion_type", metadata=None)))
    with pytest.raises(PackageError, match=rf"^hub {REPO}@{sha}: model\.onnx: .*skin_demo\.config") as caught:
        load_one(REPO, sha, threads=1)
    assert "hf_home" not in str(caught.value) and "snapshots" not in str(caught.value)


def test_only_the_package_files_are_downloaded(hub, tmp_path):
    """Other files in the repo (a checkpoint, notes) are never fetched."""
    extra = {"checkpoint.bin": bytes(range(256)) * 64, "notes/training.md": b"# notes"}
    sha = hub.add_commit(REPO, {**package_files(make_package(tmp_path / "p", "lesion_type")), **extra})
    pack = load_one(REPO, sha, threads=1)
    assert sorted(p.name for p in pack.path.iterdir()) == ["README.md", "config.json", "model.onnx"]
    assert sorted(path.rsplit("/", 1)[-1] for path in resolve_gets(hub)) == ["README.md", "config.json", "model.onnx"]


def test_a_repo_without_a_package_is_a_hub_error(hub, tmp_path):
    sha = hub.add_commit(REPO, {"README.md": b"# not a package"})
    with pytest.raises(HubError, match=r"has no config\.json or model\.onnx at this revision"):
        load_one(REPO, sha, threads=1)


# -- bounds: what a hostile Hub cannot make the app download ----------------------------------------------------


def cache_bytes(home) -> int:
    """Bytes under the test's Hugging Face cache (finished blobs and partial downloads alike)."""
    return sum(p.stat().st_size for p in (home / "hub").rglob("*") if p.is_file() and not p.is_symlink())


def big_model_repo(hub, tmp_path, size: int) -> str:
    """A commit whose model.onnx declares `size` bytes (generated as sent: nothing is stored)."""
    files = package_files(make_package(tmp_path / "p", "lesion_type"))
    return hub.add_commit(REPO, {**files, "model.onnx": Generated(size)})


def test_a_file_declared_over_the_cap_is_refused_before_any_byte_of_it(hub, tmp_path, isolated_hf_home):
    """Issue 20, item 2: a repo declaring a 4 GB model.onnx (the Hub's listing says so) had 4.3 GB written to the
    cache before ONNX Runtime refused it. Now not one byte of it is requested."""
    sha = big_model_repo(hub, tmp_path, 4_000_000_000)
    with pytest.raises(HubError, match=r"model\.onnx is 4000\.0 MB, over the limit of 200\.0 MB per file"):
        load_one(REPO, sha, threads=1)
    assert not [p for p in resolve_gets(hub) if p.endswith("model.onnx")]
    assert cache_bytes(isolated_hf_home) < 100_000


def test_a_package_over_its_cap_is_refused_before_downloading(hub, tmp_path):
    files = package_files(make_package(tmp_path / "p", "lesion_type"))
    sha = hub.add_commit(REPO, {**files, "README.md": Generated(900_000)})
    limits = Limits(max_file_bytes=1_000_000, max_package_bytes=500_000)
    with pytest.raises(HubError, match=r"the package is 0\.9 MB, over the limit of 0\.5 MB"):
        load_one(REPO, sha, threads=1, limits=limits)
    assert resolve_gets(hub) == []


def test_a_file_larger_than_declared_is_stopped_while_it_downloads(hub, tmp_path, isolated_hf_home):
    """The listing and the files' headers give their sizes (model.onnx 2 MB); each body goes on without a
    Content-Length, 48 MB longer."""
    sha = big_model_repo(hub, tmp_path, 2_000_000)
    hub.set_fault("oversend", extra_bytes=48_000_000)
    with pytest.raises(HubError, match=r"(README\.md|config\.json|model\.onnx) sent more than .* got at least"):
        load_one(REPO, sha, threads=1, limits=Limits(max_file_bytes=10_000_000, max_package_bytes=20_000_000))
    # huggingface_hub reads 10 MB at a time, and the socket buffers hold a few more: the client hung up far short
    # of the 50 MB on offer.
    assert sum(hub.sent.values()) < 30_000_000
    assert cache_bytes(isolated_hf_home) < 100_000, "the partial file stayed in the cache"


def test_the_deadline_stops_the_transfer_and_removes_its_partial_file(hub, tmp_path, caplog, isolated_hf_home):
    """Issue 20, item 2: with a 2 s deadline the app fell back at 2 s, but the download thread kept writing (to
    4.3 GB) and the file stayed in the cache. Here a 150 MB model drips in at about 6 MB/s past a 1 s deadline."""
    sha = big_model_repo(hub, tmp_path, 150_000_000)
    hub.set_fault("drip", delay_s=0.01)
    _, notice, elapsed = fall_back(tmp_path, sha, caplog, hub_deadline_s=1.0)
    assert "did not finish within 1 s" in notice and elapsed < 3
    url = MODEL_URL.format(sha=sha)
    # The transfer stops at its next read (huggingface_hub reads 10 MB at a time): wait until nothing more is sent.
    sent, waited = -1, 0.0
    while hub.sent.get(url, 0) != sent and waited < 15:
        sent = hub.sent.get(url, 0)
        time.sleep(1.0)
        waited += 1.0
    assert hub.sent.get(url, 0) == sent, "the abandoned transfer is still running"
    assert sent < 30_000_000, f"{sent / 1e6:.0f} MB sent of 150 MB"
    assert not list((isolated_hf_home / "hub").rglob("*.incomplete"))
    assert cache_bytes(isolated_hf_home) < 100_000


def test_a_download_stopped_at_the_deadline_is_completed_by_the_next_load(hub, tmp_path):
    """The files that finished before the deadline stay in the cache; the next load fetches the rest instead of
    taking the incomplete copy for a repo without a model."""
    sha = hub.add_commit(REPO, package_files(make_package(tmp_path / "p", "lesion_type")))
    hub.set_fault("drip", delay_s=0.5)  # README.md, config.json, model.onnx: one piece each, half a second apart
    with pytest.raises(HubError, match="did not finish"):
        load_one(REPO, sha, threads=1, limits=Limits(deadline_s=1.2))
    hub.set_fault(None)
    assert load_one(REPO, sha, threads=1).config.labels == LABELS


def test_a_branch_as_revision_falls_back_and_says_why(hub, published, tmp_path, caplog):
    """Issue 20, item 3: SKIN_DEMO_*_REVISION=main silently served the newest commit; a tag, which can move, was
    taken the same way."""
    settings = Settings.from_env({"SKIN_DEMO_LESION_TYPE_REPO": REPO, "SKIN_DEMO_LESION_TYPE_REVISION": "main",
                                  "SKIN_DEMO_MODELS_DIR": str(make_models_dir(tmp_path / "bundled"))})  # fmt: skip
    models = load_models(settings)
    assert models["lesion_type"].source.startswith("bundled ")
    assert "'main', not a 40-hex commit sha" in models.notices["lesion_type"]
    assert resolve_gets(hub) == []


def test_an_allowed_unpinned_revision_is_served_and_the_page_says_so(hub, published, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio_tmp"))
    sha2, _ = published["v2"]
    settings = Settings.from_env({"SKIN_DEMO_LESION_TYPE_REPO": REPO, "SKIN_DEMO_LESION_TYPE_REVISION": "main",
                                  "SKIN_DEMO_ALLOW_UNPINNED": "1", "SKIN_DEMO_EXAMPLES_DIR": str(tmp_path / "none"),
                                  "SKIN_DEMO_MODELS_DIR": str(make_models_dir(tmp_path / "bundled"))})  # fmt: skip
    models = load_models(settings)
    assert models["lesion_type"].source == f"hub {REPO}@{sha2} (revision main)"
    assert "not pinned to a commit" in models.notices["lesion_type"]
    demo = build_app(settings, models=models)
    (box,) = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "model-notice"]
    assert "not pinned to a commit" in box.value
