"""Tests of wmse_tf/training/checkpoint.py: the save/restore round trip (weights, BatchNorm statistics,
optimizer moments and step count, global step, permutation RNG), the fallback to the previous
checkpoint when the newest is corrupt, missing or non-finite, the NaN refusal, and the small
file helpers; fsync after a save and the cleanup of a failed one. Corruption is done on disk, as a crash or bit rot would; only public APIs."""

import errno
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.core import encoders, model, objectives
from wmse_tf.training import checkpoint


def small_model(seed=0, emb=8):
    """An SSLModel (conv + BatchNorm encoder, W-MSE with w_size 16 < batch: random sub-batches)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    m = model.SSLModel(keras.Model(inputs, x), encoders.projector(emb, hidden=16), objectives.WMSE(w_size=16),
                       seed=seed)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    m.optimizer.build(m.trainable_variables)
    return m


def batch(seed):
    rng = np.random.default_rng(seed)
    views = tuple(rng.normal(size=(32, 8, 8, 3)).astype("float32") for _ in range(2))
    return views, np.zeros(32)


def state_of(m):
    return {"weights": [v.numpy().copy() for v in m.variables],
            "optimizer": [np.asarray(v).copy() for v in m.optimizer.variables],
            "rng": m.seed_generator.state.numpy().copy()}


def assert_same_state(a, b):
    for key in a:
        for x, y in zip(a[key], b[key]) if key != "rng" else [(a[key], b[key])]:
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_round_trip_restores_everything_and_training_continues_identically(tmp_path):
    m = small_model(0)
    for i in range(3):
        m.train_on_batch(batch(i))
    assert checkpoint.Checkpointer(str(tmp_path), m).save(3).endswith("ckpt-3")
    saved = state_of(m)
    after = m.train_on_batch(batch(3), return_dict=True)

    other = small_model(1)  # other weights, optimizer state and RNG seed
    restorer = checkpoint.Checkpointer(str(tmp_path), other)
    assert restorer.restore() == 3 and int(restorer.step.numpy()) == 3
    assert_same_state(saved, state_of(other))
    assert int(other.optimizer.iterations.numpy()) == 3
    # the next step (W-MSE permutations drawn from the restored RNG) is the uninterrupted one
    resumed = other.train_on_batch(batch(3), return_dict=True)
    assert resumed["loss"] == pytest.approx(after["loss"], rel=1e-6)
    assert_same_state(state_of(m), state_of(other))


def test_newest_corrupt_or_missing_falls_back_to_the_previous(tmp_path, caplog):
    m = small_model(0)
    ckpt = checkpoint.Checkpointer(str(tmp_path), m, max_to_keep=3)
    ckpt.save(10)
    good = state_of(m)
    m.train_on_batch(batch(0))
    ckpt.save(20)
    with open(tmp_path / "ckpt-20.data-00000-of-00001", "r+b") as f:  # a write cut short
        f.truncate(100)
    other = small_model(1)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.Checkpointer(str(tmp_path), other).restore() == 10
    assert "ckpt-20" in caplog.text and "older checkpoint" in caplog.text
    assert_same_state(good, state_of(other))
    os.remove(tmp_path / "ckpt-20.index")  # killed before the index was written
    caplog.clear()
    third = small_model(2)
    assert checkpoint.Checkpointer(str(tmp_path), third).restore() == 10
    assert_same_state(good, state_of(third))


def test_non_finite_checkpoint_is_skipped_and_never_written_by_save(tmp_path, caplog):
    m = small_model(0)
    ckpt = checkpoint.Checkpointer(str(tmp_path), m)
    ckpt.save(1)
    good = state_of(m)
    kernel = m.trainable_weights[0]
    kernel.assign(tf.fill(kernel.shape, np.nan))
    assert not checkpoint.weights_finite(m)
    with pytest.raises(checkpoint.NonFiniteWeightsError, match="step 2"):
        ckpt.save(2)
    assert not (tmp_path / "ckpt-2.index").exists() and ckpt.latest.endswith("ckpt-1")
    ckpt.step.assign(3)
    ckpt.manager.save(checkpoint_number=3)  # a NaN checkpoint written behind save()'s back
    assert ckpt.latest.endswith("ckpt-3")
    other = small_model(1)
    with caplog.at_level(logging.WARNING):
        assert checkpoint.Checkpointer(str(tmp_path), other).restore() == 1
    assert "non-finite" in caplog.text
    assert_same_state(good, state_of(other))


def test_non_finite_optimizer_state_counts_too():
    m = small_model(0)
    assert checkpoint.weights_finite(m)
    moment = next(v for v in m.optimizer.variables if len(v.shape) > 0)
    moment.assign(tf.fill(moment.shape, np.inf))
    assert not checkpoint.weights_finite(m)


def test_no_readable_checkpoint_raises_and_an_empty_dir_starts_at_zero(tmp_path):
    assert checkpoint.Checkpointer(str(tmp_path / "empty"), small_model(0)).restore() == 0
    checkpoint.Checkpointer(str(tmp_path), small_model(0, emb=8)).save(5)
    with pytest.raises(RuntimeError, match="no readable checkpoint"):  # another projector size
        checkpoint.Checkpointer(str(tmp_path), small_model(0, emb=4)).restore()
    with open(tmp_path / "ckpt-5.data-00000-of-00001", "r+b") as f:
        f.truncate(10)
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        checkpoint.Checkpointer(str(tmp_path), small_model(0)).restore()


def test_keeps_the_last_max_to_keep_newest_first(tmp_path):
    m = small_model(0)
    ckpt = checkpoint.Checkpointer(str(tmp_path), m, max_to_keep=2)
    for step in (4, 8, 12, 16):
        ckpt.save(step)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == ["ckpt-12.index", "ckpt-16.index"]
    assert [os.path.basename(p) for p in ckpt.candidates()] == ["ckpt-16", "ckpt-12"]
    assert ckpt.latest.endswith("ckpt-16")


def test_restore_dir_reads_elsewhere(tmp_path):
    m = small_model(0)
    checkpoint.Checkpointer(str(tmp_path / "a"), m).save(7)
    other = small_model(1)
    reader = checkpoint.Checkpointer(str(tmp_path / "b"), other, restore_dir=str(tmp_path / "a"))
    assert reader.restore() == 7
    assert_same_state(state_of(m), state_of(other))
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("ckpt-*"))


def test_checkpoint_restores_from_a_relative_model_dir(tmp_path, monkeypatch):
    """A second `make demo` resumes runs/fashion_mnist, a relative path (was doubled: dir/dir/ckpt-N)."""
    monkeypatch.chdir(tmp_path)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])  # no optimizer, no RNG
    checkpoint.Checkpointer(os.path.join("runs", "x"), plain).save(7)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert checkpoint.Checkpointer(os.path.join("runs", "x"), other).restore() == 7
    np.testing.assert_array_equal(plain.get_weights()[0], other.get_weights()[0])


def test_write_errors_are_recognized_and_named():
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/ckpt-8.index")
    assert checkpoint.is_write_error(full)
    assert checkpoint.write_error_reason(full) == "No space left on device: /data/ckpt-8.index"
    ro = tf.errors.PermissionDeniedError(None, None, "/data/ckpt-8_temp/part-00000; Read-only file system")
    assert checkpoint.is_write_error(ro) and checkpoint.write_error_reason(ro) == "Read-only file system"
    other = tf.errors.InvalidArgumentError(None, None, "shapes differ")
    assert not checkpoint.is_write_error(other) and not checkpoint.is_write_error(ValueError("x"))
    assert checkpoint.write_error_reason(other) == "shapes differ"
    wrapped = checkpoint.CheckpointWriteError("could not write checkpoint ckpt-8 in /d (No space left on device)")
    assert checkpoint.is_write_error(wrapped) and checkpoint.write_error_reason(wrapped) == str(wrapped)


def test_json_helpers_write_atomically(tmp_path):
    path = str(tmp_path / "flags.json")
    assert checkpoint.read_json(path) is None
    checkpoint.write_json_atomic(path, {"b": 1, "a": [1, 2]})
    checkpoint.write_json_atomic(path, {"b": 2})
    assert checkpoint.read_json(path) == {"b": 2}
    checkpoint.write_text_atomic(str(tmp_path / "t.txt"), "x\n")
    assert (tmp_path / "t.txt").read_text() == "x\n"
    assert sorted(os.listdir(tmp_path)) == ["flags.json", "t.txt"]  # no temp files left


# ------------------------------------------------- writing: fsync, cleanup of a failed save
def test_save_fsyncs_the_checkpoint_the_state_file_and_the_directory(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(str(tmp_path), small_model(0))
    seen, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    prefix = ckpt.save(4)
    names = {os.path.relpath(p, tmp_path) for p in seen}
    assert {"ckpt-4.index", "ckpt-4.data-00000-of-00001", "checkpoint", "."} <= names, names
    assert seen[-1] == str(tmp_path) and prefix == str(tmp_path / "ckpt-4")


def test_failed_save_removes_every_entry_of_its_prefix_only(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(str(tmp_path), small_model(0))
    ckpt.save(8)
    for name in ("ckpt-80.index", "ckpt-80.data-00000-of-00001"):  # another step's files: kept
        (tmp_path / name).write_bytes(b"x")

    def failing(checkpoint_number=None, **kwargs):
        # Whatever TF leaves of ckpt-9 (a temp dir named after the prefix, a data file), then ENOSPC.
        (tmp_path / "ckpt-9_partial_shards").mkdir()
        (tmp_path / "ckpt-9_partial_shards" / "part-0").write_bytes(b"\0" * 100)
        (tmp_path / "ckpt-9.data-00000-of-00001").write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.manager, "save", failing)
    with pytest.raises(checkpoint.CheckpointWriteError, match="ckpt-9 .*No space left"):
        ckpt.save(9)
    assert not list(tmp_path.glob("ckpt-9*"))
    assert (tmp_path / "ckpt-8.index").exists() and (tmp_path / "ckpt-80.index").exists()
