"""Tests of wmse_tf/training/run_log.py: the rows of log.csv and log.jsonl (columns, values, resume
truncation) and the TensorBoard scalars (tags, steps, values), read back from disk."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

from wmse_tf.training import run_log
from wmse_tf.training.loop import LoopState


def epochs(log, state, rows, spe=4):
    """Plays epoch ends: row i at step (i + 1) * spe with the given logs."""
    log.on_train_begin()
    for i, logs in enumerate(rows):
        state.step = (i + 1) * spe
        log.on_epoch_end(i, dict(logs))


def read_csv(path):
    with open(path) as f:
        return list(csv.reader(f))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_rows_in_csv_and_jsonl(tmp_path):
    state = LoopState(4, 3)
    log = run_log.MetricsLog(str(tmp_path), state)
    epochs(log, state, [{"loss": 1.5, "lr": 0.1, "whiten_ok": 1.0},
                        {"loss": 1.25, "lr": 0.05, "whiten_ok": 1.0, "knn_acc": 0.5},
                        {"loss": 1.0, "lr": 0.01, "whiten_ok": 0.5, "knn_acc": None}])
    rows = read_jsonl(tmp_path / "log.jsonl")
    assert [(r["epoch"], r["step"], r["loss"]) for r in rows] == [(1, 4, 1.5), (2, 8, 1.25), (3, 12, 1.0)]
    assert rows[1]["knn_acc"] == 0.5 and rows[2]["knn_acc"] is None and "knn_acc" not in rows[0]
    assert all(isinstance(r["time"], float) for r in rows) and rows[0]["time"] <= rows[2]["time"]
    table = read_csv(tmp_path / "log.csv")
    # the standard columns first, then the others sorted; missing / None values are empty cells
    assert table[0] == ["epoch", "step", "time", "seconds", "loss", "knn_acc", "lr", "images_per_sec", "whiten_ok"]
    assert [row[:2] + row[4:] for row in table[1:]] == [
        ["1", "4", "1.5", "", "0.1", "", "1.0"], ["2", "8", "1.25", "0.5", "0.05", "", "1.0"],
        ["3", "12", "1.0", "", "0.01", "", "0.5"]]
    assert [float(row[2]) for row in table[1:]] == [r["time"] for r in rows]
    assert log.last == rows[-1]


def test_resume_drops_rows_after_the_checkpoint_and_appends(tmp_path):
    state = LoopState(4, 5)
    epochs(run_log.MetricsLog(str(tmp_path), state), state, [{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}])
    resumed = LoopState(4, 5, step=4)  # the checkpoint was at step 4: rows of steps 8, 12 were not kept
    log = run_log.MetricsLog(str(tmp_path), resumed)
    log.on_train_begin()
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [4]
    assert [row[1] for row in read_csv(tmp_path / "log.csv")] == ["step", "4"]
    for epoch, loss in ((1, 2.5), (2, 1.5)):
        resumed.step = (epoch + 1) * 4
        log.on_epoch_end(epoch, {"loss": loss, "new_key": 1.0})
    rows = read_jsonl(tmp_path / "log.jsonl")
    assert [(r["epoch"], r["step"], r["loss"]) for r in rows] == [(1, 4, 3.0), (2, 8, 2.5), (3, 12, 1.5)]
    table = read_csv(tmp_path / "log.csv")
    assert [row[1] for row in table] == ["step", "4", "8", "12"]  # one header: the file's own
    assert table[0] == list(run_log.MetricsLog.COLUMNS) and [row[4] for row in table[1:]] == ["3.0", "2.5", "1.5"]
    assert sorted(os.listdir(tmp_path)) == ["log.csv", "log.jsonl"]  # no temp files left


def test_seconds_are_epoch_wall_times_summed_across_restarts(tmp_path, monkeypatch):
    clock = iter([100.0, 100.0, 130.0, 170.0, 500.0, 510.0, 535.0])  # __init__, begin, 2 epochs; restart
    monkeypatch.setattr(run_log.time, "time", lambda: next(clock))
    state = LoopState(4, 4)
    epochs(run_log.MetricsLog(str(tmp_path), state), state, [{"loss": 2.0}, {"loss": 1.0}])
    resumed = LoopState(4, 4, step=8)
    log = run_log.MetricsLog(str(tmp_path), resumed)  # the 330 s between the runs are not training
    log.on_train_begin()
    resumed.step = 12
    log.on_epoch_end(2, {"loss": 0.5})
    assert [r["seconds"] for r in read_jsonl(tmp_path / "log.jsonl")] == [30.0, 40.0, 25.0]
    assert run_log.training_seconds(str(tmp_path)) == 95.0


def test_training_seconds_of_logs_without_seconds_is_none(tmp_path):
    assert run_log.training_seconds(str(tmp_path)) is None
    (tmp_path / "log.jsonl").write_text('{"epoch": 1, "step": 4, "time": 1.0}\n{"epoch": 2, "step": 8, "seconds": 2.0}\n')
    assert run_log.training_seconds(str(tmp_path)) is None


def test_nothing_to_drop_keeps_the_files(tmp_path):
    state = LoopState(4, 2)
    epochs(run_log.MetricsLog(str(tmp_path), state), state, [{"loss": 3.0}, {"loss": 2.0}])
    before = (tmp_path / "log.csv").read_text(), (tmp_path / "log.jsonl").read_text()
    run_log.MetricsLog(str(tmp_path), LoopState(4, 2, step=8)).on_train_begin()
    assert ((tmp_path / "log.csv").read_text(), (tmp_path / "log.jsonl").read_text()) == before


def scalars(log_dir):
    """{tag: [(step, value)]} of every event file under log_dir."""
    out = {}
    for path in tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return out


def test_tensorboard_scalars_every_n_steps_and_per_epoch(tmp_path):
    state = LoopState(3, 3)
    tb = run_log.TensorBoardScalars(str(tmp_path / "tb"), state, every=3)
    tb.on_train_begin()
    for step in range(1, 10):  # one execution per step; epochs end at 3, 6, 9
        state.step = step
        tb.on_train_batch_end(step - 1, {"loss": float(step), "note": "text"})
        if step % 3 == 0:
            tb.on_epoch_end(step // 3 - 1, {"loss": 10.0 * step})
    tb.on_train_end()
    got = scalars(str(tmp_path / "tb"))
    # train/*: the first execution, then the first one in each new window of 3 steps
    assert got["train/loss"] == [(1, 1.0), (3, 3.0), (6, 6.0), (9, 9.0)]
    assert got["epoch/loss"] == [(3, 30.0), (6, 60.0), (9, 90.0)]
    assert set(got) == {"train/loss", "epoch/loss"}  # non-numbers are not written


def test_tensorboard_with_several_steps_per_execution(tmp_path):
    state = LoopState(10, 1)
    tb = run_log.TensorBoardScalars(str(tmp_path), state, every=3)
    for step in (2, 4, 6, 8, 10):
        state.step = step
        tb.on_train_batch_end(0, {"loss": float(step)})
    tb.on_train_end()
    assert [s for s, _ in scalars(str(tmp_path))["train/loss"]] == [2, 4, 6, 10]
    np.testing.assert_array_equal([v for _, v in scalars(str(tmp_path))["train/loss"]], [2.0, 4.0, 6.0, 10.0])


@pytest.mark.parametrize("every", [0, 1])
def test_tensorboard_every_step_when_every_is_at_most_one(tmp_path, every):
    state = LoopState(4, 1)
    tb = run_log.TensorBoardScalars(str(tmp_path), state, every=every)
    for step in range(1, 5):
        state.step = step
        tb.on_train_batch_end(0, {"loss": float(step)})
    tb.on_train_end()
    assert [s for s, _ in scalars(str(tmp_path))["train/loss"]] == [1, 2, 3, 4]
