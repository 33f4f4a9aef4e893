"""wmse_tf.onednn: the decision per CPU class, the user's value, the cached check, the real switch."""

import json
import os
import platform
import subprocess
import sys
import textwrap

import keras
import pytest

from tests import helpers
from wmse_tf import onednn, onednn_check
from wmse_tf.core import archs, encoders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
RIGHT = lambda convs: {}  # noqa: E731
WRONG = lambda convs: {"k1s2c4-8@8": ("filter gradient", 0.63)}  # noqa: E731


def decide(flags=AVX2, environ=None, tf_imported=False, check=RIGHT, **kwargs):
    return onednn.decide(None, environ=environ or {}, flags=flags, machine="x86_64", system="Linux",
                         tf_imported=tf_imported, check=check, **kwargs)


@pytest.mark.parametrize("flag", ["avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16"])
def test_cpus_where_tensorflow_turns_onednn_on_itself_are_left_to_it(flag):
    d = decide(AVX2 | {"avx512f", flag}, check=WRONG)
    assert (d.on, d.source) == (True, "TF default") and flag.upper() in d.reason


def test_avx2_only_cpu_turns_onednn_on_when_the_models_convolutions_check_right():
    d = decide(check=RIGHT)
    assert (d.on, d.source) == (True, "wmse_tf auto")
    assert d.line().startswith("oneDNN ops on (wmse_tf auto): AVX2-only CPU")


def test_avx2_only_cpu_keeps_onednn_off_when_a_convolution_checks_wrong():
    d = decide(check=WRONG)
    assert (d.on, d.source) == (False, "wmse_tf auto")
    assert "k1s2c4-8@8: filter gradient" in d.reason and "TF_ENABLE_ONEDNN_OPTS=1" in d.reason


def test_a_check_that_cannot_run_keeps_onednn_off():
    def broken(convs):
        raise RuntimeError("exit 1")

    d = decide(check=broken)
    assert (d.on, d.source) == (False, "wmse_tf auto") and "did not run" in d.reason


def test_no_avx2_other_architectures_and_late_imports_leave_tensorflows_choice():
    assert decide(frozenset({"sse4_2"})).on is False
    other = onednn.decide(None, environ={}, flags=AVX2, machine="aarch64", system="Linux", check=RIGHT)
    assert (other.on, other.source) == (None, "TF default")
    late = decide(tf_imported=True)
    assert (late.on, late.source) == (False, "TF default") and "TF_ENABLE_ONEDNN_OPTS=1" in late.reason


@pytest.mark.parametrize("value,on", [("0", False), ("1", True), ("true", True), ("False", False)])
def test_the_users_value_always_wins(value, on):
    for flags in (AVX2, AVX2 | {"avx512_bf16"}, frozenset()):
        d = decide(flags, environ={onednn.VAR: value}, check=WRONG)
        assert (d.on, d.source) == (on, "user")


def test_a_value_tensorflow_ignores_is_not_the_users_choice_and_wmse_tfs_own_is_decided_anew():
    assert decide(environ={onednn.VAR: "yes"}).source == "wmse_tf auto"
    inherited = {onednn.VAR: "1", onednn.MARK: "1"}  # set by a parent wmse_tf process
    assert (decide(environ=inherited, check=WRONG).on, decide(environ=inherited).source) == (False, "wmse_tf auto")


def test_cpu_flags_come_from_the_first_processor_of_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx avx2 fma\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert onednn.cpu_flags(str(path)) == {"fpu", "avx", "avx2", "fma"}
    assert onednn.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_cached_check_runs_only_convolutions_it_has_not_seen(tmp_path):
    calls = []

    def runner(convs):
        calls.append(convs)
        return {onednn_check.key(c): (["filter gradient", 0.5] if c[2] < 8 else None) for c in convs}

    convs = [(1, 2, 4, 8, 8), (3, 1, 8, 8, 8)]
    assert onednn.cached_check(convs, str(tmp_path), runner) == {"k1s2c4-8@8": ("filter gradient", 0.5)}
    assert onednn.cached_check(convs + [(1, 2, 8, 16, 8)], str(tmp_path), runner) == {
        "k1s2c4-8@8": ("filter gradient", 0.5)}
    assert calls == [[list(c) for c in convs], [[1, 2, 8, 16, 8]]]


@pytest.mark.parametrize("arch,stem,width,size", [("resnet18", "cifar", 8, 28), ("resnet18", "small", 4, 16),
                                                  ("resnet18", "imagenet", 4, 32), ("resnet50", "cifar", 2, 8),
                                                  ("resnet10", "cifar", 4, 16)])
def test_convolutions_are_the_encoders_own(arch, stem, width, size):
    encoder = encoders.build(arch, stem, width, size)
    want = [(layer.kernel_size[0], layer.strides[0], layer.input.shape[-1], layer.filters, layer.input.shape[1])
            for layer in encoder.layers if isinstance(layer, keras.layers.Conv2D)]
    got = archs.convolutions(arch, stem, width, size)
    assert len(got) == len(set(got)) and set(got) == set(want)


def test_the_check_finds_a_wrong_kernel_and_passes_tensorflows_own(monkeypatch):
    """The check against float64 itself: TF's conv2d is right; a conv2d that is 1% off is caught.
    In this process, with oneDNN on or off: convolutions outside oneDNN's wrong class (1x1 stride 2
    with fewer than 8 input channels, which the check rightly reports on an AVX2-only CPU)."""
    import tensorflow as tf

    convs = [(1, 2, 8, 16, 8), (3, 1, 3, 8, 8)]
    assert onednn_check.check(convs, repeats=1) == {"k1s2c8-16@8": None, "k3s1c3-8@8": None}
    real = tf.nn.conv2d
    monkeypatch.setattr(tf.nn, "conv2d", lambda x, w, s, p: real(x, w, s, p) * tf.cast(
        1.0 if x.dtype == tf.float64 else 1.01, x.dtype))
    wrong = onednn_check.check(convs, repeats=1)
    assert set(wrong) == set(onednn_check.key(c) for c in convs)
    assert all(what in ("forward", "input gradient", "filter gradient") and err == pytest.approx(0.01, rel=1e-3)
               for what, err in wrong.values())


@pytest.mark.skipif(platform.machine() != "x86_64" or "avx2" not in onednn.cpu_flags(),
                    reason="oneDNN's AVX2 code needs an x86-64 CPU with AVX2")
def test_the_check_refuses_onednn_for_the_width_4_encoder_whose_shortcut_gradient_is_wrong(tmp_path, monkeypatch):
    """oneDNN 3.x's AVX2 code (TF 2.21) computes the filter gradient of 1x1 stride-2 convolutions with
    < 8 input channels wrong (bench.onednn_sweep). tests/test_model.py's width-4 encoder on 8x8 images has
    one (k1s2c4-8@8, its stage-2 shortcut): the check must say so. If this fails, oneDNN may be fixed:
    re-run `python -m bench.onednn_sweep` and update docs/training.md#onednn."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    tiny, demo = archs.convolutions("resnet18", "cifar", 4, 8), archs.convolutions("resnet18", "cifar", 8, 28)
    onednn.cached_check(tiny + demo + list(onednn.LIBRARY_CONVS), str(tmp_path))  # one subprocess for all
    wrong = onednn.cached_check(tiny, str(tmp_path))
    assert list(wrong) == ["k1s2c4-8@8"] and wrong["k1s2c4-8@8"][0] == "filter gradient"
    for convs, on in ((tiny, False), (None, False), (demo, True)):  # None: the library set, which holds the class
        d = onednn.decide(convs, environ={}, flags=AVX2, machine="x86_64", system="Linux", tf_imported=False,
                          check=lambda c: onednn.cached_check(c, str(tmp_path)))
        assert (d.on, d.source) == (on, "wmse_tf auto"), d.line()


ENTRY = textwrap.dedent("""
    import json, sys
    from wmse_tf import onednn
    onednn.cpu_flags = lambda *a: frozenset({"avx", "avx2", "fma"})   # an AVX2-only CPU
    onednn.run_check = lambda convs, repeats=3: {k: VERDICT for k in map(__import__("wmse_tf.onednn_check",
        fromlist=["key"]).key, convs)}
    from wmse_tf import train
    train.FLAGS(["train", "--flagfile=configs/smoke.flags", "--print_config"])
    printed = train.main(["train"])
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port as port
    print(json.dumps({"on": port.IsMklEnabled(), "line": onednn.current().line()}))
""")


@pytest.mark.parametrize("verdict,on", [("None", True), ("['filter gradient', 0.6]", False)])
def test_the_entry_point_sets_tensorflows_switch_before_tensorflow_is_imported(tmp_path, verdict, on):
    env = {k: v for k, v in os.environ.items() if k not in (onednn.VAR, onednn.MARK)}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", ENTRY.replace("VERDICT", verdict)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["on"] is on and out["line"].startswith(f"oneDNN ops {'on' if on else 'off'} (wmse_tf auto)")
    assert "wmse_tf: oneDNN ops" in proc.stderr  # the start-up line


def test_skip_helper_names_the_wrong_convolution(monkeypatch):
    monkeypatch.setattr(onednn, "cached_check", lambda convs: {"k1s2c4-8@8": ("filter gradient", 0.6)})
    monkeypatch.setattr(helpers, "onednn_on", lambda: True)
    with pytest.raises(pytest.skip.Exception, match="k1s2c4-8@8"):
        helpers.skip_if_onednn_wrong([(1, 2, 4, 8, 8)])
