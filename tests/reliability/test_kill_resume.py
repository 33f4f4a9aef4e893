"""SIGKILL at random and at chosen points of a run (a step, a checkpoint write, the
export); every next start resumes from the last complete checkpoint and never picks up
a half-written checkpoint or export. Runs `python -m wmse_tf.train` (smoke config) as a
subprocess; the kills inside writes come from tests/reliability/faulty_train.py.

Extends tests/test_train.py (one SIGKILL after the first checkpoint, exact-resume
equality; a truncated checkpoint at the unit level)."""

import os
import signal
import subprocess
import time

import keras
import numpy as np
import pytest

from tests import helpers
from tests.reliability.conftest import (ROOT, assert_checkpoints_finite, checkpoint_step, log_steps, read_results,
                                        run_train, train_cmd)
from wmse_tf.export import saved_model as export

EPOCHS, SPE = 6, 4  # smoke: 4 steps per epoch, a checkpoint every epoch
TOTAL = EPOCHS * SPE


def _killed(proc):
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-3000:])


def _resumed_at(proc):
    for line in proc.stdout.splitlines():
        if line.startswith("resuming at step "):
            return int(line.split()[3].rstrip(":"))
    return 0


def random_kill(model_dir, rng, args, max_delay):
    """Starts the run, waits for its next checkpoint, SIGKILLs it after a random delay.

    Returns (killed, step of the newest complete checkpoint when it died)."""
    before = checkpoint_step(model_dir) or 0
    proc = subprocess.Popen(train_cmd(model_dir, *args), cwd=ROOT, env=helpers.python_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while (checkpoint_step(model_dir) or 0) <= before and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(float(rng.uniform(0.0, max_delay)))
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return killed, checkpoint_step(model_dir)


@pytest.mark.slow
def test_kills_in_writes_and_at_random_resume_from_last_complete_checkpoint(tmp_path, tally, caplog):
    """Six real processes (five SIGKILLed); `make test` keeps the one-kill exact-resume test of
    tests/test_train.py and the in-process fallback tests of tests/test_checkpoint.py."""
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    args = (f"--epochs={EPOCHS}", f"--export_dir={export_dir}")
    lost = 0  # resumes that started before the newest complete checkpoint, or from a partial one

    # 1. killed while writing ckpt-8 (half a data file, no index): the state file still names ckpt-4.
    _killed(run_train(run_dir, *args, fault="ckpt_data@8"))
    assert checkpoint_step(run_dir) == 4 and os.path.exists(run_dir / "ckpt-8.data-00000-of-00001")
    # 2. resumes at 4 (ignores the half ckpt-8), rewrites ckpt-8, killed in the state-file write of ckpt-12.
    proc = run_train(run_dir, *args, fault="ckpt_state@12")
    _killed(proc)
    lost += _resumed_at(proc) != 4
    assert checkpoint_step(run_dir) == 8 and os.path.exists(run_dir / "ckpt-12.index")
    assert [n for n in os.listdir(run_dir) if n.startswith("checkpoint.tmp")]  # the half-written state file
    # 3. a SIGKILL at a random point (seeded) after the next checkpoint: in a step or a write.
    rng = np.random.default_rng(9)
    _, at = random_kill(run_dir, rng, args, max_delay=0.5)
    assert 8 < at < TOTAL or at == TOTAL, at
    # 4. the newest complete checkpoint gets corrupted on disk (bit rot / a copy cut short):
    newest = checkpoint_step(run_dir)
    with open(run_dir / f"ckpt-{newest}.data-00000-of-00001", "r+b") as f:
        f.truncate(1000)
    # 5. resumes from the one before it (with a warning), trains to the end; killed while
    #    writing encoder.keras (a half-written temp file).
    proc = run_train(run_dir, *args, fault="encoder")
    _killed(proc)
    assert "unreadable or bad" in proc.stderr and f"ckpt-{newest}" in proc.stderr, proc.stderr[-2000:]
    lost += _resumed_at(proc) != newest - SPE
    assert not (run_dir / "encoder.keras").exists() and [n for n in os.listdir(run_dir) if n.startswith(".encoder-")]
    # 6. nothing left to train; killed while exporting (temp version dir, half-written model card).
    proc = run_train(run_dir, *args, fault="export")
    _killed(proc)
    lost += _resumed_at(proc) != TOTAL
    assert not (run_dir / "results.json").exists()
    assert [d for d in os.listdir(export_dir / "wmse2_synthetic") if not d.isdigit()]  # the temp export
    assert not [d for d in os.listdir(export_dir / "wmse2_synthetic") if d.isdigit()]
    # 7. the last start finishes: only complete files, every step once, finite weights.
    proc = run_train(run_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(run_dir)
    assert results["step"] == TOTAL
    assert log_steps(run_dir) == [SPE * e for e in range(1, EPOCHS + 1)]  # no duplicated or missing epoch
    assert_checkpoints_finite(run_dir)
    version = export.latest_version_dir(str(export_dir / "wmse2_synthetic"))
    assert version == results["export"] and version.endswith("/1")
    assert export.verify_hashes(version) == []  # the half-written card was never picked up
    loaded = helpers.reload(version)
    feats = loaded.signatures["serving_default"](images=helpers.images01(2))["feature_vector"].numpy()
    assert np.isfinite(feats).all()
    assert keras.saving.load_model(run_dir / "encoder.keras").output_shape == (None, 32)
    assert lost == 0
    tally(faults=6, kills=5, resumed=5, lost=lost)


@pytest.mark.slow
def test_many_random_kills(tmp_path, tally):
    """Seeded random SIGKILLs (bounded count) until the run completes; ~2-3 min of CPU."""
    run_dir, epochs = tmp_path / "run", 12
    args = (f"--epochs={epochs}",)
    rng = np.random.default_rng(2024)
    kills, tries = 0, 0
    while (checkpoint_step(run_dir) or 0) < epochs * SPE - 2 * SPE and tries < 8:
        tries += 1
        killed, _ = random_kill(run_dir, rng, args, max_delay=float(rng.choice([0.05, 0.3, 1.0])))
        kills += killed
        assert_checkpoints_finite(run_dir)
    proc = run_train(run_dir, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_results(run_dir)["step"] == epochs * SPE
    assert log_steps(run_dir) == [SPE * e for e in range(1, epochs + 1)]
    assert_checkpoints_finite(run_dir)
    tally(faults=kills, kills=kills, resumed=tries)
