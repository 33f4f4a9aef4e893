"""Tests of wmse_tf/checkpoint.py's writing: fsync after a save, cleanup after a failed one.
(Restore and resume are tested in tests/test_train.py and tests/reliability.)"""

import errno
import os

import pytest

from tests.test_train import tiny_model
from wmse_tf import checkpoint


def test_save_fsyncs_the_checkpoint_the_state_file_and_the_directory(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(str(tmp_path), tiny_model(0))
    seen, real = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))[1])
    prefix = ckpt.save(4)
    names = {os.path.relpath(p, tmp_path) for p in seen}
    assert {"ckpt-4.index", "ckpt-4.data-00000-of-00001", "checkpoint", "."} <= names, names
    assert seen[-1] == str(tmp_path) and prefix == str(tmp_path / "ckpt-4")


def test_failed_save_removes_every_entry_of_its_prefix_only(tmp_path, monkeypatch):
    ckpt = checkpoint.Checkpointer(str(tmp_path), tiny_model(0))
    ckpt.save(8)
    for name in ("ckpt-80.index", "ckpt-80.data-00000-of-00001"):  # another step's files: kept
        (tmp_path / name).write_bytes(b"x")

    def failing(checkpoint_number=None, **kwargs):
        # Whatever TF leaves of ckpt-9 (a temp dir named after the prefix, a data file), then ENOSPC.
        (tmp_path / "ckpt-9_partial_shards").mkdir()
        (tmp_path / "ckpt-9_partial_shards" / "part-0").write_bytes(b"\0" * 100)
        (tmp_path / "ckpt-9.data-00000-of-00001").write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt.manager, "save", failing)
    with pytest.raises(checkpoint.CheckpointWriteError, match="ckpt-9 .*No space left"):
        ckpt.save(9)
    assert not list(tmp_path.glob("ckpt-9*"))
    assert (tmp_path / "ckpt-8.index").exists() and (tmp_path / "ckpt-80.index").exists()
