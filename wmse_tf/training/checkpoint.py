"""Checkpoints of a training run: model, optimizer, step and RNG state; verified restore.

Layout of a model_dir:
  flags.json          the resolved TrainConfig (written atomically at the start)
  ckpt-<step>.index, ckpt-<step>.data-*   tf.train.Checkpoint files, the last K kept
  checkpoint          CheckpointManager's state file: the list of complete checkpoints

Atomicity: TensorFlow writes a checkpoint's data to a temporary name, merges it into
`ckpt-<step>.*` (index last), and only then rewrites the `checkpoint` state file (via an
atomic rename). A run killed mid-write therefore leaves the state file naming the
previous checkpoint. After a save, its files, the state file and the directory are
fsynced (wmse_tf.atomic_io), so a power loss does not lose a checkpoint already reported.
`restore` also verifies what it loads: a checkpoint that fails to read, does not
match the model, or holds non-finite weights is skipped with a warning and the
previous one is tried.

Example:
  >>> ckpt = Checkpointer("runs/x", model)
  >>> step = ckpt.restore()          # 0 when model_dir holds no checkpoint
  >>> ckpt.save(step=1000)
"""

import json
import logging
import os

import numpy as np
import tensorflow as tf

from wmse_tf import atomic_io

log = logging.getLogger(__name__)


class NonFiniteWeightsError(RuntimeError):
    """Refused to write a checkpoint whose weights hold NaN or Inf."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, read-only, ...); the previous one is intact."""


# What TF's C++ file system says when a write fails for lack of space or rights.
_WRITE_FAILURES = ("No space left on device", "Read-only file system", "Permission denied",
                   "Disk quota exceeded")


def is_write_error(error):
    """True for an OSError, or a TF OpError from a failed file write (ENOSPC, EROFS, EACCES)."""
    if isinstance(error, OSError):
        return True
    return isinstance(error, tf.errors.OpError) and any(m in str(error) for m in _WRITE_FAILURES)


def write_error_reason(error):
    """A one-line reason of a failed write, e.g. "No space left on device: /path"."""
    if isinstance(error, CheckpointWriteError):
        return str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    text = str(error)
    for marker in _WRITE_FAILURES:
        if marker in text:
            return marker
    return (text.strip().splitlines() or [type(error).__name__])[0][:300]


class Checkpointer:
    """tf.train.CheckpointManager over model, optimizer, global step and RNG state.

    Args:
      directory: where checkpoints go (the model_dir, or a worker's scratch dir).
      model: a compiled SSLModel (its optimizer is saved too).
      max_to_keep: number of checkpoints kept.
      restore_dir: where to read checkpoints from (default `directory`).
    """

    def __init__(self, directory, model, max_to_keep=3, restore_dir=None):
        self.directory = directory
        self.restore_dir = restore_dir or directory
        self.model = model
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        objects = dict(model=model, step=self.step)
        if getattr(model, "optimizer", None) is not None:
            objects["optimizer"] = model.optimizer
        seed_generator = getattr(model, "seed_generator", None)
        if seed_generator is not None:  # not tracked through the model by tf.train
            objects["rng"] = seed_generator.state
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max_to_keep, checkpoint_name="ckpt")

    @property
    def latest(self):
        return tf.train.latest_checkpoint(self.restore_dir)

    def candidates(self):
        """Checkpoint prefixes listed in the state file of restore_dir, newest first."""
        state = tf.train.get_checkpoint_state(self.restore_dir)
        if state is None:
            return []
        paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
        if state.model_checkpoint_path not in paths:
            paths.append(state.model_checkpoint_path)
        # get_checkpoint_state already prefixes relative entries with restore_dir (joining
        # again broke resuming a relative --model_dir such as runs/fashion_mnist).
        return sorted(set(paths), key=_step_of, reverse=True)

    def restore(self):
        """Restores the newest good checkpoint; returns its step (0 if none)."""
        for i, path in enumerate(self.candidates()):
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                if not weights_finite(self.model):
                    raise ValueError("non-finite weights")
            except Exception as e:  # noqa: BLE001 - OpError, IndexError (truncated), ValueError, ...
                log.warning("checkpoint %s is unreadable or bad (%s: %s); trying an older one",
                            path, type(e).__name__, str(e).splitlines()[0][:200])
                continue
            if i:
                log.warning("resumed from the older checkpoint %s", path)
            return int(self.step.numpy())
        if self.candidates():
            raise RuntimeError(f"no readable checkpoint in {self.restore_dir}: every one listed "
                               "in its 'checkpoint' file failed to restore (see warnings)")
        return 0

    def save(self, step):
        """Writes checkpoint `ckpt-<step>`; refuses (NonFiniteWeightsError) NaN/Inf weights."""
        if not weights_finite(self.model):
            raise NonFiniteWeightsError(
                f"refusing to checkpoint step {step}: the model holds NaN/Inf weights; "
                f"the last good checkpoint ({self.latest}) is kept")
        self.step.assign(int(step))
        try:
            path = self.manager.save(checkpoint_number=int(step))
            self._fsync(path)
            return path
        except Exception as e:  # noqa: BLE001 - OSError or a TF OpError, see is_write_error
            if not is_write_error(e):
                raise
            self._remove_partial(int(step))
            raise CheckpointWriteError(f"could not write checkpoint ckpt-{int(step)} in "
                                       f"{self.directory} ({write_error_reason(e)})") from e

    def _fsync(self, prefix):
        """fsyncs ckpt-<step>.*, the state file and the directory (TF itself does not)."""
        if not prefix or atomic_io.is_remote(prefix):
            return
        for path in tf.io.gfile.glob(prefix + ".*") + [os.path.join(self.directory, "checkpoint")]:
            atomic_io.fsync_file(path)
        atomic_io.fsync_dir(self.directory)

    def _remove_partial(self, step):
        """Deletes what a failed save of `step` left, unless the state file lists ckpt-<step>.

        Everything TF writes for a checkpoint starts with its prefix `ckpt-<step>`
        (`.index`, `.data-*`, and temp shards beside them); entries like `ckpt-<step>0`
        belong to other steps and are kept.
        """
        prefix = os.path.join(self.directory, f"ckpt-{step}")
        if os.path.normpath(prefix) in {os.path.normpath(p) for p in self.candidates()}:
            return
        try:
            for path in tf.io.gfile.glob(prefix + "*"):
                if path[len(prefix):len(prefix) + 1].isdigit():
                    continue
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                else:
                    tf.io.gfile.remove(path)
        except (OSError, tf.errors.OpError) as e:  # e.g. a read-only dir: nothing was written anyway
            log.warning("could not remove the partial checkpoint %s (%s)", prefix, e)


def weights_finite(model):
    """True when every float variable of the model (and its optimizer) is finite."""
    variables = list(model.variables)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    for v in variables:
        value = np.asarray(v.numpy() if hasattr(v, "numpy") else v)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return False
    return True


# Kept for their callers (trainer, run_log); the writing itself is wmse_tf.atomic_io's.
write_text_atomic = atomic_io.write_text


def write_json_atomic(path, obj):
    """Writes JSON with sorted keys atomically (wmse_tf.atomic_io.write_json)."""
    return atomic_io.write_json(path, obj, sort_keys=True)


def read_json(path):
    """The JSON at `path`, or None if it does not exist."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def _step_of(path):
    try:
        return int(path.rsplit("-", 1)[-1])
    except ValueError:
        return -1
