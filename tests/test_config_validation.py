"""Package configs that parse but are wrong or dangerous are refused on load, naming the file (tiny real packages).

Each of these once loaded: NaN in `mean` gave null probabilities, a temperature of 1e-30 exact 1.0 / 0.0, a
crop_pct of 0.005 seconds and gigabytes per image, a deeply nested config.json a RecursionError traceback.
"""

from __future__ import annotations

import json
import math

import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skin_demo.config import ConfigError, PackageConfig, PreprocessConfig
from skin_demo.modelpack import ModelPack, PackageError
from tests.tiny_packages import make_package, tiny_config

LABELS = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def preprocess_with(**changes) -> dict:
    return {**tiny_config("lesion_type", LABELS, ("mel",))["preprocess"], **changes}


def refused(folder, file_name: str = "config.json") -> str:
    """Load `folder`, expect a PackageError naming `file_name` there, and return its message."""
    with pytest.raises(PackageError) as info:
        ModelPack.load(folder, threads=1)
    message = str(info.value)
    assert str(folder / file_name) in message, message
    assert "Traceback" not in message
    return message


NON_FINITE = {
    "NaN in mean": {"preprocess": preprocess_with(mean=[math.nan, 0.5, 0.5])},
    "Infinity temperature": {"temperature": math.inf},
    "-Infinity in metrics": {"metrics": {"balanced_accuracy": -math.inf}},
    "NaN deep in provenance": {"provenance": {"runs": [{"loss": [0.3, math.nan]}]}},
}


@pytest.mark.parametrize("overrides", list(NON_FINITE.values()), ids=list(NON_FINITE))
def test_non_finite_numbers_anywhere_are_refused(tmp_path, overrides):
    folder = make_package(tmp_path / "pkg", config_overrides=overrides)  # json.dumps writes NaN / Infinity
    assert "NaN" in (folder / "config.json").read_text() or "Infinity" in (folder / "config.json").read_text()
    message = refused(folder)
    assert "not valid JSON" in message and "finite" in message, message


def test_non_finite_numbers_in_a_python_dict_are_refused():
    """The same rule for a config built in code (training), where NaN is a float, not a JSON token."""
    raw = tiny_config("lesion_type", LABELS, ("mel",), metrics={"auc": math.nan})
    with pytest.raises(ConfigError, match=r"metrics\.auc is nan; every number .* must be finite"):
        PackageConfig.from_dict(raw)
    with pytest.raises(ConfigError, match="temperature"):
        PackageConfig.from_dict({**raw, "metrics": {}, "temperature": math.nan})


OUT_OF_RANGE = {
    # name: (config overrides, make_package size, phrase the message must contain)
    "size 16 px": ({}, (16, 16), "preprocess.size must be [height, width], each 32-1024 px, got [16, 16]"),
    "size 2048 px": ({}, (2048, 2048), "each 32-1024 px, got [2048, 2048]"),
    "crop_pct 0.005": ({"preprocess": preprocess_with(crop_pct=0.005)}, (32, 32), "crop_pct must be between 0.5 and 1"),
    "crop_pct 1.2": ({"preprocess": preprocess_with(crop_pct=1.2)}, (32, 32), "crop_pct must be between 0.5 and 1"),
    "std 0": ({"preprocess": preprocess_with(std=[0.5, 0.0, 0.5])}, (32, 32), "preprocess.std must be between"),
    "temperature 1e-30": ({"temperature": 1e-30}, (32, 32), "temperature must be between 0.05 and 20, got 1e-30"),
    "temperature 100": ({"temperature": 100.0}, (32, 32), "temperature must be between 0.05 and 20"),
    "threshold 0": ({"decision_threshold": 0.0}, (32, 32), "decision_threshold must be strictly between 0 and 1"),
    "threshold 1": ({"decision_threshold": 1.0}, (32, 32), "decision_threshold must be strictly between 0 and 1"),
    "threshold 1.5": ({"decision_threshold": 1.5}, (32, 32), "decision_threshold must be strictly between 0 and 1"),
    "colour constancy unknown": ({"preprocess": preprocess_with(color_constancy="grey_world")}, (32, 32),
                                 "preprocess.color_constancy 'grey_world' is not one of"),
    "colour constancy power 0": ({"preprocess": preprocess_with(color_constancy_power=0)}, (32, 32),
                                 "preprocess.color_constancy_power must be between 1 and 16"),
    "domain threshold 0": ({"decision_thresholds": {"clinical": 0}}, (32, 32),
                           "decision_thresholds.clinical must be strictly between 0 and 1, got 0"),
    "domain threshold 1": ({"decision_thresholds": {"clinical": 1.0}}, (32, 32),
                           "decision_thresholds.clinical must be strictly between 0 and 1, got 1.0"),
    "domain threshold -0.2": ({"decision_thresholds": {"dermoscopy": -0.2}}, (32, 32),
                              "decision_thresholds.dermoscopy must be strictly between 0 and 1"),
    "unknown domain": ({"decision_thresholds": {"clinical": 0.4, "phone": 0.3}}, (32, 32),
                       "decision_thresholds has unknown domains ['phone']; the domains are ['dermoscopy', 'clinical']"),
    "unknown domain of a score": ({"decision_scores": {"not_lesion": "binary_head"}}, (32, 32),
                                  "decision_scores has unknown domains ['not_lesion']"),
    "unknown score": ({"decision_scores": {"clinical": "ensemble"}}, (32, 32),
                      "decision_scores.clinical 'ensemble' is not one of ('binary_head', 'lesion_type_sum')"),
    "dermoscopy threshold twice, different": ({"decision_threshold": 0.3, "decision_thresholds": {"dermoscopy": 0.4}},
                                              (32, 32), "decision_thresholds.dermoscopy (0.4) differs from "
                                                        "decision_threshold (0.3)"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OUT_OF_RANGE), ids=list(OUT_OF_RANGE))
def test_values_outside_the_safe_range_are_refused(tmp_path, case):
    overrides, size, phrase = OUT_OF_RANGE[case]
    message = refused(make_package(tmp_path / "pkg", size=size, config_overrides=overrides))
    assert phrase in message, message


def test_the_edges_of_each_range_are_accepted(tmp_path):
    edges = {"preprocess": preprocess_with(crop_pct=0.5), "temperature": 0.05, "decision_threshold": 0.999}
    pack = ModelPack.load(make_package(tmp_path / "pkg", config_overrides=edges), threads=1)
    assert pack.config.preprocess.crop_pct == 0.5 and pack.config.preprocess.resize_shorter_side == 64
    assert pack.config.temperature == 0.05 and pack.config.decision_threshold == 0.999


WRONG_TYPES = {
    "size as a string": ({"preprocess": preprocess_with(size="32")}, "preprocess.size must be a list of whole numbers"),
    "size as floats": ({"preprocess": preprocess_with(size=[32.5, 32.5])}, "preprocess.size must be a list of whole"),
    "colour constancy as a list": ({"preprocess": preprocess_with(color_constancy=["shades_of_gray"])},
                                   "preprocess.color_constancy must be a string"),
    "labels as a string": ({"labels": "akiec"}, "labels must be a list of strings"),
    "label as a number": ({"labels": [*LABELS[:6], 7]}, "labels must be a list of strings"),
    "temperature as a string": ({"temperature": "1.0"}, "temperature must be a number, got a string"),
    "threshold as a boolean": ({"decision_threshold": True}, "decision_threshold must be a number, got a boolean"),
    "preprocess as a list": ({"preprocess": [1, 2]}, "preprocess must be a JSON object"),
    "metrics as a list": ({"metrics": [0.5]}, "metrics must be a JSON object"),
    "format_version as a string": ({"format_version": "1"}, "unknown format_version '1'"),
    "no task": ({"task": None}, "task must be a string, got null"),
    "domain thresholds as a list": ({"decision_thresholds": [0.3, 0.4]},
                                    "decision_thresholds must be a JSON object, got a list"),
    "domain thresholds as null": ({"decision_thresholds": None}, "decision_thresholds must be a JSON object, got null"),
    "domain threshold as a string": ({"decision_thresholds": {"clinical": "0.4"}},
                                     "decision_thresholds.clinical must be a number, got a string"),
    "domain threshold as a boolean": ({"decision_thresholds": {"clinical": True}},
                                      "decision_thresholds.clinical must be a number, got a boolean"),
    "score as a number": ({"decision_scores": {"clinical": 1}},
                          "decision_scores.clinical must be a string, got a number"),
    "scores as a string": ({"decision_scores": "lesion_type_sum"},
                           "decision_scores must be a JSON object, got a string"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(WRONG_TYPES), ids=list(WRONG_TYPES))
def test_wrong_types_are_refused_naming_the_field(tmp_path, case):
    overrides, phrase = WRONG_TYPES[case]
    config = {**tiny_config("lesion_type", LABELS, ("mel",)), **overrides}
    # The model is built from a valid config; only config.json carries the wrong type.
    folder = make_package(tmp_path / "pkg", config_json=config)
    message = refused(folder)
    assert phrase in message, message


@pytest.mark.parametrize("where", ["config.json", "embedded"])
def test_deeply_nested_json_is_refused_without_a_recursion_error(tmp_path, where):
    depth = 200_000  # far past Python's recursion limit: json.loads raises RecursionError
    nested = '{"format_version": 1, "metrics": ' + "[" * depth + "]" * depth + "}"
    if where == "config.json":
        folder = make_package(tmp_path / "pkg", config_json=nested)
        message = refused(folder, "config.json")
    else:
        folder = make_package(tmp_path / "pkg", metadata=nested)
        message = refused(folder, "model.onnx")
    assert "nested too deeply" in message, message
    with pytest.raises(ConfigError, match="nested too deeply"):
        PackageConfig.from_json(nested)


def test_onnx_runtimes_whole_reason_is_kept(tmp_path):
    """An initializer in external data that is cut short: ORT's cause comes at the end of a long message."""
    folder = make_package(tmp_path / "pkg")
    proto = onnx.load(str(folder / "model.onnx"))
    onnx.save_model(proto, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)  # fmt: skip
    weights = folder / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:20])
    message = refused(folder, "model.onnx")
    assert "ONNX Runtime says:" in message
    assert "can not be read in full" in message, message  # the cause, past the old 200-character cut
    assert len(message) > 300


def test_per_domain_decisions_load_and_older_packages_get_none(tmp_path):
    overrides = {"decision_threshold": 0.3, "decision_thresholds": {"dermoscopy": 0.3, "clinical": 0.45},
                 "decision_scores": {"clinical": "lesion_type_sum"}}  # fmt: skip
    config = ModelPack.load(make_package(tmp_path / "new", config_overrides=overrides), threads=1).config
    assert config.decision_thresholds == {"dermoscopy": 0.3, "clinical": 0.45}
    assert config.decision_scores == {"clinical": "lesion_type_sum"}
    assert PackageConfig.from_json(config.to_json()) == config
    older = ModelPack.load(make_package(tmp_path / "old", config_overrides={"decision_threshold": 0.3}), threads=1)
    assert older.config.decision_thresholds == {} and older.config.decision_scores == {}


def test_per_domain_decisions_built_in_code_are_checked_too():
    """Training builds PackageConfig in Python: the same checks apply without JSON."""
    config = PackageConfig.from_dict(tiny_config("malignancy", ("benign", "malignant"), ("malignant",)))
    with pytest.raises(ConfigError, match="decision_thresholds.clinical must be strictly between 0 and 1"):
        PackageConfig(**{**config.__dict__, "decision_thresholds": {"clinical": 1.5}})
    with pytest.raises(ConfigError, match="decision_thresholds.clinical must be strictly between 0 and 1"):
        PackageConfig(**{**config.__dict__, "decision_thresholds": {"clinical": "0.4"}})
    with pytest.raises(ConfigError, match=r"decision_scores.clinical 'ensemble' is not one of"):
        PackageConfig(**{**config.__dict__, "decision_scores": {"clinical": "ensemble"}})
    with pytest.raises(ConfigError, match="unknown domains"):
        PackageConfig(**{**config.__dict__, "decision_scores": {"phone": "binary_head"}})


def test_config_round_trips_and_refuses_to_write_nan():
    config = PackageConfig.from_dict(tiny_config("malignancy", ("benign", "malignant"), ("malignant",),
                                                 decision_threshold=0.22))  # fmt: skip
    assert PackageConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="crop_pct"):
        PreprocessConfig(size=(224, 224), crop_pct=0.005)
    assert json.loads(config.to_json())["decision_threshold"] == 0.22


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = [("format_version",), ("task",), ("labels",), ("malignant_labels",), ("architecture",), ("temperature",),
          ("decision_threshold",), ("decision_thresholds",), ("decision_scores",), ("outputs",), ("extra_outputs",), ("metrics",),
          ("provenance",), ("preprocess",),
          ("preprocess", "size"), ("preprocess", "resize"), ("preprocess", "crop_pct"), ("preprocess", "interpolation"),
          ("preprocess", "mean"), ("preprocess", "std"), ("preprocess", "color_constancy"),
          ("preprocess", "color_constancy_power")]  # fmt: skip


@settings(max_examples=150, deadline=None, database=None)
@given(where=st.sampled_from(FIELDS), value=json_values, drop=st.booleans())
def test_any_value_in_any_field_is_accepted_valid_or_refused_with_config_error(where, value, drop):
    """Whatever JSON stands in a field (or if it is missing), from_dict gives a config that passes its own checks
    or raises ConfigError: never a TypeError, KeyError or a crash further on."""
    raw = tiny_config("malignancy", ("benign", "malignant"), ("malignant",))
    parent = raw if len(where) == 1 else raw["preprocess"]
    if drop:
        parent.pop(where[-1], None)
    else:
        parent[where[-1]] = value
    try:
        config = PackageConfig.from_dict(raw)
    except ConfigError as exc:
        assert str(exc)
        return
    assert PackageConfig.from_json(config.to_json()) == config  # an accepted config is finite and writable
