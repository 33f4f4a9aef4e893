"""bench.table1 and table1_grid: cells and shards, the wall-clock plan, claim verdicts, and a tiny end-to-end table
(train, evaluate, skip finished cells on a second invocation, resume, --report)."""

import json
import os
import subprocess
import sys

import pytest

from bench import table1, table1_cell, table1_grid, table1_rank, table1_report
from tests.helpers import python_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cells_cover_rows_budgets_seeds_and_shards_partition_them():
    cells = table1_grid.make_cells(table1_grid.ROWS, table1_grid.BUDGETS, [0, 1], 4, 240)
    trained = [r for r in table1_grid.ROWS if r.kind == "train"]
    assert len(cells) == 2 * (len(table1_grid.ROWS) - len(trained)) + 2 * 2 * len(trained)
    names = [c.name for c in cells]
    assert len(set(names)) == len(names)
    assert "wmse4__e4__seed1" in names and "byol__t240s__seed0" in names and "pixels__seed1" in names
    # every equal-epochs cell comes before the equal-seconds cells (their throughput is reused)
    kinds = [c.budget for c in cells if c.budget != "none"]
    assert kinds == sorted(kinds, key=table1_grid.BUDGETS.index)
    shards = [cells[i::3] for i in range(3)]
    assert sorted(c.name for s in shards for c in s) == sorted(names)
    assert table1_grid.parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(Exception, match="shard"):
            table1_grid.parse_shard(bad)


def test_equal_seconds_budget_uses_the_trainers_time_budget_else_a_measured_throughput():
    def measure():
        raise AssertionError("no throughput needed with --time_budget")

    flags, source = table1_cell.seconds_budget_flags(240, 4, True, measure)
    assert flags == ["--time_budget=240s", "--epochs=4"] and "time_budget" in source["source"]
    flags, source = table1_cell.seconds_budget_flags(240, 4, False, lambda: (1000.0, 256, 60000, "cells"))
    epochs, spe = (int(f.split("=")[1]) for f in flags)
    assert epochs * spe * 256 == pytest.approx(240 * 1000, rel=0.01) and spe <= 60000 // 256
    assert flags[0] == "--epochs=5" and source == {"images_per_sec": 1000.0, "batch_size": 256, "source": "cells"}
    assert table1_cell.throughput_flags(240, 400.0, 60000, 128)[0] == "--epochs=2"
    assert table1_cell.throughput_flags(1, 1.0, 60000, 256) == ["--epochs=1", "--steps_per_epoch=1"]
    assert "time_budget" in table1.FLAGS  # wmse_tf.train has it: the table uses it


def test_plans_of_the_fashion_mnist_flagfile_train_the_budget_they_name(tmp_path):
    """A flagfile's own --time_budget (the former demo recipe's) must not leak into the equal-epochs cells."""
    table = table1.Table("configs/fashion_mnist_resnet18_w8.flags", [], str(tmp_path / "runs"),
                         str(tmp_path / "results"),
                         5, 30, [0], budget_epochs=4)
    row = table1_grid.ROW_BY_KEY["wmse4"]
    for budget, value, epochs, seconds in (("epochs", 4, 4, 0.0), ("seconds", 240, 4, 240.0)):
        cell = table1_grid.Cell(row, budget, value, 0)
        plan = table.plan(cell, str(tmp_path / cell.name))
        cfg = table1_cell.resolve_config(table.config, plan["command"][4:])
        assert (cfg["epochs"], cfg["time_budget"], cfg["num_views"], cfg["batch_size"]) == (epochs, seconds, 4, 128)
        assert cfg["knn_metric"] == "euclidean" and cfg["width"] == 8 and cfg["seed"] == 0


def test_elapsed_sums_training_segments_across_restarts():
    segments = [[0.0, 10.0, 143], [100.0, None, None]]  # killed at 10 s; the second still running
    assert table1_cell.elapsed([5.0, 10.0, 105.0, 107.0], segments) == [5.0, 10.0, 15.0, 17.0]
    killed_table = [[0.0, None, None], [50.0, 60.0, 0]]  # the table itself was killed in the first
    assert table1_cell.elapsed([5.0, 8.0, 55.0], killed_table) == [5.0, 8.0, 13.0]
    assert table1_cell.segment_bounds(killed_table, [5.0, 8.0, 55.0]) == [(0.0, 8.0), (50.0, 60.0)]


def test_claim_verdicts_use_the_seeds_spread():
    v = table1_report.verdict
    assert v((2, 0.80, 0.01), (2, 0.70, 0.02)) == "holds"
    assert v((2, 0.70, 0.01), (2, 0.80, 0.02)) == "does not hold"
    assert v((2, 0.80, 0.05), (2, 0.75, 0.02)).startswith("inconclusive")
    assert v((1, 0.90, 0.0), (2, 0.10, 0.0)).startswith("inconclusive (fewer")


def fake_cell(row, label, budget, rank, top1):
    return {"row": row, "label": label, "status": "ok", "budget": budget, "budget_value": 4,
            "train": {"wall_seconds": 1.0, "step": 8, "steps_per_epoch": 2, "final": {}},
            "eval": {"effective_rank": rank, "linear_top1": top1, "knn_euclidean5": top1, "knn_cosine5": top1}}


def test_rank_tracking_is_spearman_over_cells_with_and_without_collapse_and_random_weights(tmp_path):
    """Trained cells whose rank orders accuracy exactly: rho = +1; the collapsed row is left out of the
    healthy set; random weights (high rank here, low accuracy) turn the third set's rho negative."""
    records = [fake_cell("wmse2", "W-MSE 2", "epochs", 20.0, 0.81), fake_cell("wmse2", "W-MSE 2", "epochs", 21.0, 0.82),
               fake_cell("byol", "BYOL", "epochs", 15.0, 0.77), fake_cell("normmse", "normalized MSE", "epochs", 8.0, 0.50),
               fake_cell("pixels", "raw pixels", "none", 300.0, 0.85)]
    records += [fake_cell("random", "random weights", "none", 30.0 + i, 0.40 + i / 100) for i in range(4)]
    groups = table1_report.aggregate(records)
    cells = table1_rank.rank_cells(groups, "4 epochs")
    assert len(cells["trained"]) == 4 and len(cells["trained, healthy methods"]) == 3
    assert len(cells["trained + random weights"]) == 8  # raw pixels are never in
    text = table1_rank.rank_tracking_md(groups, table1_report.budgets_of(groups))
    assert "4 epochs, trained (4 cells): Spearman rho = +1.00" in text
    assert "4 epochs, trained, healthy methods (3 cells): Spearman rho = +1.00" in text
    # ranks 8,15,20,21,30..33 (orders 1..8) against accuracies .50,.77,.81,.82,.40..43 (orders 5,6,7,8,1..4):
    # every |d| = 4, sum d^2 = 128, rho = 1 - 6 * 128 / (8 * 63)
    assert "trained + random weights (8 cells): Spearman rho = -0.52" in text
    paths = table1_rank.rank_plot(groups, ["4 epochs"], str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["table1_rank_vs_linear_4epochs.png"]


def test_health_notes_name_the_flagged_cells_and_count_the_unrecorded_ones():
    """The claims section says, per row, which seeds training health flagged (first step, what was seen),
    how many recorded cells it did not flag, and how many cells predate the record."""
    def cell(row, label, seed, health):
        rec = fake_cell(row, label, "epochs", 10.0, 0.8)
        rec["seed"], rec["train"]["health"] = seed, health
        return rec

    flagged = {"first_unhealthy_step": 234, "seen": {"std": "step 234: ...", "rank_emb": "step 234: ..."}}
    clean = {"first_unhealthy_step": None, "seen": {}}
    groups = table1_report.aggregate([cell("normmse", "normalized MSE", 0, None), cell("normmse", "normalized MSE", 1, flagged),
                                      cell("wmse2", "W-MSE 2", 0, clean), cell("wmse2", "W-MSE 2", 1, clean),
                                      cell("byol", "BYOL", 0, None)])
    notes = table1_report.health_notes(groups)
    assert notes == [
        "training health, BYOL, 4 epochs: not recorded (1 cell(s) trained before the table recorded it)",
        "training health, normalized MSE, 4 epochs: flagged: seed 1 at step 234 (rank_emb; std) "
        "(0 of 1 recorded cells not flagged; 1 cell(s) trained before the table recorded it)",
        "training health, W-MSE 2, 4 epochs: no cell flagged (2 of 2 recorded cells not flagged)"]
    assert all(f"- {n}" in table1_report.claims_md(groups) for n in notes)


def test_report_sections_replace_only_the_text_between_markers(tmp_path):
    path = tmp_path / "results.md"
    path.write_text(f"# Results\nhand-written\n{table1_report.TABLE_MARKERS[0]}\nold\n"
                    f"{table1_report.TABLE_MARKERS[1]}\nafter\n")
    table1_report.replace_between(str(path), table1_report.TABLE_MARKERS, "new table")
    table1_report.replace_between(str(path), table1_report.CLAIMS_MARKERS, "claims")
    table1_report.replace_between(str(path), table1_report.CLAIMS_MARKERS, "claims 2")
    text = path.read_text()
    assert "old" not in text and "new table" in text and text.count("claims") == 1 + 2
    assert text.startswith("# Results\nhand-written\n") and "\nafter\n" in text and "claims 2" in text


@pytest.mark.slow
def test_tiny_table_end_to_end_skips_finished_cells_resumes_and_reports(tmp_path):
    md = tmp_path / "results.md"
    tm, cm = table1_report.TABLE_MARKERS, table1_report.CLAIMS_MARKERS
    md.write_text(f"intro\n{tm[0]}\n{tm[1]}\nmiddle\n{cm[0]}\n{cm[1]}\noutro\n")
    cmd = [sys.executable, "-m", "bench.table1", "--config=configs/smoke.flags", "--rows=wmse2,pixels",
           "--seeds=0", "--budget_epochs=1", "--budget_seconds=5", "--probe_epochs=5",
           "--train_arg=--steps_per_epoch=2", f"--out={tmp_path / 'runs'}",
           f"--results_dir={tmp_path / 'results'}", f"--results_md={md}", f"--img_dir={tmp_path / 'img'}"]

    def run(*extra):
        proc = subprocess.run(cmd + list(extra), cwd=ROOT, env=python_env(), capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    out = run()
    names = ("pixels__seed0", "wmse2__e1__seed0", "wmse2__t5s__seed0")
    results = {n: json.loads((tmp_path / "results" / f"{n}.json").read_text()) for n in names}
    for rec in results.values():
        assert rec["status"] == "ok" and rec["eval"]["num_test"] == 128
        assert 0.0 <= rec["eval"]["linear_top1"] <= 1.0 and 0.0 <= rec["eval"]["knn_euclidean5"] <= 1.0
    trained = results["wmse2__e1__seed0"]
    assert trained["train"]["step"] == 2 and trained["curve"][0]["knn_metric"] == "euclidean"
    assert "--knn_metric=euclidean" in trained["train"]["command"]
    assert set(trained["train"]["health"]) == {"first_unhealthy_step", "seen"}  # the run's health summary
    timed = results["wmse2__t5s__seed0"]["train"]
    assert "--time_budget=5s --epochs=1" in timed["command"] and timed["step"] >= 1
    # Second invocation: every cell skipped, nothing trained.
    out = run()
    assert out.count("finished (ok), skipped") == 3 and "wmse_tf.train" not in out
    # A cell whose run lost its final files resumes from its checkpoint instead of retraining.
    run_dir = tmp_path / "runs" / "wmse2__e1__seed0"
    for name in ("result.json", "run/results.json", "run/encoder.keras"):
        os.remove(run_dir / name)
    os.remove(tmp_path / "results" / "wmse2__e1__seed0.json")
    out = run()
    assert "resuming at step 2" in out and out.count("skipped") == 2
    assert len(json.loads((run_dir / "segments.json").read_text())) == 2
    # --report fills the markers (text around them kept) and draws the curves.
    out = run("--report")
    text = md.read_text()
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith(f"{cm[1]}\noutro\n")
    assert "| W-MSE 2 (BN over all views) | 1 epochs | 1 | 0.25 |" in text and "| raw pixels | - | 1 |" in text
    assert "not yet measured" in text and "(fewer than 2 seeds)" not in text
    for png in ("table1_curves_1epochs.png", "table1_curves_5s.png"):
        assert (tmp_path / "img" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_settings_key_ignores_the_flagfiles_comments_not_its_flags():
    """Editing a comment keeps the finished cells; editing a flag does not."""
    text = "# recipe\n--width=8\n\n--emb=32\n"
    assert table1.flags_sha1(text) == table1.flags_sha1("# recipe, reworded\n--width=8\n--emb=32")
    assert table1.flags_sha1(text) != table1.flags_sha1("# recipe\n--width=16\n--emb=32\n")


def test_the_settings_hold_the_precision_auto_or_pinned(tmp_path):
    """Cells trained in another dtype policy are other settings; pinning the policy with a train
    arg is the same setting as `auto` resolving to it."""
    def settings(*train_args):
        return table1.Table("configs/fashion_mnist_resnet18_w8.flags", list(train_args), str(tmp_path / "runs"),
                            str(tmp_path / "results"), 5, 30, [0]).settings

    bf16, f32 = settings("--mixed_precision=mixed_bfloat16"), settings("--mixed_precision=float32")
    assert bf16["mixed_precision"] == "mixed_bfloat16" and f32["mixed_precision"] == "float32"
    assert bf16 != f32 and bf16["train_args"] == f32["train_args"] == []
    assert settings()["mixed_precision"] == "float32"  # auto for the width-8 encoder, on any CPU
