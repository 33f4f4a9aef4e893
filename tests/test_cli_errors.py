"""Every command-line entry point turns a user error into ONE `error:` line naming the flag or
path, exit code 2, no traceback (wmse_tf/cli.py). In-process: `cli.run(main, argv)` with the
entry point's own flags; one subprocess for absl's --flagfile handling."""

import os
import subprocess
import sys

import pytest

from tests import helpers
from wmse_tf import cli, demo, errors, evaluate, train
from wmse_tf.data import tfds as tfds_source
from zoo import build, evaluate as zoo_evaluate, extract_features, serving_client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


def run_cli(main, argv, capsys):
    """(exit code, stderr) of `cli.run(main, argv)`."""
    code, _, err = helpers.run_command(main, argv, capsys)
    return code, err


def assert_user_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


class FakeBuilder:
    """A TFDS builder whose data is missing; download_and_prepare is recorded (and may fail)."""

    def __init__(self, name, data_dir, fail=None):
        self.data_dir = os.path.join(tfds_source.data_root(data_dir), name, "1.0.0")
        self.fail, self.calls = fail, []

    def is_prepared(self):
        return False

    def download_and_prepare(self, download_dir=None):
        self.calls.append(download_dir)
        if self.fail:
            raise self.fail


@pytest.fixture
def fake_tfds(monkeypatch):
    made = []

    def builder(name, data_dir=None):
        made.append(FakeBuilder(name, data_dir, OSError("Failed to resolve 'www.cs.toronto.edu'")))
        return made[-1]

    monkeypatch.setattr(tfds_source, "builder", builder)
    return made


@pytest.fixture(scope="module")
def saved_model(tiny_export):
    return tiny_export[0]


def _bad_saved_model(tmp_path):
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    return str(tmp_path / "bad")


# --------------------------------------------------------------------------- wmse_tf.train
def test_train_missing_flagfile_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "wmse_tf.train", f"--flagfile={tmp_path}/nope.flags"], cwd=ROOT,
                          env=helpers.python_env(), capture_output=True, text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, f"--flagfile={tmp_path}/nope.flags", "no such file")
    assert "FATAL" not in proc.stderr


def test_train_dataset_errors(tmp_path, capsys, fake_tfds):
    base = ["train", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}/run", f"--data_dir={tmp_path}"]
    assert_user_error(*run_cli(train.main, base + ["--dataset=cifar11"], capsys), "--dataset=cifar11")
    assert_user_error(*run_cli(train.main, base + [f"--dataset=folder:{tmp_path}/none"], capsys),
                      f"{tmp_path}/none")
    (tmp_path / "locked").mkdir()
    with pytest.MonkeyPatch.context() as m:  # root reads any folder: simulate an unreadable one
        m.setattr(os, "listdir", lambda path: (_ for _ in ()).throw(PermissionError(13, "Permission denied", path)))
        assert_user_error(*run_cli(train.main, base + [f"--dataset=folder:{tmp_path}/locked"], capsys),
                          f"{tmp_path}/locked", "cannot be read", "Permission denied")
    # --nodownload: the TFDS download is never attempted; the error names dataset, data_dir, fix
    assert_user_error(*run_cli(train.main, base + ["--dataset=cifar10", "--nodownload"], capsys),
                      "'cifar10'", str(tmp_path), "tfds build cifar10", "--nodownload")
    assert fake_tfds and all(b.calls == [] for b in fake_tfds)
    # default: the download is attempted; offline it fails with the same kind of line
    fake_tfds.clear()
    code, err = run_cli(train.main, base + ["--dataset=cifar10"], capsys)
    assert_user_error(code, err, "'cifar10'", "download", "failed", str(tmp_path), "tfds build cifar10")
    assert [b.calls for b in fake_tfds] == [[os.path.join(str(tmp_path), "downloads")]]
    assert_user_error(*run_cli(train.main, base + ["--unknown_flag=1"], capsys), "unknown_flag")


def test_demo_dataset_missing(tmp_path, capsys, fake_tfds):
    argv = ["demo", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}/run", f"--data_dir={tmp_path}",
            "--dataset=stl10", "--nodownload"]
    assert_user_error(*run_cli(demo.main, argv, capsys), "'stl10'", str(tmp_path))
    assert fake_tfds and all(b.calls == [] for b in fake_tfds)  # asked TFDS, never downloaded
    assert_user_error(*run_cli(demo.main, argv[:-2] + ["--dataset=nope"], capsys), "--dataset=nope")


# ------------------------------------------------------------------------ wmse_tf.evaluate
def test_evaluate_model_and_dataset_errors(tmp_path, capsys, saved_model, fake_tfds):
    with helpers.own_flags(evaluate.define_flags):
        missing = str(tmp_path / "missing")
        assert_user_error(*run_cli(evaluate.main, ["evaluate", f"--model={missing}"], capsys), f"--model={missing}")
        bad = _bad_saved_model(tmp_path)
        assert_user_error(*run_cli(evaluate.main, ["evaluate", f"--model={bad}"], capsys), f"--model={bad}")
        good = ["evaluate", f"--model={saved_model}", f"--data_dir={tmp_path}"]
        assert_user_error(*run_cli(evaluate.main, good + ["--dataset=nope"], capsys), "--dataset=nope")
        assert_user_error(*run_cli(evaluate.main, good + ["--test_split=dev"], capsys), "--test_split=dev")
        assert_user_error(*run_cli(evaluate.main, good + ["--knn=cosine"], capsys), "--knn=cosine")
        assert_user_error(*run_cli(evaluate.main, good + ["--dataset=cifar100", "--nodownload"], capsys),
                          "'cifar100'", str(tmp_path))
        assert fake_tfds and all(b.calls == [] for b in fake_tfds)
        assert_user_error(*run_cli(evaluate.main, ["evaluate"], capsys), "--model")  # required flag


# ------------------------------------------------------------------------------------- zoo
def test_zoo_build_errors(tmp_path, capsys):
    with helpers.own_flags(build.define_flags):
        missing = str(tmp_path / "models.json")
        assert_user_error(*run_cli(build.main, ["build", "--all", f"--registry={missing}"], capsys),
                          f"--registry={missing}")
        assert_user_error(*run_cli(build.main, ["build", "--name=nope"], capsys), "--name=nope", "no zoo entry")
        assert_user_error(*run_cli(build.main, ["build"], capsys), "--name")
        argv = ["build", "--name=wmse2_fashion_mnist", "--skip_train", f"--runs_dir={tmp_path}"]
        assert_user_error(*run_cli(build.main, argv, capsys), "--skip_train", str(tmp_path))


def test_zoo_evaluate_errors(tmp_path, capsys, saved_model):
    with helpers.own_flags(zoo_evaluate.define_flags):
        missing = str(tmp_path / "missing")
        assert_user_error(*run_cli(zoo_evaluate.main, ["ev", f"--model={missing}"], capsys), f"--model={missing}")
        bad = _bad_saved_model(tmp_path)
        assert_user_error(*run_cli(zoo_evaluate.main, ["ev", f"--model={bad}", "--name=x"], capsys), f"--model={bad}")
        assert_user_error(*run_cli(zoo_evaluate.main, ["ev", f"--model={saved_model}"], capsys),
                          "--name=tiny", "no zoo entry")


def test_extract_features_errors(tmp_path, capsys, saved_model):
    with helpers.own_flags(extract_features.define_flags):
        out = f"--output={tmp_path}/f.npz"
        argv = ["ef", f"--model={saved_model}", out]
        missing = str(tmp_path / "photos")
        assert_user_error(*run_cli(extract_features.main, argv + [f"--folder={missing}"], capsys),
                          f"--folder={missing}")
        (tmp_path / "empty" / "cats").mkdir(parents=True)
        (tmp_path / "empty" / "cats" / "notes.txt").write_text("no images here")
        assert_user_error(*run_cli(extract_features.main, argv + [f"--folder={tmp_path}/empty"], capsys),
                          f"--folder={tmp_path}/empty", "no images")
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "a.png").write_bytes(b"not a png")
        assert_user_error(*run_cli(extract_features.main, argv + [f"--folder={tmp_path}/junk"], capsys),
                          f"--folder={tmp_path}/junk", "could be decoded")
        assert_user_error(*run_cli(extract_features.main, argv + ["--dataset=nope"], capsys), "--dataset=nope")
        bad = _bad_saved_model(tmp_path)
        assert_user_error(*run_cli(extract_features.main, ["ef", f"--model={bad}", out, "--dataset=digits"], capsys),
                          f"--model={bad}")
        assert not os.path.exists(tmp_path / "f.npz")


def test_serving_client_errors(tmp_path, capsys):
    with helpers.own_flags(serving_client.define_flags):
        missing = str(tmp_path / "a.png")
        argv = ["sc", "--rest=http://127.0.0.1:9", "--model=m", f"--images={missing}"]
        assert_user_error(*run_cli(serving_client.main, argv, capsys), f"--images={missing}")
        assert_user_error(*run_cli(serving_client.main, argv[:2] + argv[3:], capsys), "--model")


# ------------------------------------------------------------------------------ the runner
def test_programming_errors_keep_their_traceback(capsys):
    def main(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        cli.run(main, argv=["prog"])
    assert issubclass(errors.DatasetNotFoundError, errors.UserError)
    assert issubclass(train.config_lib.ConfigError, errors.UserError)
    assert cli.error_line("a\n  b") == "error: a b"
