"""Tests of bench/train_step.py: the round order (every stepper runs in every position) and the
per-round ratio to the reference."""

from bench import train_step


def test_each_stepper_takes_every_position_over_a_cycle():
    steppers = ["bare", "wmse2", "wmse4", "reference"]
    rounds = [train_step.round_order(steppers, r) for r in range(len(steppers))]
    assert all(sorted(order) == sorted(steppers) for order in rounds)
    for position in range(len(steppers)):
        assert sorted(order[position] for order in rounds) == sorted(steppers)
    assert train_step.round_order(steppers, 0) == steppers
    assert train_step.round_order(steppers, len(steppers)) == steppers


def test_ratio_spread_pairs_each_round_with_the_reference_step_of_that_round():
    ours = [2.0, 4.0, 1.0]  # seconds a step
    reference = [3.0, 4.0, 3.0]  # the reference's step in the same rounds: ratios 1.5, 1.0, 3.0
    text = train_step.ratio_spread(ours, reference)
    assert text == "per-round ratio median 1.50x (range 1.00-3.00x, 3 rounds)"
