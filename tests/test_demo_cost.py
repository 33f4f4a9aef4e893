"""The demo's plan of its wall-clock budget (wmse_tf/demo/cost.py): the evaluation's estimate kept
free by the training budget on a simulated slow CPU, and the calibration's median."""

import pytest

from tests.test_budget import _simulate
from wmse_tf.demo import cost


@pytest.mark.parametrize("slowdown", [2.5, 8.0])  # per step: oneDNN on / off, against the development VM
def test_the_demo_plan_ends_within_15_minutes_on_a_slower_cpu(monkeypatch, tmp_path, slowdown):
    """The demo's plan on a simulated slow CPU: its step (0.2 s on the development VM) slowdown x
    slower, and its evaluation's core-bound parts (probes, k-NN, t-SNE / plots / export: what
    `cost.calibrate` times; 57, 24 and 15 s on the development VM on 2026-12-02) 2.5x slower, as
    a 2.5x slower core (the AVX2-only Zen 3 measured 1.5-2.6x: those parts do not run on oneDNN's
    convolutions); the 11-minute demo budget, 30 s of setup before the loop. If the evaluation costs
    what `cost.estimate` says (its MARGIN off), training + evaluation end inside 15 minutes with a
    margin."""
    core = 2.5
    fixed = {k: v * core for k, v in {"probes_seconds": 57.0, "knn_seconds": 24.0, "other_seconds": 15.0}.items()}
    step_s = 0.2 * slowdown
    reserve = lambda s: cost.estimate(fixed, s, 140000, 512)  # noqa: E731
    demo_budget, setup = 660.0, 30.0
    state, _, clock, _, saved = _simulate(monkeypatch, tmp_path, step_s, budget_s=demo_budget, spe=234, epochs=10,
                                          started_at=-setup, reserve=reserve)
    evaluation = reserve(step_s) / cost.MARGIN
    assert setup + clock.now + evaluation <= demo_budget <= 15 * 60 - 120
    assert state.step >= (demo_budget - setup - reserve(step_s)) / step_s - 30  # the rest went to training


def test_the_calibration_takes_the_median_call_so_one_slow_call_does_not_inflate_it(monkeypatch):
    """`cost.median_seconds` on a fake clock: one call of five 10x slower (another process, a graph's
    first run) leaves the estimate at the typical call's time; a mean would have been 2.8x it."""
    now = [0.0]
    monkeypatch.setattr(cost.time, "perf_counter", lambda: now[0])

    def call(i):
        now[0] += 1.0 if i == 2 else 0.1

    assert cost.median_seconds(call, 5) == pytest.approx(0.1)
