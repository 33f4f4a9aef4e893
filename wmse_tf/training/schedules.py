"""Learning-rate schedule (linear warmup, then step or cosine decay) and the optimizer.

The reference recipe (htdt/self-supervised train.py): Adam, lr * (i + 1) / 500 for
the first 500 iterations, then MultiStepLR dropping the lr by 0.2 at 50 and 25
epochs before the end. `WarmupSchedule` is that, in steps.

Weight decay: the reference passes weight_decay=1e-6 to torch Adam, i.e. an L2 term
added to the gradient before Adam's normalization. Here `weight_decay` is Keras'
decoupled decay (AdamW-style: w -= lr * wd * w each step, on every weight, as torch
applies it to every parameter). At 1e-6 both forms change the weights by less than
1e-3 over a full run; the decoupled form needs no change to the train step.

Example:
  >>> sched = WarmupSchedule(3e-3, warmup_steps=500, boundaries=(950 * 195, 975 * 195))
  >>> opt = make_optimizer("adam", sched, weight_decay=1e-6)
"""

import math

import keras
import tensorflow as tf

DECAYS = ("step", "cosine", "constant")


@keras.saving.register_keras_serializable(package="wmse_tf")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = base_lr * warmup(step) * decay(step), re-plannable over another length.

    Args:
      base_lr: peak learning rate.
      warmup_steps: linear warmup, lr * (step + 1) / warmup_steps for step < warmup_steps
        (the reference's form: the first step already uses lr / warmup_steps); 0 = none.
      decay: "step" (multiply by `gamma` at each of `boundaries`), "cosine" (from
        base_lr at the end of warmup to 0 at `total_steps`) or "constant".
      boundaries: steps at which the step decay applies (ignored unless "step").
      gamma: factor of each step drop.
      total_steps: length of training, needed by "cosine" and by `plan`.

    `plan(n)` lays the same schedule over n steps instead of `total_steps` (a wall-clock
    budget decides n once training runs): the warmup keeps its length in steps (capped at
    a fifth of n), and the decay after it is stretched or squeezed linearly, so the drops
    fall at the same fractions of the decay phase. The planned length lives in variables,
    so a traced train step needs no retracing.
    """

    MAX_WARMUP_FRACTION = 0.2

    def __init__(self, base_lr, warmup_steps=0, decay="step", boundaries=(), gamma=0.2,
                 total_steps=None):
        if decay not in DECAYS:
            raise ValueError(f"WarmupSchedule: decay must be one of {DECAYS}, got {decay!r}")
        if decay == "cosine" and not total_steps:
            raise ValueError("WarmupSchedule: decay='cosine' needs total_steps")
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.boundaries = tuple(int(b) for b in boundaries)
        self.gamma = float(gamma)
        self.total_steps = None if total_steps is None else int(total_steps)
        nominal = float(self.total_steps or 1)
        # Not attributes Keras or tf.train.Checkpoint would track: the plan is a run's choice
        # (written to plan.json), not optimizer state, and old checkpoints must still restore.
        self._planned = _PlanVariables(self.warmup_steps, nominal)

    @property
    def planned_steps(self):
        """The length the schedule is laid over (total_steps until `plan` is called)."""
        return int(self._planned.total.numpy()) if self.total_steps else None

    def plan(self, total_steps):
        """Lays the schedule over `total_steps` steps (see the class doc)."""
        if not self.total_steps:
            raise ValueError("WarmupSchedule.plan: needs a schedule built with total_steps")
        total_steps = max(int(total_steps), 1)
        warmup = min(self.warmup_steps, int(self.MAX_WARMUP_FRACTION * total_steps))
        self._planned.warmup.assign(float(warmup))
        self._planned.total.assign(float(total_steps))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warmup, total = self._planned.warmup, self._planned.total
        lr = tf.constant(self.base_lr, tf.float32)
        if self.warmup_steps > 0:
            lr *= tf.minimum(1.0, (step + 1.0) / tf.maximum(warmup, 1.0))
        # The step on the nominal schedule: identity until `plan` changes the length.
        nominal_total = float(self.total_steps or 1)
        scale = max(nominal_total - self.warmup_steps, 1.0) / tf.maximum(total - warmup, 1.0)
        at = tf.where(step < warmup, step, self.warmup_steps + (step - warmup) * scale)
        if self.total_steps is None:
            at = step
        if self.decay == "step":
            for b in self.boundaries:
                lr *= tf.where(at >= float(b), self.gamma, 1.0)
        elif self.decay == "cosine":
            start = float(min(self.warmup_steps, self.total_steps))
            span = max(float(self.total_steps) - start, 1.0)
            progress = tf.clip_by_value((at - start) / span, 0.0, 1.0)
            lr *= 0.5 * (1.0 + tf.cos(math.pi * progress))
        return lr

    def get_config(self):
        return dict(base_lr=self.base_lr, warmup_steps=self.warmup_steps, decay=self.decay,
                    boundaries=list(self.boundaries), gamma=self.gamma, total_steps=self.total_steps)


class _PlanVariables:
    """The planned warmup and length of a WarmupSchedule (float32 scalars)."""

    def __init__(self, warmup, total):
        self.warmup = tf.Variable(float(warmup), trainable=False, dtype=tf.float32, name="planned_warmup")
        self.total = tf.Variable(float(total), trainable=False, dtype=tf.float32, name="planned_steps")


def drop_boundaries(epochs, steps_per_epoch, drop_epochs=(50, 25)):
    """Steps of the step drops, `drop_epochs` epochs before the end; drops that would
    fall at or before step 0 are skipped (as torch MultiStepLR never reaches them)."""
    steps = sorted((epochs - d) * steps_per_epoch for d in drop_epochs)
    return tuple(s for s in steps if s > 0)


def schedule_for(cfg, steps_per_epoch):
    """The WarmupSchedule of a TrainConfig."""
    total = cfg.epochs * steps_per_epoch
    return WarmupSchedule(cfg.lr, cfg.warmup, cfg.lr_schedule,
                          drop_boundaries(cfg.epochs, steps_per_epoch, cfg.lr_drop_epochs),
                          cfg.lr_drop_gamma, total)


class _OneLearningRatePerStep:
    """Evaluates the learning-rate schedule once per optimizer step instead of once per weight.

    Keras 3's TensorFlow optimizer reads `self.learning_rate` inside its decoupled weight decay
    for every weight, and each read evaluates the schedule: a ResNet-18 step graph then holds 66
    copies of the schedule's ops, which cost about 2 s of tracing and graph building per run (a
    quarter of a smoke run, measured with tests' smoke.flags). Every read within one step sees
    the same `iterations`, so the value is the same; only the graph is smaller. Overrides two
    private methods of keras.optimizers.Optimizer (3.x), checked by tests/test_schedules.py.
    """

    def _backend_apply_gradients(self, grads, trainable_variables):
        self._step_learning_rate = super()._get_current_learning_rate()
        try:
            return super()._backend_apply_gradients(grads, trainable_variables)
        finally:
            self._step_learning_rate = None

    def _get_current_learning_rate(self):
        lr = getattr(self, "_step_learning_rate", None)
        return super()._get_current_learning_rate() if lr is None else lr


@keras.saving.register_keras_serializable(package="wmse_tf")
class Adam(_OneLearningRatePerStep, keras.optimizers.Adam):
    """keras.optimizers.Adam whose schedule is evaluated once per step (see _OneLearningRatePerStep)."""


@keras.saving.register_keras_serializable(package="wmse_tf")
class SGD(_OneLearningRatePerStep, keras.optimizers.SGD):
    """keras.optimizers.SGD whose schedule is evaluated once per step (see _OneLearningRatePerStep)."""


def make_optimizer(name, learning_rate, weight_decay=0.0, momentum=0.9):
    """"adam" (reference) or "sgd" (with momentum); weight decay is decoupled (see module doc)."""
    wd = weight_decay or None
    if name == "adam":
        return Adam(learning_rate, weight_decay=wd)
    if name == "sgd":
        return SGD(learning_rate, momentum=momentum, weight_decay=wd)
    raise ValueError(f"make_optimizer: unknown optimizer {name!r}; choose adam or sgd")
