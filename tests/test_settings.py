"""Settings: what the environment and the settings file say, read and checked (nothing is loaded here), and the
bundled packages that load_models fills each task with when no Hub repo is configured."""

from __future__ import annotations

import pytest

from skin_demo.hub import load_models
from skin_demo.modelpack import PackageError
from skin_demo.settings import HubSource, Settings, SettingsError
from tests.tiny_packages import make_models_dir, make_package

SHA = "0123456789abcdef0123456789abcdef01234567"


def test_settings_from_env_and_file(tmp_path):
    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        'models_dir = "/srv/models"\nhub_timeout = 2.5\nthreads = 2\nhub_max_file_mb = 50\n'
        f'[lesion_type]\nrepo = "org/types"\nrevision = "{SHA}"\n'
    )
    env = {
        "SKIN_DEMO_SETTINGS": str(settings_file),
        "SKIN_DEMO_MALIGNANCY_REPO": "org/malignancy",
        "SKIN_DEMO_MALIGNANCY_REVISION": "a" * 40,
        "SKIN_DEMO_THREADS": "1",  # the environment wins over the file
        "SKIN_DEMO_CONCURRENCY": "3",
        "SKIN_DEMO_HUB_MAX_PACKAGE_MB": "60",
    }
    settings = Settings.from_env(env)
    assert settings.models_dir.as_posix() == "/srv/models"
    assert settings.hub["malignancy"] == HubSource("org/malignancy", "a" * 40)
    assert settings.hub["lesion_type"] == HubSource("org/types", SHA)
    assert settings.hub_timeout_s == 2.5
    assert (settings.hub_max_file_bytes, settings.hub_max_package_bytes) == (50_000_000, 60_000_000)
    assert settings.ort_threads == 1 and settings.concurrency_limit == 3
    assert not settings.allow_unpinned and settings.hub_problems == {}


@pytest.mark.parametrize("revision", ["main", "v1", SHA[:7], SHA.upper(), SHA + "0", "refs/pr/1"])
def test_a_revision_that_is_not_a_commit_sha_is_reported_not_used(revision):
    env = {"SKIN_DEMO_LESION_TYPE_REPO": "org/types", "SKIN_DEMO_LESION_TYPE_REVISION": revision}
    settings = Settings.from_env(env)
    assert settings.hub["lesion_type"] is None
    problem = settings.hub_problems["lesion_type"]
    assert "not a 40-hex commit sha" in problem and "SKIN_DEMO_ALLOW_UNPINNED=1" in problem


def test_unpinned_revisions_are_taken_only_when_allowed():
    env = {"SKIN_DEMO_LESION_TYPE_REPO": "org/types", "SKIN_DEMO_LESION_TYPE_REVISION": "main",
           "SKIN_DEMO_ALLOW_UNPINNED": "1"}  # fmt: skip
    settings = Settings.from_env(env)
    assert settings.allow_unpinned and settings.hub["lesion_type"] == HubSource("org/types", "main")
    assert not settings.hub["lesion_type"].pinned and HubSource("org/types", SHA).pinned


def test_hub_repo_without_revision_is_reported_not_used(tmp_path):
    settings = Settings.from_env({"SKIN_DEMO_LESION_TYPE_REPO": "org/types"})
    assert settings.hub["lesion_type"] is None
    assert "REVISION must both be set" in settings.hub_problems["lesion_type"]
    models = load_models(Settings(models_dir=make_models_dir(tmp_path / "m"), hub_problems=settings.hub_problems))
    assert "pinned to a revision" in models.notices["lesion_type"]
    assert models["lesion_type"].source.startswith("bundled")


@pytest.mark.parametrize(
    "env",
    [{"SKIN_DEMO_THREADS": "zero"}, {"SKIN_DEMO_HUB_TIMEOUT": "-1"}, {"SKIN_DEMO_HUB_MAX_FILE_MB": "inf"},
     {"SKIN_DEMO_ALLOW_UNPINNED": "maybe"}],
)  # fmt: skip
def test_bad_settings_values_name_the_setting(env):
    with pytest.raises(SettingsError, match="threads|hub_timeout|hub_max_file_mb|allow_unpinned"):
        Settings.from_env(env)


def test_bundled_packages_fill_every_task_by_default(tmp_path):
    models = load_models(Settings(models_dir=make_models_dir(tmp_path / "models"), threads=1))
    assert {task: pack.config.task for task, pack in models.items()} == {
        "malignancy": "malignancy", "lesion_type": "lesion_type", "lesion_check": "lesion_check"}  # fmt: skip
    assert models["malignancy"].source == "bundled models/malignancy"  # where it sits in the repo, not on the disk
    assert models.notices == {}


def test_corrupt_bundled_package_is_a_startup_error_naming_the_file(tmp_path):
    models_dir = make_models_dir(tmp_path / "models")
    (models_dir / "lesion_type" / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(PackageError, match=str(models_dir / "lesion_type" / "model.onnx")):
        load_models(Settings(models_dir=models_dir))


def test_two_bundled_packages_for_one_task_are_refused(tmp_path):
    make_models_dir(tmp_path / "models")
    make_package(tmp_path / "models" / "lesion_type_old", "lesion_type")
    with pytest.raises(PackageError, match="lesion_type_old/config.json: answers lesion_type, as .* one bundled"):
        load_models(Settings(models_dir=tmp_path / "models"))


def test_a_task_no_bundled_package_answers_is_a_startup_error(tmp_path):
    make_package(tmp_path / "models" / "malignancy", "lesion_type")  # the folder's name does not make the task
    make_package(tmp_path / "models" / "lesion_check", "lesion_check")
    with pytest.raises(PackageError, match="no bundled package answers malignancy"):
        load_models(Settings(models_dir=tmp_path / "models"))
