"""`compare`: runs side by side at a matched number of epochs, each chosen the way fit chooses its best epoch."""

from __future__ import annotations

import json

from skin_demo.train.cli import main
from skin_demo.train.compare import best_within


def record(epoch: int, raw: float, ema: float, isic_offset: float = 0.0) -> dict:
    def scores(value: float) -> dict:
        ham, isic = value + isic_offset, value - isic_offset
        return {task: {"ham10000": ham, "isic2017": isic, "selection": (ham + isic) / 2}
                for task in ("lesion_type", "malignancy")}
    return {"epoch": epoch, "raw": scores(raw), "ema": scores(ema)}


def write_run(folder, history: list[dict], **args) -> None:
    folder.mkdir()
    base = {"arch": "tf_efficientnet_lite0", "tasks": ["lesion_type", "malignancy"], "epochs": 4, "warm_epochs": 1,
            "warm_size": 128, "image_size": 192, "batch_size": 32, "lr": 8e-4, "seed": 0, "color_constancy": "none"}
    (folder / "args.json").write_text(json.dumps({**base, **args}))
    (folder / "history.json").write_text(json.dumps({"epoch": len(history), "history": history}))


def test_best_within_picks_the_best_of_raw_and_ema_in_the_first_epochs_only():
    history = [record(1, 0.50, 0.40), record(2, 0.55, 0.60), record(3, 0.90, 0.10)]
    assert best_within(history, "lesion_type", 2).epoch == 2 and best_within(history, "lesion_type", 2).weights == "ema"
    assert best_within(history, "lesion_type", 3).epoch == 3
    # A tie keeps the earlier epoch and raw before EMA, as fit (which replaces its best only on a higher score) does.
    tied = [record(1, 0.7, 0.7), record(2, 0.7, 0.7)]
    assert (best_within(tied, "malignancy", 2).epoch, best_within(tied, "malignancy", 2).weights) == (1, "raw")


def test_compare_matches_a_partial_run_with_a_finished_one_epoch_for_epoch(tmp_path, capsys):
    finished = [record(e, 0.5 + 0.01 * e, 0.4, isic_offset=0.05) for e in range(1, 5)]
    partial = [record(e, 0.4, 0.3 + 0.1 * e) for e in range(1, 3)]
    write_run(tmp_path / "lite0", finished)
    write_run(tmp_path / "lite2", partial, arch="tf_efficientnet_lite2")
    assert main(["compare", str(tmp_path / "lite0"), str(tmp_path / "lite2")]) == 0
    out = capsys.readouterr().out
    assert "within the first 2 epochs" in out and "unfair" not in out
    best_table, mean_table = out.split("Mean over epochs 1-2 (EMA weights")
    rows = {line.split(" | ")[0].strip("| "): line for line in best_table.splitlines() if line.startswith("| lite")}
    assert "4 of 4" in rows["lite0"] and "0.570 / 0.470 / **0.520** @ 2 raw" in rows["lite0"]
    assert "2 of 4" in rows["lite2"] and "0.500 / 0.500 / **0.500** @ 2 ema" in rows["lite2"]
    # The steadier view: EMA weights averaged over the last epochs compared (here both of them).
    means = {line.split(" | ")[0].strip("| "): line for line in mean_table.splitlines() if line.startswith("| lite")}
    assert "| 0.450 / 0.350 / **0.400** | 0.450 / 0.350 / **0.400** |" in means["lite0"]
    assert "| 0.450 / 0.450 / **0.450** | 0.450 / 0.450 / **0.450** |" in means["lite2"]


def test_compare_warns_when_the_schedules_differ(tmp_path, capsys):
    write_run(tmp_path / "a", [record(1, 0.5, 0.5)])
    write_run(tmp_path / "b", [record(1, 0.5, 0.5)], epochs=8)
    main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert "schedules differ in epochs; the comparison is unfair" in capsys.readouterr().out


def test_compare_names_the_settings_that_differ_and_only_the_tasks_every_run_trained(tmp_path, capsys):
    write_run(tmp_path / "joint", [record(1, 0.5, 0.5)], phone_look=0.5, out="runs/joint", threads=2)
    write_run(tmp_path / "lesion-only", [record(1, 0.6, 0.6)], phone_look=0.0, tasks=["lesion_type"],
              out="runs/lesion-only", threads=1)
    main(["compare", str(tmp_path / "joint"), str(tmp_path / "lesion-only")])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| run |"))
    # Settings that differ are columns; how a run was carried out (its folder, threads) is not.
    assert header.startswith("| run | arch | tasks | phone_look | epochs done | lesion type: balanced accuracy")
    assert "malignancy" not in header and "threads" not in header and "out" not in header
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| ")}
    assert "| lesion_type malignancy | 0.5 | 1 of 4 |" in rows["joint"]  # (the last table's row)
    assert "| lesion_type | 0.0 | 1 of 4 |" in rows["lesion-only"]
