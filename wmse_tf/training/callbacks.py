"""Keras callbacks of a training run: NaN stop, checkpoints (+ on signals), k-NN monitor,
throughput / learning-rate values. The log writers are in `wmse_tf.training.run_log`.

They share a `wmse_tf.training.loop.LoopState` (global step, stop reason) advanced by
`wmse_tf.training.loop.TrainLoop`.
Order matters: a callback sees the keys earlier ones add to `logs`; put
`Throughput`, `NaNGuard`, `KnnMonitor` before the log writers (`wmse_tf.training.run_log`), then
`CheckpointSaver` (a kill between a log row and its checkpoint then loses no row), and
the ProgbarLogger last.
"""

import logging
import math
import shutil
import signal
import threading
import time

import keras
import tensorflow as tf

from wmse_tf.evaluation import knn
from wmse_tf.training import checkpoint as ckpt_lib

log = logging.getLogger(__name__)


def nan_message(step_range, hints):
    """The error of a non-finite loss, with the usual causes for W-MSE."""
    lo, hi = step_range
    where = f"step {hi}" if lo == hi else f"steps {lo}-{hi}"
    h = dict(hints)
    return (f"non-finite loss (NaN/Inf) at {where}; training stopped, no checkpoint written after it. "
            "Likely causes: the whitening Cholesky failed on a (near-)singular covariance - raise "
            f"--w_eps (now {h.get('w_eps')}; e.g. 0.01-0.1 shrinks it towards identity) or use a "
            f"larger --w_size relative to --emb (now w_size={h.get('w_size')}, emb={h.get('emb')}; "
            f"w_size >= 2*emb recommended); or the learning rate is too high (--lr={h.get('lr')}); "
            "or the mixed_float16 range overflowed (try --mixed_precision=float32).")


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first execution whose loss is NaN/Inf (sets state.stop_reason)."""

    def __init__(self, state, hints=None, steps_per_execution=1):
        super().__init__()
        self.state = state
        self.hints = hints or {}
        self.steps_per_execution = steps_per_execution

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        step = self.state.step
        lo = max(step - self.steps_per_execution + 1, 1)
        self.state.stop_reason = "nan"
        self.state.stop_detail = nan_message((lo, step), self.hints)
        self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        ok = (logs or {}).get("step_ok")
        if ok is not None and ok < 1.0:
            log.warning("epoch %d: %.1f%% of the steps had non-finite gradients and were skipped",
                        epoch + 1, 100 * (1 - ok))


class CheckpointSaver(keras.callbacks.Callback):
    """Saves every `every_epochs` epochs, on SIGTERM/SIGINT (then stops), and at the end.

    Never saves after a NaN stop, and `Checkpointer.save` refuses non-finite weights.
    A signal sets a flag; the checkpoint is written after the running execution, the
    loop stops, and `state.stop_reason` becomes "signal" (`state.signal` the number).
    A second signal of the same kind gets the default behaviour (kill / KeyboardInterrupt).

    Args:
      checkpointer: wmse_tf.training.checkpoint.Checkpointer.
      state: the LoopState.
      every_epochs: period in epochs (0: only on signals and at the end).
      scratch_dir: a non-chief worker's private dir, deleted after each save.
      handle_signals: install SIGTERM/SIGINT handlers (main thread only).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, checkpointer, state, every_epochs=0, scratch_dir=None, handle_signals=True):
        super().__init__()
        self.checkpointer = checkpointer
        self.state = state
        self.every_epochs = every_epochs
        self.scratch_dir = scratch_dir
        self.handle_signals = handle_signals
        self.received = None
        self.saved_step = None
        self._previous = {}

    def _on_signal(self, signum, frame):
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def on_train_begin(self, logs=None):
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)

    def on_train_batch_end(self, batch, logs=None):
        if self.received is not None and self.state.stop_reason != "signal":
            self.save()
            self.state.stop_reason = "signal"
            self.state.signal = self.received
            self.state.stop_detail = (f"stopped by {signal.Signals(self.received).name} at step "
                                      f"{self.state.step}; checkpoint {self.checkpointer.latest}")
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self.save()

    def on_train_end(self, logs=None):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if self.state.stop_reason in (None, "unhealthy"):  # a health stop keeps its last checkpoint
            self.save()

    def save(self):
        """Writes a checkpoint at state.step unless stopped on NaN or already written."""
        if self.state.stop_reason == "nan" or self.saved_step == self.state.step:
            return None
        try:
            path = self.checkpointer.save(self.state.step)
        except ckpt_lib.NonFiniteWeightsError as e:
            self.state.stop_reason, self.state.stop_detail = "nan", str(e)
            self.model.stop_training = True
            return None
        self.saved_step = self.state.step
        if self.scratch_dir:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)
        return path


class KnnMonitor(keras.callbacks.Callback):
    """k-NN accuracy of the encoder's features every `every` epochs (and after the last).

    Memory bank: `train_ds`, queries: `test_ds` (tf.data of (images, labels) batches,
    capped at `max_train` / `max_test` images, 0 = all). `metric`: "cosine" (L2-normalized
    features) or "euclidean" (raw features, the reference's `eval/knn.py`). Adds `knn_acc`
    and the same value as `knn_acc_<metric>` to the logs, so the log names its metric.
    Given the run's `state`, the last epoch is the planned one (a wall-clock budget).
    """

    def __init__(self, encoder, train_ds, test_ds, every, epochs, k=5, max_train=0, max_test=0,
                 jit_compile=False, state=None, metric="cosine"):
        super().__init__()
        if metric not in knn.METRICS:
            raise ValueError(f"KnnMonitor: metric must be one of {knn.METRICS}, got {metric!r}")
        self.state = state
        self.encoder, self.train_ds, self.test_ds = encoder, train_ds, test_ds
        self.every, self.epochs, self.k = every, epochs, k
        self.max_train, self.max_test = max_train or None, max_test or None
        self.jit_compile, self.metric = jit_compile, metric
        self._features = None
        self.last = None

    def features(self, dataset, limit):
        if self._features is None:
            encoder, normalize = self.encoder, self.metric == "cosine"

            @tf.function(jit_compile=self.jit_compile, reduce_retracing=True, autograph=False)
            def fn(images):
                feats = tf.cast(encoder(images, training=False), tf.float32)
                return tf.math.l2_normalize(feats, axis=-1) if normalize else feats

            self._features = fn
        feats, labels, count = [], [], 0
        for images, y in dataset:
            feats.append(self._features(images))
            labels.append(y)
            count += int(images.shape[0])
            if limit and count >= limit:
                break
        return tf.concat(feats, 0)[:limit], tf.concat(labels, 0)[:limit]

    def evaluate(self):
        train_x, train_y = self.features(self.train_ds, self.max_train)
        test_x, test_y = self.features(self.test_ds, self.max_test)
        keep = train_y >= 0  # drop unlabelled images from the memory bank
        return knn.knn_accuracy(tf.boolean_mask(train_x, keep), tf.boolean_mask(train_y, keep),
                                test_x, test_y, k=self.k, metric=self.metric)

    def on_epoch_end(self, epoch, logs=None):
        last = self.state.step >= self.state.total_steps if self.state else epoch + 1 == self.epochs
        if not self.every or ((epoch + 1) % self.every and not last):
            return
        self.last = self.evaluate()
        if logs is not None:
            logs["knn_acc"] = logs[f"knn_acc_{self.metric}"] = self.last


class Throughput(keras.callbacks.Callback):
    """Adds `images_per_sec` (train step time only, first execution excluded) and `lr`."""

    def __init__(self, state, batch_size, schedule=None):
        super().__init__()
        self.state, self.batch_size, self.schedule = state, batch_size, schedule
        self._warm = False
        self._begin = self._images = self._seconds = 0.0
        self._step0 = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._images = self._seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._begin, self._step0 = time.perf_counter(), self.state.step

    def on_train_batch_end(self, batch, logs=None):
        dt = time.perf_counter() - self._begin
        if self._warm:  # the first execution of a run includes tracing
            self._images += (self.state.step - self._step0) * self.batch_size
            self._seconds += dt
        self._warm = True
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)

    def _add(self, logs):
        if logs is None:
            return
        if self._seconds > 0:
            logs["images_per_sec"] = self._images / self._seconds
        if self.schedule is not None:
            logs["lr"] = float(self.schedule(self.state.step))
