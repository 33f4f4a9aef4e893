"""Tests of the training command: wmse_tf/train.py, trainer.py, loop.py, callbacks.py,
checkpoint.py, schedules.py, knn.py. End-to-end runs use configs/smoke.flags (16x16
synthetic images, ResNet-18 of width 4): seconds each."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf import checkpoint, encoders, knn, model, objectives, pipeline, schedules, train, trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


def smoke_config(tmp_path, *args):
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", "--verbose=0", *args])
    try:
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    m = model.SSLModel(encoders.resnet(18, width=4, input_shape=(8, 8, 3)), encoders.projector(8, hidden=16),
                       objectives.WMSE(w_size=16), seed=seed)
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    m.optimizer.build(m.trainable_variables)
    return m


# ----------------------------------------------------------------------------- schedule
def test_warmup_then_step_drops_like_the_reference():
    sched = schedules.WarmupSchedule(3e-3, warmup_steps=500, boundaries=(950 * 10, 975 * 10), gamma=0.2)
    lr = lambda s: float(sched(s))  # noqa: E731
    assert lr(0) == pytest.approx(3e-3 / 500) and lr(249) == pytest.approx(3e-3 * 250 / 500)
    assert lr(499) == pytest.approx(3e-3) and lr(9499) == pytest.approx(3e-3)
    assert lr(9500) == pytest.approx(6e-4) and lr(9750) == pytest.approx(1.2e-4)
    assert schedules.drop_boundaries(1000, 10, (50, 25)) == (9500, 9750)
    assert schedules.drop_boundaries(30, 10, (50, 25)) == (50,)  # drops before step 0 never happen
    cos = schedules.WarmupSchedule(1.0, warmup_steps=10, decay="cosine", total_steps=110)
    assert float(cos(9)) == pytest.approx(1.0) and float(cos(60)) == pytest.approx(0.5) and float(cos(110)) < 1e-6
    again = schedules.WarmupSchedule.from_config(sched.get_config())
    assert float(again(9600)) == pytest.approx(lr(9600))


# ---------------------------------------------------------------------------------- k-NN
def _knn_numpy(train_x, train_y, test_x, k):
    d = np.linalg.norm(test_x[:, None] - train_x[None], axis=-1)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    out = []
    for row in train_y[idx]:
        values, counts = np.unique(row, return_counts=True)  # sorted: ties -> smallest label
        out.append(values[np.argmax(counts)])
    return np.array(out)


def test_knn_matches_brute_force_majority_vote():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(300, 6)), rng.normal(size=(70, 6))
    train_y = rng.integers(0, 4, 300)
    for k in (1, 4, 5):
        pred = knn.knn_predict(train_x, train_y, test_x, k=k, batch_size=32).numpy()
        np.testing.assert_array_equal(pred, _knn_numpy(train_x, train_y, test_x, k))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_array_equal(knn.knn_predict(train_x, train_y, test_x, metric="cosine").numpy(),
                                  _knn_numpy(unit(train_x), train_y, unit(test_x), 5))
    # weighted votes: one very close neighbour of class 3 outvotes four distant ones
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([3, 1, 1, 1, 1])
    q = np.array([[1.0, 0.05]])
    assert int(knn.knn_predict(bank, labels, q, k=5)[0]) == 1
    assert int(knn.knn_predict(bank, labels, q, k=5, metric="cosine", weighted=True, temperature=0.05)[0]) == 3
    assert knn.knn_accuracy(bank, labels, bank[:2], labels[:2], k=1) == 1.0


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_restore_skips_a_broken_latest_and_refuses_nan(tmp_path, caplog):
    m = tiny_model(0)
    ckpt = checkpoint.Checkpointer(str(tmp_path), m, max_to_keep=3)
    ckpt.save(10)
    saved = [w.numpy().copy() for w in m.trainable_weights]
    m.trainable_weights[0].assign(m.trainable_weights[0] + 1.0)
    ckpt.save(20)
    with open(tmp_path / "ckpt-20.data-00000-of-00001", "r+b") as f:  # a write cut short
        f.truncate(100)
    other = tiny_model(1)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.Checkpointer(str(tmp_path), other).restore() == 10
    assert "ckpt-20" in caplog.text
    for a, b in zip(saved, other.trainable_weights):
        np.testing.assert_array_equal(a, b.numpy())
    os.remove(tmp_path / "ckpt-20.index")  # killed before the index was written
    assert checkpoint.Checkpointer(str(tmp_path), tiny_model(2)).restore() == 10
    m.trainable_weights[0].assign(tf.fill(m.trainable_weights[0].shape, np.nan))
    with pytest.raises(checkpoint.NonFiniteWeightsError, match="step 30"):
        ckpt.save(30)
    assert not (tmp_path / "ckpt-30.index").exists()
    assert checkpoint.Checkpointer(str(tmp_path / "empty"), tiny_model(3)).restore() == 0


def test_checkpoint_holds_optimizer_and_rng_state(tmp_path):
    m = tiny_model(0)
    views = tuple(np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype("float32") for _ in range(2))
    m.train_on_batch((views, np.zeros(32)))
    checkpoint.Checkpointer(str(tmp_path), m).save(1)
    other = tiny_model(1)
    assert checkpoint.Checkpointer(str(tmp_path), other).restore() == 1
    for a, b in zip(m.optimizer.variables, other.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(m.seed_generator.state.numpy(), other.seed_generator.state.numpy())


# --------------------------------------------------------------- in-process training runs
def test_nan_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
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


def test_sigterm_checkpoints_mid_epoch_and_resume_finishes(tmp_path, monkeypatch):
    real = trainer.make_callbacks

    def with_signal(cfg, model_, state, *args):
        cbs, *rest = real(cfg, model_, state, *args)
        cbs.callbacks.insert(0, _SendSignal(state, at_step=6))
        return (cbs, *rest)

    monkeypatch.setattr(trainer, "make_callbacks", with_signal)
    cfg = smoke_config(tmp_path, "--eval_every=0")
    assert trainer.run(cfg) == 128 + signal.SIGTERM
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-6")  # mid-epoch 2 of 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    monkeypatch.setattr(trainer, "make_callbacks", real)
    assert trainer.run(cfg) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["step"] == 12 and np.isfinite(results["final"]["loss"])
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 4), (2, 8), (3, 12)]
    assert keras.saving.load_model(tmp_path / "encoder.keras").output_shape == (None, 32)


def test_resume_refuses_other_key_flags_and_export(tmp_path):
    cfg = smoke_config(tmp_path, "--epochs=1", "--eval_every=0", f"--export_dir={tmp_path}/export")
    assert trainer.run(cfg) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["export"].endswith("wmse_synthetic/1") and os.path.exists(results["export"] + "/saved_model.pb")
    assert trainer.run(cfg) == 0  # already trained: nothing to do, results kept
    assert json.loads((tmp_path / "results.json").read_text()) == results
    longer = smoke_config(tmp_path, "--epochs=2", "--eval_every=0", "--lr=1e-3")
    assert trainer.check_resume(longer, str(tmp_path)) is True  # epochs, lr may change
    with pytest.raises(trainer.config_lib.ConfigError, match=r"--emb=16 \(saved: 8\)"):
        trainer.check_resume(smoke_config(tmp_path, "--emb=16", "--w_size=64", "--batch_size=64"), str(tmp_path))


# ---------------------------------------------------------------- the command, end to end
def _cmd(model_dir, *args):
    return [sys.executable, "-m", "wmse_tf.train", f"--flagfile={SMOKE}", f"--model_dir={model_dir}",
            "--epochs=8", "--checkpoint_every=2", "--eval_every=0", "--verbose=0", "--exact_resume", *args]


def _results(model_dir):
    with open(os.path.join(model_dir, "results.json")) as f:
        return json.load(f)


def test_killed_run_resumes_to_the_same_step(tmp_path):
    full, killed = str(tmp_path / "full"), str(tmp_path / "killed")
    proc = subprocess.Popen(_cmd(killed), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while tf.train.latest_checkpoint(killed) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive, "the run ended before it could be killed"
    killed_at = int(tf.train.latest_checkpoint(killed).rsplit("-", 1)[1])
    assert killed_at < 32 and not os.path.exists(os.path.join(killed, "results.json"))
    reference = subprocess.run(_cmd(full), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    resumed = subprocess.run(_cmd(killed), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {killed_at}" in resumed.stdout
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
    from wmse_tf import callbacks

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
