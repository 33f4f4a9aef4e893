"""The training loop: `model.train_step` under any tf.distribute strategy, Keras callbacks.

Why not `model.fit()`: Keras 3.15's fit() fails under MultiWorkerMirroredStrategy (its
`_maybe_symbolic_build` reduces the first distributed batch with a collective it cannot
run), and fit() cannot resume in the middle of an epoch. This loop is what fit() does,
minus that: `strategy.run(model.train_step)` (XLA-compiled per replica when asked) on
batches of a distributed dataset, `steps_per_execution` steps per tf.function call,
metrics reduced (mean) over replicas, and the standard callback hooks
(`on_train_batch_end(batch, logs)` once per execution, `on_epoch_end(epoch, logs)`), so
ProgbarLogger and any Keras callback work. It is the same code for every strategy.

State shared with callbacks is a `LoopState`: global `step`, `epoch`,
`steps_per_epoch`, and `stop_reason` ("nan", "signal") set by callbacks.

Example:
  >>> loop = TrainLoop(model, strategy, dist_dataset, steps_per_epoch=100)
  >>> logs = loop.run(epochs=10, callbacks=[...], initial_step=0)
"""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

UNPLANNED = 2**62  # planned_steps of a budgeted run before its plan (wmse_tf.training.budget)


@dataclasses.dataclass
class LoopState:
    """Progress of a run, read and written by callbacks."""

    steps_per_epoch: int
    epochs: int
    step: int = 0
    epoch: int = 0
    batch_size: int = 0
    planned_steps: Optional[int] = None  # set by a wall-clock budget (wmse_tf.training.budget)
    stop_reason: Optional[str] = None  # "nan" or "signal"
    stop_detail: str = ""
    signal: Optional[int] = None
    logs: dict = dataclasses.field(default_factory=dict)  # last epoch's logs, callbacks' keys included

    @property
    def total_steps(self):
        """Steps of the run: planned by a budget, else epochs * steps_per_epoch."""
        return self.planned_steps if self.planned_steps is not None else self.epochs * self.steps_per_epoch

    def steps_in_epoch(self, epoch):
        """Steps of `epoch` the run trains: steps_per_epoch, fewer in a planned last epoch."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    @property
    def planned_epochs(self):
        """Epochs the run will start, the last possibly partial."""
        return -(-self.total_steps // self.steps_per_epoch)

    @property
    def epoch_done(self):
        """True when `step` sits on an epoch boundary."""
        return self.step % self.steps_per_epoch == 0


def make_train_function(model, strategy, jit_compile=False):
    """tf.function(iterator, n) running n training steps, returning mean metrics.

    As Keras' fit() does, XLA compiles the per-replica step: `model.train_step`
    wrapped in `tf.function(jit_compile=True)` is the function `strategy.run` calls
    on each replica (Keras' `jit_compile="auto"` keeps it off under tf.distribute;
    `wmse_tf.training.resolve` does the same for multi-replica runs). The steps run in a
    tf.while_loop. Nothing is converted by autograph (fit() does not convert
    train_step either, and converting a ResNet's Python code doubles the tracing time).
    """
    replica_step = model.train_step
    if jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True, reduce_retracing=True, autograph=False)

    def one_step(batch):
        strategy.run(replica_step, args=(batch,))
        return tf.constant(0)

    one_step = tf.function(one_step, reduce_retracing=True, autograph=False)

    def results():
        return {m.name: m.result() for m in model.metrics}

    def train(iterator, n):
        def body(i):
            with tf.control_dependencies([one_step(iterator.get_next())]):
                return i + 1

        tf.while_loop(lambda i: i < n, body, [tf.constant(0)])
        with tf.control_dependencies(model.metrics[0].variables if model.metrics else []):
            per_replica = strategy.run(results)
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica.items()}

    return tf.function(train, autograph=False)


class TrainLoop:
    """Runs epochs of `steps_per_epoch` steps over an endless distributed dataset.

    Args:
      model: a compiled SSLModel (optimizer set), built, created under `strategy`.
      strategy: the tf.distribute strategy.
      dataset: a distributed dataset (strategy.distribute_datasets_from_function or
        experimental_distribute_dataset) that never runs out.
      steps_per_epoch: steps per epoch.
      steps_per_execution: steps per tf.function call (callbacks see one batch each).
      jit_compile: XLA-compile the per-replica train step.
    """

    def __init__(self, model, strategy, dataset, steps_per_epoch, steps_per_execution=1,
                 jit_compile=False):
        self.model = model
        self.strategy = strategy
        self.dataset = dataset
        self.steps_per_epoch = int(steps_per_epoch)
        self.steps_per_execution = int(steps_per_execution)
        self.train_function = make_train_function(model, strategy, jit_compile)

    def run(self, epochs, callbacks=(), initial_step=0, state=None, verbose=0):
        """Trains from `initial_step` to `state.total_steps` (or until stopped); the last
        epoch of a budgeted run may be partial (its epoch-end hooks still run).

        Returns the logs (dict of floats) of the last execution.
        """
        state = state or LoopState(self.steps_per_epoch, epochs)
        state.step = int(initial_step)
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = keras.callbacks.CallbackList(
                list(callbacks), model=self.model, epochs=epochs, steps=self.steps_per_epoch,
                verbose=verbose)
        callbacks.callbacks.append(_KeepLogs(state))
        model, spe = self.model, self.steps_per_epoch
        model.stop_training = False
        iterator = iter(self.dataset)
        logs = {}
        callbacks.on_train_begin()
        while state.step < state.total_steps and not model.stop_training:
            epoch = state.epoch = state.step // spe
            _show_planned_epochs(callbacks, state)
            model.reset_metrics()
            callbacks.on_epoch_begin(epoch)
            done = state.step - epoch * spe
            while not model.stop_training and done < state.steps_in_epoch(epoch):  # a plan may move the end
                n = min(self.steps_per_execution, state.steps_in_epoch(epoch) - done)
                callbacks.on_train_batch_begin(done)
                logs = {k: float(v) for k, v in self.train_function(iterator, tf.constant(n)).items()}
                done += n
                state.step += n
                callbacks.on_train_batch_end(done - 1, logs)
            if done < state.steps_in_epoch(epoch):  # stopped mid-epoch: no epoch-end hooks
                break
            epoch_logs = dict(logs)
            callbacks.on_epoch_end(epoch, epoch_logs)
            logs = epoch_logs
        callbacks.on_train_end(logs)
        return state.logs or logs


def _show_planned_epochs(callbacks, state):
    """Tells the callbacks (e.g. the progress bar's "Epoch i/n") the planned number of epochs."""
    if state.planned_steps == UNPLANNED:  # a budget, not yet planned: keep showing --epochs
        return
    params = dict(callbacks.params or {})
    if params.get("epochs") != state.planned_epochs:
        callbacks.set_params({**params, "epochs": state.planned_epochs})


class _KeepLogs(keras.callbacks.Callback):
    """Keeps the final epoch logs (with what other callbacks added) in the state."""

    def __init__(self, state):
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch, logs=None):
        self.state.logs = dict(logs or {})
