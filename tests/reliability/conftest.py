"""Shared helpers of the reliability suite and its tally of faults, resumes and inputs.

Every test adds what it did to `figures.FIGURES` through the `tally` fixture; the totals
are printed at the end of the pytest run (the figures of docs/reliability.md).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from tests.reliability.figures import FIGURES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


@pytest.fixture
def tally():
    """tally(**counts): adds to the suite's figures, e.g. tally(faults=1, resumed=1)."""
    names = {"faults": "faults injected", "kills": "kills (SIGKILL)", "resumed": "runs resumed",
             "inputs": "inputs tried", "errors": "clear errors", "lost": "data lost"}

    def add(**counts):
        for k, v in counts.items():
            FIGURES[names[k]] += int(v)

    return add


def train_cmd(model_dir, *args, faulty=False):
    """The smoke training command (a subprocess); `faulty` runs it under faulty_train.py."""
    module = "tests.reliability.faulty_train" if faulty else "wmse_tf.train"
    return [sys.executable, "-m", module, f"--flagfile={SMOKE}", f"--model_dir={model_dir}",
            "--eval_every=0", "--verbose=0", *args]


def run_train(model_dir, *args, fault=None, timeout=300):
    """Runs the smoke command to its end; returns the CompletedProcess (text output)."""
    env = helpers.python_env()
    if fault:
        env["WMSE_FAULT"] = fault
    return subprocess.run(train_cmd(model_dir, *args, faulty=bool(fault)), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def checkpoint_step(model_dir):
    latest = tf.train.latest_checkpoint(str(model_dir))
    return None if latest is None else int(latest.rsplit("-", 1)[1])


def assert_checkpoints_finite(model_dir):
    """Every checkpoint listed in model_dir's state file reads back with finite tensors."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    assert state is not None, f"no checkpoint in {model_dir}"
    for prefix in state.all_model_checkpoint_paths:
        path = prefix if os.path.isabs(prefix) else os.path.join(str(model_dir), prefix)
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            value = np.asarray(reader.get_tensor(name))
            if value.dtype.kind == "f":
                assert np.isfinite(value).all(), (path, name)


def read_results(model_dir):
    with open(os.path.join(str(model_dir), "results.json")) as f:
        return json.load(f)


def log_steps(model_dir):
    with open(os.path.join(str(model_dir), "log.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]
