"""A full disk or a read-only model_dir: a clear error (exit 4, or 2 at the start), the
previous checkpoint intact, and the same command resumes once there is space again.

Uses a small tmpfs (`mount -t tmpfs`, needs root; skipped with the reason otherwise)
and, everywhere, a checkpoint writer monkeypatched to fail with ENOSPC."""

import errno
import os
import subprocess

import pytest
import tensorflow as tf

from tests.reliability.conftest import assert_checkpoints_finite, checkpoint_step, read_results
from tests.test_train import smoke_config
from wmse_tf.training import config, trainer


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 400 KiB tmpfs at tmp_path/fs (a smoke checkpoint is ~0.28 MB: one fits, two do not)."""
    where = tmp_path / "fs"
    where.mkdir()
    out = _mount("-t", "tmpfs", "-o", "size=400k", "tmpfs", str(where))
    if out.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({out.stderr.strip() or out.returncode}); "
                    "the monkeypatched ENOSPC test covers the same path")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _resume_and_finish(run_dir, monkeypatch, capsys, expect_step):
    monkeypatch.undo()
    assert trainer.run(smoke_config(run_dir, "--eval_every=0", "--epochs=2")) == 0
    out = capsys.readouterr().out
    assert f"resuming at step {expect_step}" in out, out
    assert read_results(run_dir)["step"] == 8
    assert_checkpoints_finite(run_dir)


def test_disk_full_stops_clearly_and_keeps_the_last_checkpoint(tmpfs, monkeypatch, capsys, tally):
    run_dir = tmpfs / "run"
    cfg = smoke_config(run_dir, "--eval_every=0", "--epochs=2")
    assert trainer.run(cfg) == trainer.EXIT_IO  # ckpt-4 fits in 1 MiB, ckpt-8 does not
    err = capsys.readouterr().err
    assert f"cannot write to --model_dir={run_dir}" in err and "No space left on device" in err, err
    assert "ckpt-4 (intact" in err
    assert checkpoint_step(run_dir) == 4 and not list(run_dir.glob("ckpt-8*"))  # partial files removed
    assert_checkpoints_finite(run_dir)
    assert _mount("-o", "remount,size=4m", str(tmpfs)).returncode == 0  # space freed
    _resume_and_finish(run_dir, monkeypatch, capsys, 4)
    tally(faults=1, resumed=1, errors=1)


def test_read_only_model_dir_at_start(tmpfs, tally):
    run_dir = tmpfs / "run"
    run_dir.mkdir()
    assert _mount("-o", "remount,ro", str(tmpfs)).returncode == 0
    with pytest.raises(config.ConfigError, match=rf"--model_dir={run_dir}: cannot create the lock file .*"
                                                 "Read-only file system"):
        trainer.run(smoke_config(run_dir, "--eval_every=0"))
    tally(faults=1, errors=1)


@pytest.mark.parametrize("failure", ["ENOSPC", "EROFS"])
def test_write_failure_mid_save_monkeypatched(tmp_path, monkeypatch, capsys, tally, failure):
    """Without mounting: the writer fails mid-save after partial files, with an OSError
    (ENOSPC, as Python writers raise) or a TF OpError (read-only, as TF's C++ writer
    raises; a read-only remount of a busy tmpfs is refused by the kernel)."""
    real = tf.train.CheckpointManager.save

    def failing(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 8:
            prefix = os.path.join(self.directory, "ckpt")  # Checkpointer's checkpoint_name
            os.makedirs(f"{prefix}-8_temp", exist_ok=True)
            with open(f"{prefix}-8_temp/part-00000-of-00001.data-00000-of-00001", "wb") as f:
                f.write(b"\0" * 1000)
            with open(f"{prefix}-8.data-00000-of-00001", "wb") as f:
                f.write(b"\0" * 1000)
            if failure == "ENOSPC":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{prefix}-8.index")
            raise tf.errors.PermissionDeniedError(None, None, f"{prefix}-8_temp/part-00000; "
                                                  "Read-only file system")
        return real(self, checkpoint_number=checkpoint_number, **kwargs)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", failing)
    run_dir = tmp_path / "run"
    assert trainer.run(smoke_config(run_dir, "--eval_every=0", "--epochs=2")) == trainer.EXIT_IO
    err = capsys.readouterr().err
    reason = "No space left on device" if failure == "ENOSPC" else "Read-only file system"
    assert f"could not write checkpoint ckpt-8 in {run_dir} ({reason}" in err, err
    assert "ckpt-4 (intact" in err and "rerun the same command" in err
    assert checkpoint_step(run_dir) == 4 and not list(run_dir.glob("ckpt-8*"))  # partial files removed
    assert_checkpoints_finite(run_dir)
    if failure == "EROFS":  # writable again: the same command resumes from ckpt-4
        _resume_and_finish(run_dir, monkeypatch, capsys, 4)
        tally(resumed=1)
    tally(faults=1, errors=1)
