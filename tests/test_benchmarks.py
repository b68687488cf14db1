"""The benchmark scripts run end to end (tiny packages, a handful of iterations) and report what they promise.

Not timing tests: the figures depend on the machine. benchmarks/RESULTS.md has real ones.
"""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_app, bench_attention, bench_inference
from tests.tiny_packages import make_models_dir

pytestmark = pytest.mark.slow


def test_bench_inference_reports_every_contender(tmp_path, capsys):
    pytest.importorskip("timm")
    models = make_models_dir(tmp_path / "models")
    out = tmp_path / "inference.json"
    code = bench_inference.main([
        "--models-dir", str(models), "--data", str(tmp_path / "no_data"), "--images", "2", "--repeats", "2",
        "--warmup", "0", "--threads", "1", "--batches", "1,2", "--phone-images", "1", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert "generated" in report["images"]  # no dataset here: generated JPEGs
    assert "skipped" in report["int8"] and "no HAM10000" in report["int8"]  # said plainly, not silently
    names = set(report["per_request"])
    assert names == {bench_inference.OURS, bench_inference.OURS_CHECKED, "baseline 1 (torch eager, 2 models)",
                     "baseline 2 (torch ResNet-34, 1 model)", "baseline 2 x2 (torch ResNet-34, 2 models)"}  # fmt: skip
    for name in names:
        steps = report["per_request"][name]["1"]
        assert set(steps) == {"preprocess", "models", "total"}
        assert steps["total"]["p50"] >= steps["models"]["p50"] > 0
    # The app's whole analysis (with the lesion check) is timed per request; the model-only table is per contender.
    assert set(report["models_only"]) == names - {bench_inference.OURS_CHECKED}
    assert any("the check costs" in line for line in report["headline"])
    assert any("phone photo" in row[1] for row in report["preprocess_by_upload"]["rows"])
    assert "request total (batch 1)" in json.dumps(report["ratios"])
    for heading in ("## Per request", "## Models alone", "## Ratios", "## Headline"):
        assert heading in printed


def test_bench_app_drives_the_app_process(tmp_path, capsys):
    models = make_models_dir(tmp_path / "models")
    out = tmp_path / "app.json"
    code = bench_app.main([
        "--models-dir", str(models), "--data", str(tmp_path / "no_data"), "--images", "2", "--starts", "1",
        "--page-requests", "2", "--clients", "1,3", "--per-client", "2", "--leak-requests", "4", "--json", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    start = report["cold_start"]["runs"][0]
    assert 0 < start["page_served_s"] <= start["first_prediction_s"]
    assert {"decode", "preprocess", "inference", "charts", "total"} <= set(report["page"]["server_ms"])
    assert report["api"]["3"]["requests"] == 6 and report["api"]["3"]["errors"] == 0
    assert report["peak_rss_mb"] > 50 and report["rss_series_mb"][-1][0] == 4
    assert "## Headline" in capsys.readouterr().out


def test_bench_attention_compares_the_classifiers_with_and_without_maps(tmp_path, capsys):
    models = make_models_dir(tmp_path / "models")
    out = tmp_path / "attention.json"
    code = bench_attention.main(["--models-dir", str(models), "--data", str(tmp_path / "no_data"), "--images", "2",
                                 "--repeats", "2", "--json", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report["latency_ms"]) == {"without maps", "with maps"} and report["ratio_p50"] > 0
    for sizes in report["model_bytes"].values():
        assert sizes["with_map"] > sizes["without_map"]  # the map's two nodes, nothing more
    assert "with maps / without:" in capsys.readouterr().out
