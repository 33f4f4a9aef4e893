"""Tests of the wall-clock budget (wmse_tf/training/budget.py), the re-plannable schedule and the
loop's planned length: planning math, a simulated run on the real loop with a fake clock
(slow and fast machines), and one smoke training run that is resumed."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_train import smoke_config
from wmse_tf.training import budget, config, schedules, trainer
from wmse_tf.training.loop import LoopState, TrainLoop


# ------------------------------------------------------------------------ parsing, planning
@pytest.mark.parametrize("text,seconds", [("480", 480), ("90s", 90), ("8m", 480), ("1.5h", 5400),
                                          ("0", 0), ("", 0), (" 2 min ", 120)])
def test_parse_duration(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["8 minutes", "-1m", "m", "1e3"])
def test_parse_duration_names_the_flag(text):
    with pytest.raises(config.ConfigError, match=r"^--time_budget=.*duration"):
        config.parse_duration(text)


def _cost(step, total, step_s, end_s, spe):
    return (total - step) * step_s + (math.ceil(total / spe) - step // spe) * end_s


@pytest.mark.parametrize("budget_s,elapsed,step,step_s,end_s,spe", [
    (480, 30, 10, 0.5, 4.0, 234), (480, 30, 10, 2.0, 4.0, 234), (100, 5, 3, 0.01, 1.0, 50),
    (60, 10, 0, 0.3, 0.0, 7), (480, 470, 300, 0.5, 4.0, 234)])
def test_plan_steps_is_the_longest_plan_that_fits(budget_s, elapsed, step, step_s, end_s, spe):
    total = budget.plan_steps(budget_s, elapsed, step, step_s, end_s, spe)
    remaining = budget_s - elapsed
    assert total >= step
    if total > step:
        assert _cost(step, total, step_s, end_s, spe) <= remaining + 1e-9
    assert _cost(step, total + 1, step_s, end_s, spe) > remaining  # one more step would not fit


def test_plan_steps_stops_when_the_budget_is_spent():
    assert budget.plan_steps(60, 61, 17, 0.1, 1.0, 10) == 17


# ----------------------------------------------------------------------------- schedule
def test_unplanned_schedule_is_the_nominal_one():
    sched = schedules.WarmupSchedule(2e-3, warmup_steps=100, decay="step", boundaries=(1170,), gamma=0.2,
                                     total_steps=1404)
    for step in (0, 50, 99, 100, 1169, 1170, 1403):
        nominal = 2e-3 * min(1.0, (step + 1) / 100) * (0.2 if step >= 1170 else 1.0)
        np.testing.assert_allclose(float(sched(step)), nominal, rtol=1e-6)
    assert sched.planned_steps == 1404


def test_planned_schedule_keeps_warmup_and_drops_at_the_same_fraction():
    sched = schedules.WarmupSchedule(2e-3, warmup_steps=100, decay="step", boundaries=(1170,), gamma=0.2,
                                     total_steps=1404)
    sched.plan(704)  # half as long: the drop moves to 100 + (1170 - 100) * 604 / 1304 = 595.6
    np.testing.assert_allclose(float(sched(49)), 2e-3 * 50 / 100, rtol=1e-6)  # warmup kept in steps
    assert float(sched(595)) == pytest.approx(2e-3) and float(sched(596)) == pytest.approx(4e-4)
    sched.plan(200)  # warmup capped at a fifth of the run
    np.testing.assert_allclose(float(sched(19)), 2e-3 * 20 / 40, rtol=1e-6)
    assert sched.planned_steps == 200
    cos = schedules.WarmupSchedule(1.0, warmup_steps=10, decay="cosine", total_steps=110)
    cos.plan(310)
    np.testing.assert_allclose([float(cos(9)), float(cos(160)), float(cos(310))], [1.0, 0.5, 0.0], atol=1e-6)


def test_plan_changes_a_traced_function_without_retracing():
    sched = schedules.WarmupSchedule(1.0, warmup_steps=0, decay="step", boundaries=(50,), total_steps=100)
    fn = tf.function(lambda s: sched(s))
    assert float(fn(tf.constant(60))) == pytest.approx(0.2)
    sched.plan(200)  # the drop moves to step 100
    assert float(fn(tf.constant(60))) == pytest.approx(1.0)
    assert fn.experimental_get_tracing_count() == 1


# ------------------------------------------------------- a simulated run on the real loop
class _FakeClock(keras.callbacks.Callback):
    """Advances a fake clock: `trace` at the first execution, `step` per step, `end` per epoch end."""

    def __init__(self, state, trace, step, end, slow_after=None):
        super().__init__()
        self.state, self.trace, self.step, self.end, self.slow_after = state, trace, step, end, slow_after
        self.now, self.first, self.before = 0.0, True, 0

    def __call__(self):
        return self.now

    def on_train_batch_begin(self, batch, logs=None):
        self.before = self.state.step

    def on_train_batch_end(self, batch, logs=None):
        slow = 3.0 if self.slow_after is not None and self.state.step > self.slow_after else 1.0
        self.now += (self.trace if self.first else 0.0) + (self.state.step - self.before) * self.step * slow
        self.first = False

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.end


class _Count(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epoch_ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(epoch)


def _simulate(monkeypatch, tmp_path, step_s, budget_s=120.0, spe=50, epochs=6, slow_after=None, **timing):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    ds = tf.data.Dataset.from_tensors((tf.zeros([4, 2]), tf.zeros([4, 1]))).repeat()
    strategy = tf.distribute.get_strategy()
    state = LoopState(spe, epochs)
    sched = schedules.WarmupSchedule(1e-3, 20, "step", (5 * spe,), 0.2, epochs * spe)
    clock = _FakeClock(state, trace=6.0, step=step_s, end=2.0, slow_after=slow_after)
    monkeypatch.setattr(budget.time, "perf_counter", clock)
    timer = budget.TimeBudget(budget_s, sched, state, str(tmp_path / "plan.json"), **timing)
    count = _Count()
    loop = TrainLoop(model, strategy, strategy.experimental_distribute_dataset(ds), spe, steps_per_execution=2)
    loop.run(epochs, [clock, count, timer], state=state)
    return state, timer, clock, count, json.loads((tmp_path / "plan.json").read_text())


@pytest.mark.parametrize("step_s", [0.4, 0.1])  # a slow and a fast machine
def test_budgeted_run_ends_on_time_and_runs_its_last_epoch_end(monkeypatch, tmp_path, step_s):
    state, timer, clock, count, saved = _simulate(monkeypatch, tmp_path, step_s)
    assert saved["final"] and saved["planned_steps"] == state.step == state.total_steps
    assert clock.now <= 120.0  # the whole loop, tracing and epoch ends included
    assert clock.now + step_s + 2.0 > 120.0 - 2 * step_s  # and not much less (steps of 2 per execution)
    assert count.epoch_ends == list(range(state.planned_epochs))  # the partial last epoch ended too
    assert saved["step_seconds"] == pytest.approx(step_s) and saved["epoch_end_seconds"] == pytest.approx(2.0)
    assert timer.summary()["planned_steps"] == state.step and timer.summary()["time_budget_seconds"] == 120


def test_a_machine_that_slows_down_mid_run_still_ends_on_time(monkeypatch, tmp_path):
    state, _, clock, _, saved = _simulate(monkeypatch, tmp_path, 0.1, slow_after=150)  # 3x slower after
    assert clock.now <= 120.0 and saved["planned_steps"] == state.step
    assert saved["step_seconds"] == pytest.approx(0.3)  # the last plan used the recent step time
    steady = _simulate(monkeypatch, tmp_path, 0.1)[0].step
    assert state.step < steady


@pytest.mark.parametrize("step_s", [0.4, 0.1])
def test_the_budget_counts_the_setup_before_the_loop_and_keeps_the_reserve_free(monkeypatch, tmp_path, step_s):
    """started_at 15 s before the loop (model build, data) and a reserve that grows with the step
    time (the demo's evaluation): the loop ends by budget - setup - reserve, and not much earlier."""
    reserve = lambda s: 10.0 + 40 * s  # noqa: E731
    state, timer, clock, _, saved = _simulate(monkeypatch, tmp_path, step_s, started_at=-15.0, reserve=reserve)
    assert clock.now + 15.0 + reserve(step_s) <= 120.0
    assert clock.now + 15.0 + reserve(step_s) + step_s + 2.0 > 120.0 - 2 * step_s
    assert saved["reserved_seconds"] == pytest.approx(reserve(step_s), abs=0.1) and saved["final"]
    assert saved["elapsed_seconds"] >= 15.0  # the setup counted


def test_a_faster_machine_trains_longer(monkeypatch, tmp_path):
    slow = _simulate(monkeypatch, tmp_path, 0.4)[0].step
    fast = _simulate(monkeypatch, tmp_path, 0.1)[0].step
    assert fast > 3 * slow


# --------------------------------------------------------------------- a real smoke run
def test_smoke_run_with_a_budget_records_and_keeps_its_plan(tmp_path, monkeypatch):
    cfg = smoke_config(tmp_path, "--time_budget=10s", "--eval_every=0", "--epochs=3")
    assert cfg.time_budget == 10
    assert trainer.run(cfg) == 0
    plan = json.loads((tmp_path / budget.PLAN_NAME).read_text())
    results = json.loads((tmp_path / "results.json").read_text())
    assert plan["final"] and results["planned_steps"] == plan["planned_steps"] == results["steps_done"]
    assert results["step"] == results["steps_done"] and results["time_budget_seconds"] == 10
    assert plan["planned_steps"] == budget.plan_steps(
        10, plan["elapsed_seconds"], plan["planned_at_step"], plan["step_seconds"], plan["epoch_end_seconds"], 4)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == plan["planned_steps"]  # the last (partial) epoch was logged
    # Resumed: the plan is kept, nothing is measured or trained again.
    monkeypatch.setattr(budget.TimeBudget, "_replan", lambda *a, **k: pytest.fail("re-planned on resume"))
    assert trainer.run(cfg) == 0
    assert json.loads((tmp_path / budget.PLAN_NAME).read_text()) == plan
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_budget_with_multi_worker_is_a_flag_error(tmp_path):
    with pytest.raises(config.ConfigError, match="--time_budget=.*multi_worker"):
        config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, time_budget=60,
                           strategy="multi_worker").validate()
