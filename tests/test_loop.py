"""Tests of wmse_tf/training/loop.py: TrainLoop counts steps over epochs and executions, consumes the
dataset without gaps, resumes mid-epoch, stops mid-epoch or at an epoch end, calls Keras
callbacks in fit()'s order and hands back the logs the callbacks completed.

The model is a counter (its train_step records the batch it got), so every number is exact."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.training.loop import LoopState, TrainLoop


class Counter(keras.Model):
    """train_step: steps += 1, last = the batch (a step number); metric: mean of the batches."""

    def __init__(self):
        super().__init__()
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # (under a MirroredStrategy)
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first)
        self.last = tf.Variable(-1.0, trainable=False, aggregation=first)
        self.tracker = keras.metrics.Mean(name="loss")
        self.built = True

    def train_step(self, batch):
        x = tf.reduce_mean(tf.cast(batch, tf.float32))
        self.steps.assign_add(1)
        self.last.assign(x)
        self.tracker.update_state(x)
        return {"loss": self.tracker.result()}

    @property
    def metrics(self):
        return [self.tracker]


def make_loop(spe, steps_per_execution=1, start=0, jit_compile=False):
    strategy = tf.distribute.get_strategy()
    model = Counter()
    ds = tf.data.Dataset.range(start, 10**6).map(lambda i: tf.cast(i, tf.float32))
    return TrainLoop(model, strategy, strategy.experimental_distribute_dataset(ds), spe, steps_per_execution,
                     jit_compile), model


class Recorder(keras.callbacks.Callback):
    """Records every hook, with the loop's global step, in call order."""

    def __init__(self, state=None, name="rec"):
        super().__init__()
        self.state, self.name, self.calls = state, name, []

    def _add(self, hook, *args):
        self.calls.append((hook, *args) + ((self.state.step,) if self.state else ()))

    def on_train_begin(self, logs=None):
        self._add("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._add("epoch_begin", epoch)

    def on_train_batch_begin(self, batch, logs=None):
        self._add("batch_begin", batch)

    def on_train_batch_end(self, batch, logs=None):
        self._add("batch_end", batch, logs["loss"])

    def on_epoch_end(self, epoch, logs=None):
        self._add("epoch_end", epoch, logs["loss"])

    def on_train_end(self, logs=None):
        self._add("train_end")


def test_counts_steps_and_logs_epoch_means():
    loop, model = make_loop(spe=5)
    state = LoopState(5, 3)
    rec = Recorder(state)
    logs = loop.run(3, [rec], state=state)
    assert state.step == 15 and int(model.steps.numpy()) == 15 and state.epoch == 2
    assert float(model.last.numpy()) == 14.0  # batches 0..14, none skipped or repeated
    # metrics are reset each epoch: epoch e's loss is the mean of its batches 5e..5e+4
    assert [c for c in rec.calls if c[0] == "epoch_end"] == [("epoch_end", e, 5 * e + 2.0, 5 * e + 5)
                                                            for e in range(3)]
    assert [c[1:] for c in rec.calls if c[0] == "batch_end"][:5] == [(b, b / 2, b + 1) for b in range(5)]
    assert logs == {"loss": 12.0} and state.logs == logs


@pytest.mark.parametrize("jit_compile", [False, True])
def test_steps_per_execution_runs_n_steps_per_call(jit_compile):
    loop, model = make_loop(spe=5, steps_per_execution=2, jit_compile=jit_compile)
    state = LoopState(5, 2)
    rec = Recorder(state)
    loop.run(2, [rec], state=state)
    assert state.step == 10 and int(model.steps.numpy()) == 10 and float(model.last.numpy()) == 9.0
    # one callback batch per execution: 2 + 2 + 1 steps per epoch (never across the epoch end)
    ends = [(c[1], c[3]) for c in rec.calls if c[0] == "batch_end"]
    assert ends == [(1, 2), (3, 4), (4, 5), (1, 7), (3, 9), (4, 10)]
    begins = [c[1] for c in rec.calls if c[0] == "batch_begin"]
    assert begins == [0, 2, 4, 0, 2, 4]


def test_hooks_in_fit_order_and_callbacks_see_earlier_callbacks_keys():
    class AddKey(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = 10.0 * (epoch + 1)

    class ReadKey(keras.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(logs.get("extra"))

    loop, _ = make_loop(spe=2)
    rec, reader = Recorder(), ReadKey()
    logs = loop.run(2, [AddKey(), reader, rec])
    assert [c[:2] for c in rec.calls] == [
        ("train_begin",), ("epoch_begin", 0), ("batch_begin", 0), ("batch_end", 0), ("batch_begin", 1),
        ("batch_end", 1), ("epoch_end", 0), ("epoch_begin", 1), ("batch_begin", 0), ("batch_end", 0),
        ("batch_begin", 1), ("batch_end", 1), ("epoch_end", 1), ("train_end",)]
    assert reader.seen == [10.0, 20.0]
    assert logs["extra"] == 20.0 and logs["loss"] == 2.5  # the returned logs include the callbacks' keys


def test_resumes_mid_epoch_at_the_initial_step():
    loop, model = make_loop(spe=5, start=7)  # the dataset continues where a run stopped
    state = LoopState(5, 3)
    rec = Recorder(state)
    loop.run(3, [rec], initial_step=7, state=state)
    assert state.step == 15 and int(model.steps.numpy()) == 8 and float(model.last.numpy()) == 14.0
    assert [c[1] for c in rec.calls if c[0] == "epoch_begin"] == [1, 2]
    # epoch 1 runs its remaining batches 2, 3, 4 (global steps 8, 9, 10)
    assert [(c[1], c[3]) for c in rec.calls if c[0] == "batch_end"][:3] == [(2, 8), (3, 9), (4, 10)]
    done, _ = make_loop(spe=5)
    assert done.run(3, initial_step=15) == {} and int(done.model.steps.numpy()) == 0  # nothing left


def test_stop_mid_epoch_skips_the_epoch_end():
    class StopAt(keras.callbacks.Callback):
        def __init__(self, state, step):
            super().__init__()
            self.state, self.step = state, step

        def on_train_batch_end(self, batch, logs=None):
            if self.state.step >= self.step:
                self.model.stop_training = True

    loop, model = make_loop(spe=5)
    state = LoopState(5, 4)
    rec = Recorder(state)
    loop.run(4, [StopAt(state, 7), rec], state=state)
    assert state.step == 7 and int(model.steps.numpy()) == 7
    assert [c[1] for c in rec.calls if c[0] == "epoch_end"] == [0]  # no epoch end for the cut epoch
    assert rec.calls[-1][0] == "train_end" and not state.epoch_done


def test_stop_at_an_epoch_end_stops_after_it():
    class StopAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    loop, model = make_loop(spe=3)
    state = LoopState(3, 5)
    rec = Recorder(state)
    loop.run(5, [StopAfterEpoch(), rec], state=state)
    assert state.step == 6 and int(model.steps.numpy()) == 6 and state.epoch_done
    assert [c[1] for c in rec.calls if c[0] == "epoch_end"] == [0, 1]


def test_state_properties():
    state = LoopState(steps_per_epoch=4, epochs=3, step=8)
    assert state.total_steps == 12 and state.epoch_done
    state.step = 9
    assert not state.epoch_done


def test_under_mirrored_strategy_metrics_are_replica_means(two_cpus):
    with two_cpus.scope():
        model = Counter()
    ds = tf.data.Dataset.range(10**6).map(lambda i: tf.cast(i, tf.float32)).batch(2)  # replica r gets 2i + r
    loop = TrainLoop(model, two_cpus, two_cpus.experimental_distribute_dataset(ds), 3)
    state = LoopState(3, 2)
    logs = loop.run(2, state=state)
    assert state.step == 6
    assert [int(v.numpy()) for v in model.steps.values] == [6, 6]  # each replica ran every step
    # epoch 2 saw batches 3, 4, 5: replica 0 means 2*(3+4+5)/3, replica 1 one more; mean of both
    assert logs["loss"] == pytest.approx(np.mean([8.0, 9.0]))
