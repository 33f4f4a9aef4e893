"""Tests of wmse_tf/training/config.py and the flag front end wmse_tf/train.py (in-process, no training)."""

import dataclasses
import glob
import io
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from absl import flags

from tests import layout
from wmse_tf import methods, train
from wmse_tf.data import augment_config
from wmse_tf.training import config, options, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))


def parse(*args):
    """Parses flags like the command line would; returns the validated TrainConfig."""
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", *args])
    return train.config_from_flags()


@pytest.fixture(autouse=True)
def _reset_flags():
    yield
    train.FLAGS.unparse_flags()


def test_flagfiles_exist():
    names = {os.path.basename(f)[:-6] for f in FLAGFILES}
    for name in ("cifar10", "cifar100", "stl10", "tiny_imagenet", "imagenet100", "fashion_mnist", "smoke",
                 "cifar10_wmse2", "cifar100_wmse2", "stl10_wmse2", "tiny_imagenet_wmse2"):
        assert name in names


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_every_flagfile_prints_its_config(path, capsys):
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", f"--flagfile={path}", "--print_config"])
    assert train.main(["train"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg.pop("runtime")["onednn"].startswith("oneDNN ops ")
    assert cfg["method"] in methods.REGISTRY and cfg["num_views"] >= 2
    if cfg["method"] == "wmse":
        assert cfg["w_size"] > cfg["emb"] and cfg["batch_size"] % cfg["w_size"] == 0
    assert config.TrainConfig.from_dict(cfg).to_dict() == cfg  # JSON round trip


def test_paper_recipes():
    c10 = parse(f"--flagfile={ROOT}/configs/cifar10.flags")
    assert (c10.epochs, c10.lr, c10.num_views, c10.batch_size, c10.emb, c10.w_size) == (1000, 3e-3, 4, 256, 64, 128)
    assert c10.stem == "cifar" and c10.image_size == 32 and c10.weight_decay == 1e-6 and c10.warmup == 500
    stl = parse(f"--flagfile={ROOT}/configs/stl10_wmse2.flags")
    assert (stl.epochs, stl.lr, stl.num_views, stl.batch_size, stl.emb, stl.w_size, stl.w_iter) == \
        (2000, 2e-3, 2, 512, 128, 256, 4)
    assert stl.stem == "small" and stl.image_size == 64
    inet = parse(f"--flagfile={ROOT}/configs/imagenet100.flags")
    assert inet.stem == "imagenet" and inet.image_size == 224 and inet.augment.crop_scale_min == 0.08


def test_overrides_after_flagfile_and_auto_values():
    cfg = parse(f"--flagfile={ROOT}/configs/cifar10.flags", "--emb=32", "--crop_scale_min=0.3", "--image_size=24")
    assert cfg.emb == 32 and cfg.augment.crop_scale_min == 0.3 and cfg.image_size == 24
    assert cfg.mixed_precision == resolve.mixed_precision(resolve.detect(), cfg.width)  # auto on this machine
    assert cfg.jit_compile is False and cfg.steps_per_execution == 1
    assert parse("--jit_compile=true", "--mixed_precision=mixed_bfloat16").jit_compile is True
    local = parse("--dataset=fashion_mnist", "--local_views=4", "--local_crop_scale_max=0.6").augment
    assert (local.local_views, local.local_crop_scale_max, local.local().image_size) == (4, 0.6, 14)


@pytest.mark.parametrize("args, flag, allowed", [
    (["--w_size=64", "--emb=64"], "--w_size=64", "larger than --emb=64"),
    (["--num_views=1"], "--num_views=1", ">= 2"),
    (["--batch_size=200", "--w_size=128"], "--batch_size=200", "divisible by --w_size=128"),
    (["--strategy=mirrored", "--cpu_replicas=4", "--batch_size=256", "--w_size=128"], "--w_size=128",
     "per-replica batch 64"),
    (["--dataset=mnist_nope"], "--dataset=mnist_nope", "cifar10"),
    (["--method=simsiam"], "--method=simsiam", "wmse"),
    (["--w_eps=1.5"], "--w_eps=1.5", "[0, 1)"),
    (["--crop_scale_min=0"], "crop_scale_min", "crop_scale_min"),
    (["--local_views=-1"], "local_views", "local_views >= 0"),
    (["--cpu_replicas=2"], "--cpu_replicas=2", "--strategy=mirrored"),
    (["--strategy=mirrored", "--cpu_replicas=2", "--jit_compile=true"], "--jit_compile=true", "logical CPU"),
])
def test_bad_values_name_the_flag(args, flag, allowed):
    with pytest.raises(config.ConfigError) as e:
        parse(*args)
    assert flag in str(e.value) and allowed in str(e.value) and "\n" not in str(e.value)


def test_whiten_across_replicas_only_needs_the_global_batch():
    cfg = parse("--strategy=mirrored", "--cpu_replicas=4", "--batch_size=256", "--w_size=128",
                "--whiten_across_replicas")
    assert cfg.expected_replicas == 4


@pytest.mark.parametrize("arg, allowed", [("--arch=resnet99", "resnet10|resnet18|resnet34|resnet50"),
                                          ("--strategy=horovod", "default|mirrored|multi_worker|tpu")])
def test_enum_flags_reject_unknown_values(arg, allowed):
    train.FLAGS.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError, match=allowed.replace("|", r"\|")):
        train.FLAGS(["train", arg])


def test_each_option_is_one_flag_with_the_configs_default_and_choices():
    """The flags of wmse_tf.train and TrainConfig agree: the same names, the same defaults (as the flag's value
    becomes the field's), the same choices (the enum flag's values are those validate() allows)."""
    fresh = flags.FlagValues()
    train.define_flags(fresh)
    fields = {f.name: f for f in dataclasses.fields(config.TrainConfig) if f.name != "augment"}
    augmentation = {f.name for f in dataclasses.fields(augment_config.AugmentConfig)} - {"mean", "std"}
    assert set(fresh) == set(fields) | augmentation | set(train.COMMAND_FLAGS)
    assert set(fields) == {f.name for f in options.declared()}  # every field but augment is declared
    base = config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64)
    for name, field in fields.items():
        flag = fresh[name]
        assert train.option_value(field, flag.default) == field.default, name
        assert flag.help.endswith(field.metadata["help"]), name  # an enum's help starts with <a|b|c>
        choices = field.metadata["choices"]
        assert getattr(flag.parser, "enum_values", None) == (list(choices) if choices else None), name
        if choices:
            with pytest.raises(config.ConfigError, match=re.escape(f"--{name}=nope: unknown; allowed: "
                                                                   f"{', '.join(choices)}")):
                dataclasses.replace(base, **{name: "nope"}).validate()
    # End to end: no flag given is TrainConfig's defaults (auto values resolved alike).
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", "--verbose=1"])
    assert train.config_from_flags(hardware="cpu") == resolve.resolve(config.TrainConfig(), "cpu")
    assert config.TrainConfig(dataset="folder:/data/x", method="byol").model_dir == "runs/folder_byol"


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_one_line_per_epoch_unless_on_a_terminal_or_asked(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a file or a pipe
    assert parse().verbose == 2 and parse("--verbose=1").verbose == 1 and parse("--verbose=0").verbose == 0
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert parse().verbose == 1 and parse("--verbose=2").verbose == 2


def test_key_differences():
    a = config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64)
    b = config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, lr=1.0, epochs=7)
    c = config.TrainConfig(dataset="digits", emb=8, w_size=32, batch_size=64)
    assert config.key_differences(a.key_values(), b.key_values()) == []
    assert config.key_differences(a.key_values(), c.key_values()) == [("emb", 16, 8)]


def test_command_line_error_is_one_line_and_nonzero(capsys):
    """In-process: `main` returns the exit code app.run exits with (a real process's exit code is
    tested by tests/reliability/test_lock.py::test_second_training_run_refuses_with_exit_2)."""
    train.FLAGS(["train", "--dataset=synthetic", "--w_size=32", "--emb=64", "--batch_size=64",
                 "--model_dir=/nonexistent/never"])
    assert train.main(["train"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == ["error: --w_size=32: must be larger than --emb=64: each whitening sub-batch of w_size "
                      "rows in emb dims has a singular covariance otherwise (recommended: w_size >= 2*emb)"]
    assert not os.path.exists("/nonexistent/never")
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", "--dataset=synthetic", "--w_size=128", "--emb=64", "--batch_size=128"])
    assert train.main(["train", "extra"]) == 2  # positional arguments are refused too
    assert "unexpected arguments ['extra']" in capsys.readouterr().err


# `python -m wmse_tf.train --print_config` in a fresh interpreter, then what it imported.
PRINT_CONFIG = textwrap.dedent("""
    import contextlib, io, json, runpy, sys
    sys.argv = ["train", "--flagfile=configs/cifar10.flags", "--verbose=1", "--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("wmse_tf.train", run_name="__main__")
        except SystemExit as e:
            code = e.code
    from wmse_tf.training import resolve
    print(json.dumps({"code": code, "config": json.loads(out.getvalue()), "gpu_possible": resolve.gpu_possible(),
                      "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")
                                        or m in ("wmse_tf.core.model", "wmse_tf.core.encoders",
                                                 "wmse_tf.data.datasets"))}))
""")


def test_print_config_imports_no_tensorflow():
    """Flags -> resolved config needs no TF: only the GPU check of `auto` values may import it,
    and only where a GPU device node exists (resolve.gpu_possible)."""
    proc = subprocess.run([sys.executable, "-c", PRINT_CONFIG], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["code"] == 0
    assert out["config"].pop("runtime")["onednn"].startswith("oneDNN ops ")
    assert out["config"] == parse(f"--flagfile={ROOT}/configs/cifar10.flags", "--verbose=1").to_dict()
    model_code = [m for m in out["modules"] if m.startswith("wmse_tf.") or m.split(".")[0] == "keras"]
    assert model_code == []
    if not out["gpu_possible"]:
        assert out["modules"] == [], out["modules"]


def test_a_config_may_hold_auto_values():
    cfg = config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, stem="auto",
                             mixed_precision="auto", jit_compile="auto", steps_per_execution=0).validate()
    assert not cfg.resolved and config.TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert resolve.resolve(cfg, "cpu").resolved
    assert config.TrainConfig(jit_compile="true").jit_compile is True  # the flag's spelling
    assert config.TrainConfig(jit_compile="false").jit_compile is False
    with pytest.raises(config.ConfigError, match="--stem=big"):
        config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, stem="big").validate()


def test_train_and_demo_name_the_export_as_the_zoo_does():
    assert parse("--dataset=cifar10", "--num_views=4").export_name_or_default == "wmse4_cifar10"
    assert parse("--dataset=stl10", "--num_views=2").export_name_or_default == "wmse2_stl10"
    assert parse("--dataset=cifar10", "--method=byol").export_name_or_default == "byol_cifar10"
    folder = config.TrainConfig(dataset="folder:/data/flowers/", num_views=2)  # not validated: no folder
    assert folder.export_name_or_default == "wmse2_flowers"
    sized = config.TrainConfig(dataset="folder:/data/flowers,size=96", num_views=2)  # the size is no part of it
    assert sized.export_name_or_default == "wmse2_flowers"
    assert config.TrainConfig(dataset="synthetic:size=16", num_views=2).export_name_or_default == "wmse2_synthetic"
    assert parse("--dataset=cifar10", "--export_name=mine").export_name_or_default == "mine"


@pytest.mark.parametrize("root", ["wmse_tf.training.config", "wmse_tf.training.resolve", "wmse_tf.methods"])
def test_the_config_layer_imports_only_the_standard_library(root):
    """config, resolve and the methods registry, and every module of ours they import (transitively,
    packages included), import only the standard library at module level: no TensorFlow, Keras,
    NumPy or absl."""
    seen, todo, bad = set(), [root], []
    while todo:
        name = todo.pop()
        seen.add(name)
        for module in layout.imports(name, top_level_only=True):
            if module.split(".")[0] == "wmse_tf":
                if module not in seen and module != "wmse_tf":
                    todo.append(module)
            elif module.split(".")[0] not in sys.stdlib_module_names:
                bad.append(f"{name}: {module}")
    assert not bad, bad
    assert root != "wmse_tf.training.config" or {"wmse_tf.data.info", "wmse_tf.data.augment_config",
                                                 "wmse_tf.core.archs", "wmse_tf.methods"} <= seen


# Flags whose `auto` depends on the machine (wmse_tf.training.resolve): a flagfile that fixes one
# must say why in a header line `# override --flag: <reason>`, or users on other CPUs/GPUs
# inherit a choice measured on ours (mixed_bfloat16 is ~4x slower where bf16 is emulated).
HARDWARE_AUTO_FLAGS = {"mixed_precision": "auto", "jit_compile": "auto", "steps_per_execution": "0"}


def unexplained_hardware_overrides(text):
    """The `--flag=value` lines of a flagfile that fix a hardware-dependent auto without a reason."""
    reasons = {line.split()[2].rstrip(":") for line in text.splitlines()
               if line.startswith("# override --") and len(line.split()) > 3}
    bad = []
    for line in text.splitlines():
        name, _, value = line.strip().lstrip("-").partition("=")
        if line.startswith("--") and HARDWARE_AUTO_FLAGS.get(name, value) != value and f"--{name}" not in reasons:
            bad.append(line.strip())
    return bad


@pytest.mark.parametrize("path", FLAGFILES, ids=os.path.basename)
def test_no_flagfile_overrides_a_hardware_auto_without_a_reason(path):
    with open(path) as f:
        assert unexplained_hardware_overrides(f.read()) == []


def test_the_override_check_catches_an_unexplained_precision():
    assert unexplained_hardware_overrides("# demo\n--mixed_precision=mixed_bfloat16\n--epochs=3\n") == \
        ["--mixed_precision=mixed_bfloat16"]
    assert unexplained_hardware_overrides("--jit_compile=auto\n--steps_per_execution=0\n") == []
    explained = "# override --steps_per_execution: one step per call keeps the k-NN curve per step\n"
    assert unexplained_hardware_overrides(explained + "--steps_per_execution=1\n") == []
