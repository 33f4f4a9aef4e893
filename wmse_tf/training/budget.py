"""Wall-clock budget of a training run: measure the step, plan the steps that fit, keep the plan.

With `--time_budget=8m` a run does not train a fixed number of epochs: `TimeBudget`
times the first steps after tracing, plans how many steps fit in the budget, and lays
the learning-rate schedule over them (`WarmupSchedule.plan`: warmup kept in steps, the
decay stretched so its drops fall at the same fractions). It plans again at every epoch
end (whose cost, k-NN monitor, checkpoint and logs, it then knows) and every twentieth of
the budget, from the recent step time, so a machine whose speed changes (other jobs on
its cores) still ends on time. A slow CPU so ends on time and a fast one trains longer;
`--epochs` gives the shape of the schedule, not the length.

The budget counts from `started_at`: by default the start of `trainer.run` (so building the
model and loading the data count too: on a slow CPU they took 36 s of a 480 s budget), or a
caller's earlier start. `reserve(step_seconds)` is kept free for what a caller runs after the loop
(e.g. an evaluation whose cost scales with the step time). The plan is written to
`<model_dir>/plan.json`; a resumed run keeps it (no new measurement), and the planned
and done steps go into results.json and the model card.

Example:
  >>> budget = TimeBudget(480, schedule, state, plan_path="runs/x/plan.json")
"""

import dataclasses
import math
import os
import time
from typing import Optional

import keras

from wmse_tf import atomic_io
from wmse_tf.training import checkpoint as ckpt_lib
from wmse_tf.training.loop import UNPLANNED

PLAN_NAME = "plan.json"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How many steps a budgeted run trains, and the measurements it was planned from."""

    budget_seconds: float
    planned_steps: int
    nominal_steps: int  # epochs * steps_per_epoch of the flags: the schedule's shape
    step_seconds: float  # one training step, measured after tracing
    epoch_end_seconds: float  # epoch-end work (k-NN monitor, checkpoint, logs); 0 until measured
    planned_at_step: int
    elapsed_seconds: float  # time since the budget's start when the plan was made
    final: bool
    reserved_seconds: float = 0.0  # kept free for after the loop (the caller's reserve)

    def to_dict(self):
        return dataclasses.asdict(self)


def read_plan(model_dir):
    """The Plan saved in model_dir, or None."""
    saved = ckpt_lib.read_json(os.path.join(model_dir, PLAN_NAME))
    if not saved:
        return None
    fields = {f.name for f in dataclasses.fields(Plan)}
    return Plan(**{k: v for k, v in saved.items() if k in fields})


def plan_steps(budget, elapsed, step, step_seconds, epoch_end_seconds, steps_per_epoch):
    """The last step T such that training steps step+1..T and the epoch ends they cross
    (the final, possibly partial, epoch included) fit in `budget - elapsed` seconds.

    Returns `step` (stop now) when nothing more fits.
    """
    remaining = budget - elapsed
    if remaining <= 0 or step_seconds <= 0:
        return step

    def cost(total):
        ends = math.ceil(total / steps_per_epoch) - step // steps_per_epoch
        return (total - step) * step_seconds + ends * epoch_end_seconds

    lo, hi = step, step + int(remaining / step_seconds) + 1  # cost(lo) fits or lo == step; cost(hi) doesn't
    while hi - lo > 1:  # cost grows with total: the largest total that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= remaining else (lo, mid)
    return lo


class TimeBudget(keras.callbacks.Callback):
    """Plans a run's length from its measured speed (see the module doc).

    Args:
      budget_seconds: wall-clock seconds of the training loop.
      schedule: the run's `WarmupSchedule` (re-planned in place).
      state: the `LoopState`; its `planned_steps` is set by each plan.
      plan_path: where the plan is written (None: not written, e.g. a non-chief worker).
      plan: a saved Plan to keep (a resumed run): nothing is measured.
      measure_steps, measure_seconds: the first plan waits for both, counted after the
        first execution (which includes tracing).
      replan_seconds: how often the plan is renewed from the recent step time (default: a
        twentieth of the budget), so a machine that slows down still ends on time.
      started_at: `time.perf_counter()` the budget counts from (default: the loop's start).
      reserve: step_seconds -> seconds kept free after the loop (default: none).
    """

    def __init__(self, budget_seconds, schedule, state, plan_path=None, plan=None,
                 measure_steps=10, measure_seconds=3.0, replan_seconds=None, started_at=None, reserve=None):
        super().__init__()
        self.budget = float(budget_seconds)
        self.started_at, self.reserve = started_at, reserve
        self.schedule, self.state, self.plan_path = schedule, state, plan_path
        self.measure_steps, self.measure_seconds = measure_steps, measure_seconds
        self.replan_seconds = replan_seconds or max(self.budget / 20, 1.0)
        self.plan: Optional[Plan] = None
        self.kept = plan is not None
        self._start = self._batch_begin = self._last_batch_end = self._planned_at = None
        self._traced = False
        self._window = [0.0, 0]  # execution seconds and steps since the last plan
        self._total = [0.0, 0]  # the same since the first execution
        self._epoch_ends = []
        if plan is not None:  # a resumed run keeps its plan
            self._apply(dataclasses.replace(plan, final=True))
        else:  # not bounded by --epochs until planned
            state.planned_steps = UNPLANNED

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter() if self.started_at is None else self.started_at

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin, self._step_begin = time.perf_counter(), self.state.step

    def on_train_batch_end(self, batch, logs=None):
        now = self._last_batch_end = time.perf_counter()
        if self.kept:
            return
        if not self._traced:  # the first execution traced the step: not a step time
            self._traced = True
            if now - self._start >= self._loop_budget(0.0):  # tracing alone spent the budget
                self._replan(now - self._start)
            return
        seconds, steps = now - self._batch_begin, self.state.step - self._step_begin
        for acc in (self._window, self._total):
            acc[0] += seconds
            acc[1] += steps
        if self.plan is None:
            measured = self._total[1] >= self.measure_steps and self._total[0] >= self.measure_seconds
            step_s = self._total[0] / self._total[1]
            out_of_time = now - self._start + step_s > self._loop_budget(step_s)
            if measured or out_of_time:
                self._replan(self._total[0] / self._total[1])
        elif now - self._planned_at >= self.replan_seconds:
            self._replan(self._step_seconds())

    def on_epoch_end(self, epoch, logs=None):
        # Placed after the other epoch-end callbacks (k-NN monitor, logs, checkpoint): their
        # cost is now known.
        if self.kept or self._last_batch_end is None:
            return
        self._epoch_ends.append(time.perf_counter() - self._last_batch_end)
        if self.plan is not None:
            self._replan(self._step_seconds())

    def on_train_end(self, logs=None):
        if self.plan is not None and not self.plan.final:
            self._apply(dataclasses.replace(self.plan, final=True))

    def _step_seconds(self):
        """Recent step time: since the last plan when that window holds a few steps."""
        window = self._window if self._window[1] >= 3 else self._total
        return window[0] / window[1] if window[1] else self.plan.step_seconds

    def _loop_budget(self, step_seconds):
        """The budget less what is reserved for after the loop."""
        return self.budget - (self.reserve(step_seconds) if self.reserve else 0.0)

    def _replan(self, step_seconds):
        self._planned_at = time.perf_counter()
        elapsed = self._planned_at - self._start
        epoch_end = sum(self._epoch_ends[-3:]) / len(self._epoch_ends[-3:]) if self._epoch_ends else 0.0
        step = self.state.step
        loop_budget = self._loop_budget(step_seconds)
        total = plan_steps(loop_budget, elapsed, step, step_seconds, epoch_end, self.state.steps_per_epoch)
        self._window = [0.0, 0]
        self._apply(Plan(self.budget, max(total, step, 1), self.state.epochs * self.state.steps_per_epoch,
                         round(step_seconds, 5), round(epoch_end, 3), step, round(elapsed, 2), False,
                         round(self.budget - loop_budget, 1)))

    def _apply(self, plan):
        self.plan = plan
        self.state.planned_steps = plan.planned_steps
        self.schedule.plan(plan.planned_steps)
        if self.plan_path:
            atomic_io.write_json(self.plan_path, plan.to_dict(), sort_keys=True)

    def summary(self):
        """The budget and its plan for results.json and the model card (the trainer adds the steps done)."""
        out = {"time_budget_seconds": self.budget}
        if self.plan is not None:
            out.update(planned_steps=self.plan.planned_steps, plan=self.plan.to_dict())
        return out
