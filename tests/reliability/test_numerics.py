"""NaN/Inf inputs and a collapsed (rank-deficient) projection: the whitening health is
reported as metrics (whiten_ok, whiten_cond), training stops at once (exit 3) naming the
step and the likely causes (--w_eps, --w_size vs --emb, --lr), and no checkpoint ever holds
NaN weights; --w_eps makes the same collapsed batches trainable.

Extends tests/test_train.py::test_nan_stops_at_once_and_keeps_the_last_good_checkpoint
(NaN inputs), tests/test_model.py::test_nan_loss_never_reaches_the_weights,
tests/test_objectives.py::test_stats_report_health and test_bad_shapes_raise_naming_the_argument
(w_size <= emb rejected by the objective), tests/test_config.py (rejected as a flag)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reliability.conftest import assert_checkpoints_finite, checkpoint_step, read_results
from tests.test_train import smoke_config
from wmse_tf.data import pipeline
from wmse_tf.training import trainer

POISON_FROM = 6  # batches 6, 7, ... (steps 7+) are poisoned


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs or {}))


def _poison(monkeypatch, fn):
    real = pipeline.ssl_dataset

    def poisoned(*args, **kwargs):
        ds = real(*args, **kwargs).enumerate()
        return ds.map(lambda i, b: (tuple(tf.cond(i >= POISON_FROM, lambda: fn(v), lambda: v) for v in b[0]),
                                    b[1]))

    monkeypatch.setattr(pipeline, "ssl_dataset", poisoned)
    record = _Record()
    real_cbs = trainer.make_callbacks

    def make(*args):
        cbs, monitor = real_cbs(*args)
        cbs.callbacks.append(record)
        return cbs, monitor

    monkeypatch.setattr(trainer, "make_callbacks", make)
    return record


def _four_distinct_images(v):
    """Every batch = its first 4 images repeated: rank <= 4 < emb = 8 in every sub-batch."""
    return tf.tile(v[:4], [tf.shape(v)[0] // 4, 1, 1, 1])


def test_inf_input_stops_with_step_and_causes(tmp_path, monkeypatch, capsys, tally):
    record = _poison(monkeypatch, lambda v: tf.where(tf.range(tf.shape(v)[0])[:, None, None, None] == 3,
                                                     np.inf, v))  # one image of the batch is +Inf
    assert trainer.run(smoke_config(tmp_path, "--eval_every=0", "--epochs=2")) == trainer.EXIT_NAN
    err = capsys.readouterr().err
    assert "non-finite loss (NaN/Inf) at step 7" in err and "--w_eps" in err and "--lr" in err
    assert record.logs[-1]["step_ok"] < 1.0 and len(record.logs) == POISON_FROM + 1  # epoch means
    assert checkpoint_step(tmp_path) == 4 and not (tmp_path / "encoder.keras").exists()
    assert not (tmp_path / "results.json").exists()
    assert_checkpoints_finite(tmp_path)
    tally(faults=1, errors=1)


def test_collapsed_projection_stops_and_w_eps_trains_through(tmp_path, monkeypatch, capsys, tally):
    record = _poison(monkeypatch, _four_distinct_images)
    assert trainer.run(smoke_config(tmp_path / "eps0", "--eval_every=0", "--epochs=2")) == trainer.EXIT_NAN
    err = capsys.readouterr().err
    assert "at step 7" in err and "Cholesky" in err and "--w_eps (now 0.0" in err and "w_size=32, emb=8" in err
    bad = record.logs[-1]
    assert bad["whiten_ok"] < 1.0 or bad["whiten_cond"] > 1e6, bad  # reported (epoch means)
    assert all(r["whiten_ok"] == 1.0 for r in record.logs[:POISON_FROM])
    assert_checkpoints_finite(tmp_path / "eps0")
    # The same collapsed batches with covariance shrinkage: finite, well-conditioned, trained to the end.
    record.logs.clear()
    assert trainer.run(smoke_config(tmp_path / "eps", "--eval_every=0", "--epochs=2", "--w_eps=0.1")) == 0
    assert read_results(tmp_path / "eps")["step"] == 8
    assert all(r["whiten_ok"] == 1.0 and np.isfinite(r["loss"]) for r in record.logs)
    assert max(r["whiten_cond"] for r in record.logs) < 1e3
    assert_checkpoints_finite(tmp_path / "eps")
    tally(faults=2, errors=1)


def test_w_size_not_above_emb_is_refused_before_training(tmp_path, tally):
    with pytest.raises(trainer.config_lib.ConfigError, match="w_size"):
        smoke_config(tmp_path, "--w_size=8", "--emb=8", "--batch_size=64")
    tally(errors=1)
