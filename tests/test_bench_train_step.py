"""Tests of bench/train_step.py's round order: every stepper runs in every position."""

from bench import train_step


def test_each_stepper_takes_every_position_over_a_cycle():
    steppers = ["bare", "wmse2", "wmse4", "reference"]
    rounds = [train_step.round_order(steppers, r) for r in range(len(steppers))]
    assert all(sorted(order) == sorted(steppers) for order in rounds)
    for position in range(len(steppers)):
        assert sorted(order[position] for order in rounds) == sorted(steppers)
    assert train_step.round_order(steppers, 0) == steppers
    assert train_step.round_order(steppers, len(steppers)) == steppers
