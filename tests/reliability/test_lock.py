"""Two runs on one model_dir: the second refuses (exit 2) naming the dir and the holder's
pid; a lock left by a dead (SIGKILLed) run never blocks. wmse_tf/training/lock.py, trainer.run."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tests import helpers
from tests.reliability.conftest import ROOT, run_train
from wmse_tf.training import lock

HOLD = textwrap.dedent("""
    import sys, time
    from wmse_tf.training import lock
    lock.RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def _hold_in_subprocess(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT, env=helpers.python_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_is_exclusive_and_names_the_holder(tmp_path, tally):
    holder = _hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(lock.LockedError) as e:
            lock.RunLock(str(tmp_path)).acquire()
        message = str(e.value)
        assert f"--model_dir={tmp_path} is in use" in message and f"pid {holder.pid}" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # a dead holder: the kernel drops its flock
        holder.wait()
    stale = json.loads((tmp_path / lock.LOCK_NAME).read_text())
    assert stale["pid"] == holder.pid  # the lock file is still there, naming a dead process...
    with lock.RunLock(str(tmp_path)) as held:  # ...and does not block
        assert held.held
        assert json.loads((tmp_path / lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not held.held
    tally(faults=2, kills=1, errors=1)


def test_second_training_run_refuses_with_exit_2(tmp_path, tally):
    run_dir = tmp_path / "run"
    os.makedirs(run_dir)
    with lock.RunLock(str(run_dir)):  # this process plays the first run
        proc = run_train(run_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"--model_dir={run_dir} is in use by another run (pid {os.getpid()}" in proc.stderr
    assert sorted(os.listdir(run_dir)) == [lock.LOCK_NAME]  # nothing written before the lock
    tally(faults=1, errors=1)
