"""Tests of wmse_tf/training/schedules.py: warmup + step/cosine decay against closed forms and against
the reference's torch loop (MultiStepLR stepped once per epoch, warmup written into the lr
for the first iterations), spelled out by hand; the optimizer and its decoupled decay."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.training import config, schedules


def lrs(schedule, steps):
    return np.array([float(schedule(s)) for s in steps], np.float64)


def torch_reference_lrs(base_lr, warmup, milestones, gamma, epochs, steps_per_epoch):
    """The lr of every iteration of htdt/self-supervised train.py, written out: a
    MultiStepLR over `milestones` (epochs; `scheduler.step()` after each epoch, a repeated
    milestone applies gamma once per repetition, as torch's Counter does) and a warmup that
    sets lr = base_lr * (i + 1) / warmup for the first `warmup` iterations."""
    lr, out, i = base_lr, [], 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            if i < warmup:
                lr = base_lr * (i + 1) / warmup
            out.append(lr)
            i += 1
        lr *= gamma ** milestones.count(epoch + 1)  # scheduler.step(): last_epoch = epoch + 1
    return np.array(out)


def test_warmup_then_step_drops_like_the_reference():
    sched = schedules.WarmupSchedule(3e-3, warmup_steps=500, boundaries=(950 * 10, 975 * 10), gamma=0.2)
    lr = lambda s: float(sched(s))  # noqa: E731
    assert lr(0) == pytest.approx(3e-3 / 500) and lr(249) == pytest.approx(3e-3 * 250 / 500)
    assert lr(499) == pytest.approx(3e-3) and lr(9499) == pytest.approx(3e-3)
    assert lr(9500) == pytest.approx(6e-4) and lr(9750) == pytest.approx(1.2e-4)
    assert schedules.drop_boundaries(1000, 10, (50, 25)) == (9500, 9750)
    assert schedules.drop_boundaries(30, 10, (50, 25)) == (50,)  # drops before step 0 never happen
    again = schedules.WarmupSchedule.from_config(sched.get_config())
    assert float(again(9600)) == pytest.approx(lr(9600))


@pytest.mark.parametrize("drop_epochs", [(50, 25), (3, 1), (2, 2), (7,)])
def test_step_schedule_equals_the_torch_loop_at_every_iteration(drop_epochs):
    epochs, spe, warmup, base, gamma = 12, 7, 10, 3e-3, 0.2
    milestones = [epochs - d for d in drop_epochs]  # the reference's cfg.drop, in epochs
    want = torch_reference_lrs(base, warmup, [m for m in milestones if m > 0], gamma, epochs, spe)
    sched = schedules.WarmupSchedule(base, warmup, "step", schedules.drop_boundaries(epochs, spe, drop_epochs),
                                     gamma)
    np.testing.assert_allclose(lrs(sched, range(epochs * spe)), want, rtol=1e-6)


def test_cosine_and_constant_closed_forms():
    base, warmup, total = 0.5, 8, 50
    steps = np.arange(0, 60)
    ramp = np.minimum(1.0, (steps + 1.0) / warmup)
    progress = np.clip((steps - warmup) / (total - warmup), 0.0, 1.0)
    cosine = schedules.WarmupSchedule(base, warmup, "cosine", total_steps=total)
    np.testing.assert_allclose(lrs(cosine, steps), base * ramp * 0.5 * (1 + np.cos(np.pi * progress)),
                               rtol=1e-5, atol=1e-9)
    assert float(cosine(warmup - 1)) == pytest.approx(base) and float(cosine(total)) == pytest.approx(0.0, abs=1e-9)
    constant = schedules.WarmupSchedule(base, warmup, "constant", boundaries=(3, 9))  # boundaries ignored
    np.testing.assert_allclose(lrs(constant, steps), base * ramp, rtol=1e-6)
    no_warmup = schedules.WarmupSchedule(base, 0, "cosine", total_steps=total)
    np.testing.assert_allclose(lrs(no_warmup, steps), base * 0.5 * (1 + np.cos(np.pi * np.minimum(steps / total, 1))),
                               rtol=1e-5, atol=1e-9)


def test_schedule_accepts_tensor_steps_and_serializes():
    sched = schedules.WarmupSchedule(1e-2, 4, "cosine", total_steps=20)
    assert float(sched(tf.constant(6, tf.int64))) == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 2 / 16)))
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(sched))
    assert isinstance(again, schedules.WarmupSchedule) and again.get_config() == sched.get_config()
    np.testing.assert_array_equal(lrs(again, range(25)), lrs(sched, range(25)))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="decay must be one of"):
        schedules.WarmupSchedule(1.0, decay="linear")
    with pytest.raises(ValueError, match="total_steps"):
        schedules.WarmupSchedule(1.0, decay="cosine")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        schedules.make_optimizer("lamb", 1e-3)


def test_schedule_for_a_config():
    cfg = config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, epochs=10, lr=2e-3, warmup=5,
                             lr_schedule="step", lr_drop_epochs=(4, 2), lr_drop_gamma=0.5)
    sched = schedules.schedule_for(cfg, steps_per_epoch=3)
    want = torch_reference_lrs(2e-3, 5, [6, 8], 0.5, 10, 3)
    np.testing.assert_allclose(lrs(sched, range(30)), want, rtol=1e-6)
    cos = schedules.schedule_for(config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, epochs=10,
                                                    lr=1.0, warmup=0, lr_schedule="cosine"), steps_per_epoch=3)
    assert float(cos(15)) == pytest.approx(0.5) and float(cos(30)) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_follows_the_schedule_and_decays_decoupled(name):
    """With zero gradients the only change is decoupled decay: w <- w * (1 - lr(t) * wd) per step.
    (An L2 term added to the gradient would move Adam's weights by ~lr per step instead.)"""
    sched = schedules.WarmupSchedule(0.1, warmup_steps=4, decay="step", boundaries=(2,), gamma=0.5)
    wd = 0.3
    opt = schedules.make_optimizer(name, sched, weight_decay=wd, momentum=0.0)
    w = tf.Variable(np.array([1.0, -2.0], np.float32))
    opt.build([w])
    want = np.array([1.0, -2.0])
    for t in range(5):
        assert float(opt.learning_rate) == pytest.approx(float(sched(t)))
        opt.apply([tf.zeros_like(w)], [w])
        want = want * (1 - float(sched(t)) * wd)
        np.testing.assert_allclose(w.numpy(), want, rtol=1e-5)
    assert int(opt.iterations) == 5
    plain = schedules.make_optimizer(name, 0.1)
    assert plain.weight_decay is None
    if name == "sgd":
        assert schedules.make_optimizer("sgd", 0.1, momentum=0.7).momentum == 0.7


class _CountingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A constant schedule that counts how often the optimizer evaluates it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, step):
        self.calls += 1
        return tf.constant(0.1, tf.float32) * tf.cast(step + 1, tf.float32) / tf.cast(step + 1, tf.float32)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_evaluates_the_schedule_once_per_step(name):
    """Keras' decoupled weight decay reads the learning rate once per weight; ours reads it once per
    step, so a traced step holds one copy of the schedule, whatever the number of weights."""
    sched = _CountingSchedule()
    opt = schedules.make_optimizer(name, sched, weight_decay=0.1, momentum=0.0)
    ws = [tf.Variable(np.full([3], i + 1.0, np.float32)) for i in range(10)]
    opt.build(ws)
    sched.calls = 0
    step = tf.function(lambda: opt.apply([tf.ones_like(w) for w in ws], ws))
    step()
    assert sched.calls == 1  # once in the one trace (Keras 3.15's own optimizers: 11 with 10 weights)
    step()
    assert sched.calls == 1 and int(opt.iterations) == 2
    ref = (keras.optimizers.Adam if name == "adam" else keras.optimizers.SGD)(0.1, weight_decay=0.1)
    ref_ws = [tf.Variable(np.full([3], i + 1.0, np.float32)) for i in range(10)]
    for _ in range(2):
        ref.apply([tf.ones_like(w) for w in ref_ws], ref_ws)
    for w, r in zip(ws, ref_ws):  # the same update as Keras' own optimizer
        np.testing.assert_allclose(w.numpy(), r.numpy(), rtol=1e-6)


def test_optimizer_serializes_as_itself():
    opt = schedules.make_optimizer("adam", schedules.WarmupSchedule(0.1, warmup_steps=4), weight_decay=0.3)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(again) is schedules.Adam and again.weight_decay == pytest.approx(0.3)
    assert float(again.learning_rate) == pytest.approx(float(opt.learning_rate))
