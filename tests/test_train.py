"""Tests of the training command: wmse_tf/train.py, trainer.py, callbacks.py (loop.py,
checkpoint.py, schedules.py and knn.py have their own test modules). End-to-end runs use
configs/smoke.flags (16x16 synthetic images, ResNet-10 of width 4): seconds each."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wmse_tf import train
from wmse_tf.core import archs, encoders, model, objectives
from wmse_tf.data import pipeline
from wmse_tf.training import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


def smoke_config(tmp_path, *args):
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--verbose=0", *args])
    try:
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


# --------------------------------------------------------------- training runs
FULL_ARGS = ("--eval_every=0", "--exact_resume")


@pytest.fixture(scope="module")
def full_command(tmp_path_factory):
    """One uninterrupted, exported smoke run (FULL_ARGS) by the command, `python -m wmse_tf.train`, with
    TF_CPP_MIN_LOG_LEVEL unset and its output piped: (model_dir, the CompletedProcess)."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    env = {k: v for k, v in helpers.python_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "wmse_tf.train", f"--flagfile={SMOKE}", f"--model_dir={run_dir}",
                           *FULL_ARGS, f"--export_dir={run_dir}/export"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


@pytest.fixture(scope="module")
def full_run(full_command):
    """The model_dir of `full_command`: the reference of an interrupted run and the finished run that a
    resume with other key flags must refuse."""
    return full_command[0]


# TensorFlow's C++ log: absl's format (`E0000 00:00:1796590102.284366 ...`, `I1206 20:51:15.123456 ...`) and
# TF's own (`2026-12-06 20:51:15.123: I tensorflow/...`).
TF_LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] )", re.M)


def test_the_command_prints_its_own_lines_and_one_progress_line_per_epoch(full_command):
    """No line of TensorFlow's C++ log (wmse_tf's commands turn it off: wmse_tf.tf_log), and Keras'
    progress to a pipe as one line per epoch (--verbose unset), not a bar repainted per step."""
    _, proc = full_command
    output = proc.stdout + proc.stderr
    assert not TF_LOG_LINE.findall(output) and "absl::InitializeLog" not in output, output[-3000:]
    assert "starting: wmse on synthetic" in proc.stdout and "done: step 12" in proc.stdout  # wmse_tf's lines
    assert len(re.findall(r"^4/4 - ", proc.stdout, re.M)) == 3, proc.stdout  # 3 epochs of 4 steps
    assert "\r" not in proc.stdout and "\b" not in proc.stdout and "\u2501" not in proc.stdout  # no bar
    assert TF_LOG_LINE.search("E0000 00:00:1796590102.284366    5704 cuda_platform.cc:52] failed call to cuInit")


@pytest.mark.slow
def test_nan_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """Slow: in the default suite tests/reliability/test_numerics.py::test_inf_input_stops_with_step_and_causes
    checks the same stop (a non-finite loss at step 7, ckpt-4 kept and finite, no encoder.keras or
    results.json) in-process, and tests/test_model.py::test_nan_loss_never_reaches_the_weights NaN inputs."""
    real = pipeline.ssl_dataset

    def poisoned(*args, **kwargs):  # batches 6, 7, ... are NaN (steps 7+)
        ds = real(*args, **kwargs).enumerate()
        return ds.map(lambda i, b: (tuple(tf.where(i >= 6, np.nan, v) for v in b[0]), b[1]))

    monkeypatch.setattr(pipeline, "ssl_dataset", poisoned)
    cfg = smoke_config(tmp_path, "--eval_every=0")
    assert trainer.run(cfg) == trainer.EXIT_NAN
    err = capsys.readouterr().err
    assert "non-finite loss" in err and "step 7" in err and "--w_eps" in err and "--lr" in err
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    assert not os.path.exists(tmp_path / "encoder.keras") and not os.path.exists(tmp_path / "results.json")
    reader = tf.train.load_checkpoint(str(tmp_path / "ckpt-4"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.asarray(value).dtype.kind == "f":
            assert np.isfinite(value).all(), name


class _SendSignal(keras.callbacks.Callback):
    def __init__(self, state, at_step):
        super().__init__()
        self.state, self.at_step, self.sent = state, at_step, False

    def on_train_batch_end(self, batch, logs=None):
        if self.state.step >= self.at_step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_checkpoints_mid_epoch_and_resume_finishes(tmp_path, monkeypatch, full_run):
    """SIGTERM mid-epoch: a checkpoint, then the resumed run (--exact_resume) continues the
    uninterrupted run's batches and ends with its losses (the in-process twin of
    test_killed_run_resumes_to_the_same_step)."""
    helpers.skip_if_onednn_wrong(archs.convolutions("resnet10", "cifar", 4, 16))  # smoke.flags' encoder
    real = trainer.make_callbacks

    def with_signal(cfg, model_, state, *args):
        cbs, *rest = real(cfg, model_, state, *args)
        cbs.callbacks.insert(0, _SendSignal(state, at_step=6))
        return (cbs, *rest)

    monkeypatch.setattr(trainer, "make_callbacks", with_signal)
    cfg = smoke_config(tmp_path, *FULL_ARGS)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    assert trainer.run(cfg) == 128 + signal.SIGTERM
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-6")  # mid-epoch 2 of 3
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the run's handlers are gone
    monkeypatch.setattr(trainer, "make_callbacks", real)
    assert trainer.run(cfg) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["step"] == 12 and np.isfinite(results["final"]["loss"])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 4), (2, 8), (3, 12)]
    assert keras.saving.load_model(tmp_path / "encoder.keras").output_shape == (None, 32)
    # Epoch 1 ran before the signal, epoch 3 after the resume: both as in the uninterrupted run.
    full = [json.loads(line) for line in (full_run / "log.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([rows[0]["loss"], rows[2]["loss"], results["final"]["loss"]],
                               [full[0]["loss"], full[2]["loss"], _results(full_run)["final"]["loss"]], rtol=1e-4)


def test_resume_refuses_other_key_flags_and_export(full_run):
    cfg = smoke_config(full_run, *FULL_ARGS, f"--export_dir={full_run}/export")
    results = _results(full_run)
    assert results["export"].endswith("wmse2_synthetic/1") and os.path.exists(results["export"] + "/saved_model.pb")
    assert trainer.run(cfg) == 0  # already trained: nothing to do, results kept
    assert _results(full_run) == results
    longer = smoke_config(full_run, *FULL_ARGS, "--epochs=4", "--lr=1e-3")
    assert trainer.check_resume(longer, str(full_run)) is True  # epochs, lr may change
    with pytest.raises(trainer.config_lib.ConfigError, match=r"--emb=16 \(saved: 8\)"):
        trainer.check_resume(smoke_config(full_run, *FULL_ARGS, "--emb=16", "--w_size=64", "--batch_size=64"),
                             str(full_run))


# ---------------------------------------------------------------- the command, end to end
KILL_ARGS = ("--epochs=8", "--checkpoint_every=2", "--eval_every=0", "--verbose=0", "--exact_resume")


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_step(tmp_path, capsys):
    """SIGKILL of a real `python -m wmse_tf.train` process after its first checkpoint; the
    uninterrupted reference run and the resumed run are the same command, run in-process.
    Slow: in the default suite test_sigterm_checkpoints_mid_epoch_and_resume_finishes checks the
    same exact resume in-process, test_run_log.py the log rows after a checkpoint dropped."""
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "wmse_tf.train", f"--flagfile={SMOKE}", f"--model_dir={killed}", *KILL_ARGS]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while tf.train.latest_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive, "the run ended before it could be killed"
    killed_at = int(tf.train.latest_checkpoint(killed).rsplit("-", 1)[1])
    assert killed_at < 32 and not os.path.exists(os.path.join(killed, "results.json"))
    assert trainer.run(smoke_config(full, *KILL_ARGS)) == 0
    capsys.readouterr()
    assert trainer.run(smoke_config(killed, *KILL_ARGS)) == 0
    assert f"resuming at step {killed_at}" in capsys.readouterr().out
    a, b = _results(full), _results(killed)
    assert a["step"] == b["step"] == 32
    # --exact_resume replays the data stream: the resumed run continues the same batches,
    # with the restored weights, optimizer moments, BN statistics and permutation RNG.
    np.testing.assert_allclose(b["final"]["loss"], a["final"]["loss"], rtol=1e-4)
    rows = {name: [json.loads(line) for line in open(os.path.join(d, "log.jsonl"))]
            for name, d in (("full", full), ("killed", killed))}
    assert [r["step"] for r in rows["killed"]] == [4 * e for e in range(1, 9)]  # no duplicate rows
    np.testing.assert_allclose([r["loss"] for r in rows["killed"]], [r["loss"] for r in rows["full"]],
                               rtol=1e-4)
    assert os.path.exists(os.path.join(killed, "encoder.keras"))


def test_mixed_float16_overflow_lowers_the_loss_scale():
    # model.py's NaN guard must let overflowing scaled gradients reach the
    # LossScaleOptimizer (which skips the step and halves its scale).
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        m = model.SSLModel(encoders.resnet(18, width=4, input_shape=(8, 8, 3)), encoders.projector(8, hidden=16),
                           objectives.WMSE(w_size=16), seed=0)
        m.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**40))
        views = tuple(np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32") for _ in range(2))
        out = m.train_on_batch((views, np.zeros(32)), return_dict=True)
        assert out["step_ok"] == 0.0 and np.isfinite(out["loss"])
        assert float(m.optimizer.dynamic_scale) == 2.0**39
        assert all(np.isfinite(w.numpy()).all() for w in m.weights)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def test_knn_monitor_metric_is_switchable_and_named_in_the_logs(tmp_path):
    from wmse_tf.training import callbacks

    # Query [9, 0.2]: Euclidean nearest is [10, 0.5] (class 1), cosine nearest is [1, 0] (class 0).
    bank = tf.data.Dataset.from_tensor_slices((np.array([[1.0, 0.0], [10.0, 0.5]], np.float32),
                                               np.array([0, 1]))).batch(2)
    query = tf.data.Dataset.from_tensor_slices((np.array([[9.0, 0.2]], np.float32), np.array([1]))).batch(1)
    identity = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    accs = {}
    for metric in ("euclidean", "cosine"):
        logs = {}
        callbacks.KnnMonitor(identity, bank, query, every=1, epochs=1, k=1, metric=metric).on_epoch_end(0, logs)
        assert set(logs) == {"knn_acc", f"knn_acc_{metric}"} and logs["knn_acc"] == logs[f"knn_acc_{metric}"]
        accs[metric] = logs["knn_acc"]
    assert accs == {"euclidean": 1.0, "cosine": 0.0}
    with pytest.raises(ValueError, match="metric"):
        callbacks.KnnMonitor(identity, bank, query, every=1, epochs=1, metric="manhattan")
    cfg = smoke_config(tmp_path, "--knn_metric=euclidean", "--bn_per_view")
    assert cfg.knn_metric == "euclidean" and cfg.bn_per_view
    assert trainer.build_model(cfg, total_steps=10).bn_per_view is True
    assert trainer.knn_monitor(cfg, trainer.build_model(cfg, 10).encoder).metric == "euclidean"
