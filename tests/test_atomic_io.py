"""Tests of wmse_tf/atomic_io.py: the one atomic writer of files and directories."""

import ast
import json
import os

import numpy as np
import pytest

from wmse_tf import atomic_io


class Boom(RuntimeError):
    pass


def listing(directory):
    return sorted(os.listdir(directory))


@pytest.fixture
def fsyncs(monkeypatch):
    """Records the path behind every os.fsync'd descriptor (the real fsync still runs)."""
    seen, real = [], os.fsync

    def fsync(fd):
        seen.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def test_write_json_and_text_replace_content(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic_io.write_json(path, {"b": 1, "a": [1, 2]})
    atomic_io.write_json(path, {"b": 2, "a": 3}, sort_keys=True)
    assert path.read_text() == '{\n  "a": 3,\n  "b": 2\n}\n'
    atomic_io.write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_bytes() == "héllo".encode()
    assert listing(tmp_path) == ["sub", "t.txt"] and listing(tmp_path / "sub") == ["results.json"]


def test_fsync_of_the_file_before_rename_and_of_the_directory_after(tmp_path, fsyncs, monkeypatch):
    path = tmp_path / "flags.json"
    renames, real_replace = [], os.replace

    def replace(src, dst):
        renames.append((len(fsyncs), src, dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_io.write_json(path, {"x": 1})
    (n_before, src, dst), = renames
    assert fsyncs[:n_before] == [src] and dst == str(path)  # the temp's data, then the rename
    assert fsyncs[n_before:] == [str(tmp_path)]  # then the directory entry
    assert os.path.basename(src).startswith(".flags.json.tmp-")


def test_a_failed_write_leaves_the_old_content_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_io.write_json(path, {"old": True})
    with pytest.raises(TypeError):  # not JSON-serializable: fails before any byte is written
        atomic_io.write_json(path, {"new": object()})

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)  # the write fails after the temp has data
    with pytest.raises(OSError, match="No space"):
        atomic_io.write_json(path, {"new": True})
    assert json.loads(path.read_text()) == {"old": True}
    assert listing(tmp_path) == ["results.json"]


def test_writing_renames_on_success_and_removes_the_temp_on_failure(tmp_path, fsyncs):
    path = tmp_path / "features.npz"
    with atomic_io.writing(path) as tmp:
        assert tmp.endswith(".npz") and os.path.dirname(tmp) == str(tmp_path)
        np.savez(tmp, x=np.arange(3))
        assert not path.exists()  # not visible before the block ends
    assert fsyncs[0] == tmp and str(tmp_path) in fsyncs
    with pytest.raises(Boom):
        with atomic_io.writing(path) as tmp:
            np.savez(tmp, x=np.arange(5))  # complete temp, but the block fails after it
            raise Boom()
    with np.load(path) as z:
        np.testing.assert_array_equal(z["x"], np.arange(3))  # the old content
    assert listing(tmp_path) == ["features.npz"]


def test_target_is_always_old_or_new_content(tmp_path, monkeypatch):
    """Observes the target at every step of a write (each fsync): never partial, never absent."""
    path = tmp_path / "registry.json"
    old, new = {"v": 1, "pad": "a" * 10000}, {"v": 2, "pad": "b" * 20000}
    atomic_io.write_json(path, old)
    seen, real = [], os.fsync

    def fsync(fd):
        seen.append(json.loads(path.read_text())["v"])
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic_io.write_json(path, new)
    assert seen == [1, 2]  # before the rename: the old content; after: the new one
    assert json.loads(path.read_text()) == new


def test_publishing_dir_replaces_atomically(tmp_path, monkeypatch):
    final = tmp_path / "model" / "1"
    with atomic_io.publishing_dir(final) as tmp:
        (tmp_path / "model" / "unrelated").write_text("kept")
        with open(os.path.join(tmp, "a.txt"), "w") as f:
            f.write("old")
    assert (final / "a.txt").read_text() == "old"

    states, real_rename = [], os.rename

    def rename(src, dst):  # what `final` holds at each rename of the replacement
        states.append(sorted(os.listdir(final)) if final.exists() else None)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with atomic_io.publishing_dir(final) as tmp:
        os.mkdir(os.path.join(tmp, "variables"))
        for name in ("b.txt", "variables/v.data"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("new")
        assert (final / "a.txt").read_text() == "old"  # untouched while the new one is written
    assert states == [["a.txt"], None]  # old complete, moved aside; then the new one moved in
    assert sorted(os.listdir(final)) == ["b.txt", "variables"]
    assert listing(tmp_path / "model") == ["1", "unrelated"]  # no temp, no old copy


def test_publishing_dir_failure_keeps_the_old_dir_and_removes_the_temp(tmp_path):
    final = tmp_path / "1"
    final.mkdir()
    (final / "a.txt").write_text("old")
    with pytest.raises(Boom):
        with atomic_io.publishing_dir(final) as tmp:
            with open(os.path.join(tmp, "half"), "w") as f:
                f.write("x")
            raise Boom()
    assert listing(tmp_path) == ["1"] and (final / "a.txt").read_text() == "old"


def test_publishing_dir_fsyncs_every_file(tmp_path, fsyncs):
    with atomic_io.publishing_dir(tmp_path / "1") as tmp:
        os.mkdir(os.path.join(tmp, "variables"))
        for name in ("saved_model.pb", "variables/v.data"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("x")
    names = [os.path.relpath(p, tmp) for p in fsyncs if p.startswith(tmp)]
    assert {"saved_model.pb", "variables/v.data", "variables", "."} <= set(names)
    assert fsyncs[-1] == str(tmp_path)  # the parent, after the rename


def test_temp_names_are_hidden_and_remote_paths_are_recognized():
    assert os.path.basename(atomic_io.temp_path("/a/b/encoder.keras", ".keras")).startswith(".encoder.keras.tmp-")
    assert atomic_io.temp_path("gs://bucket/run/flags.json").startswith("gs://bucket/run/.flags.json.tmp-")
    assert atomic_io.is_remote("gs://b/x") and not atomic_io.is_remote("/tmp/x")


def test_imports_nothing_of_ours():
    with open(atomic_io.__file__) as f:
        tree = ast.parse(f.read())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules and not {m for m in modules if m.split(".")[0] in ("wmse_tf", "zoo", "tests")}
