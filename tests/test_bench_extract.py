"""Tests of bench/extract.py's timing and table (the runtimes themselves: tests/test_export_formats.py)."""

import numpy as np

from bench import extract


def test_time_one_runs_whole_batches_only():
    seen = []
    speed = extract.time_one(lambda x: seen.append(len(x)), np.zeros((10, 2, 2, 3), np.uint8), 4)
    assert seen == [4, 4] and speed > 0  # 8 images timed, the last 2 (less than a batch) not sent


def test_table_gives_medians_and_ratios_to_the_savedmodel():
    speeds = {("savedmodel", 1): [100.0, 90.0, 110.0], ("litert", 1): [300.0, 200.0, 400.0],
              ("savedmodel", 32): [1000.0], ("litert", 32): [500.0]}
    rows = extract.table(speeds, ["savedmodel", "litert"], [1, 32]).splitlines()
    assert rows[0].startswith("| runtime | batch 1: img/s (x SavedModel) | batch 32")
    assert rows[2] == "| savedmodel | 100 (1.00x) | 1,000 (1.00x) |"
    assert rows[3] == "| litert | 300 (3.00x) | 500 (0.50x) |"
