"""Tests of wmse_tf/training/resolve.py: `auto` values from the hardware, in one function (no TF needed)."""

import dataclasses

import pytest

from wmse_tf.training import config, resolve
from wmse_tf.training.resolve import Hardware

CPU, CPU_BF16 = Hardware("cpu"), Hardware("cpu", cpu_bf16=True)
GPU, GPUS4, TPU = Hardware("gpu", 1), Hardware("gpu", 4), Hardware("tpu")


def auto_config(**kwargs):
    """A config built in code that leaves every hardware choice to `resolve`."""
    base = dict(dataset="digits", emb=16, w_size=32, batch_size=64, stem="auto", mixed_precision="auto",
                jit_compile="auto", steps_per_execution=0)
    return config.TrainConfig(**{**base, **kwargs})


@pytest.mark.parametrize("hardware, precision, jit, steps", [
    (CPU, "float32", False, 1),
    (CPU_BF16, "mixed_bfloat16", False, 1),
    (GPU, "mixed_float16", True, 8),
    (TPU, "mixed_bfloat16", True, 32),
])
def test_auto_values_per_accelerator(hardware, precision, jit, steps):
    cfg = auto_config()
    assert not cfg.resolved
    out = resolve.resolve(cfg, hardware)
    assert out.resolved and (out.mixed_precision, out.jit_compile, out.steps_per_execution) == (precision, jit, steps)
    assert out.stem == "cifar"  # digits: 32 px
    assert resolve.resolve(out, hardware) == out  # resolving twice changes nothing


def test_cpu_bf16_only_for_encoders_wide_enough():
    """Narrow encoders are overhead-bound on a CPU: float32 there, even with native bf16."""
    narrow, wide = resolve.CPU_BF16_MIN_WIDTH // 2, resolve.CPU_BF16_MIN_WIDTH
    assert resolve.resolve(auto_config(width=narrow), CPU_BF16).mixed_precision == "float32"
    assert resolve.resolve(auto_config(width=wide), CPU_BF16).mixed_precision == "mixed_bfloat16"
    assert resolve.resolve(auto_config(width=wide), CPU).mixed_precision == "float32"
    assert resolve.resolve(auto_config(width=narrow), GPU).mixed_precision == "mixed_float16"
    explicit = auto_config(width=narrow, mixed_precision="mixed_bfloat16")
    assert resolve.resolve(explicit, CPU_BF16).mixed_precision == "mixed_bfloat16"


def test_xla_auto_is_off_under_multi_replica_strategies():
    assert resolve.resolve(auto_config(strategy="mirrored"), GPU).jit_compile is True  # 1 GPU: 1 replica
    assert resolve.resolve(auto_config(strategy="mirrored"), GPUS4).jit_compile is False
    two = auto_config(strategy="mirrored", devices=("/gpu:0", "/gpu:1"))
    assert resolve.resolve(two, GPUS4).jit_compile is False
    one = auto_config(strategy="mirrored", devices=("/gpu:1",))
    assert resolve.resolve(one, GPUS4).jit_compile is True
    assert resolve.resolve(auto_config(strategy="multi_worker"), GPU).jit_compile is False
    assert resolve.resolve(auto_config(jit_compile="true"), CPU).jit_compile is True  # explicit wins
    assert resolve.resolve(auto_config(jit_compile="false"), GPU).jit_compile is False


def test_explicit_values_need_no_hardware(monkeypatch):
    def fail(*args):
        raise AssertionError("hardware detected although no value is auto")

    monkeypatch.setattr(resolve, "detect", fail)
    cfg = auto_config(mixed_precision="float32", jit_compile=False, steps_per_execution=2)
    out = resolve.resolve(cfg)
    assert (out.stem, out.mixed_precision, out.jit_compile, out.steps_per_execution) == ("cifar", "float32", False, 2)
    with pytest.raises(AssertionError, match="hardware detected"):
        resolve.resolve(auto_config())


def test_string_hardware_and_detection_without_gpu_nodes(tmp_path, monkeypatch):
    assert resolve.resolve(auto_config(), "gpu").mixed_precision == "mixed_float16"
    cpu_auto = "mixed_bfloat16" if resolve.cpu_has_bf16() else "float32"
    assert resolve.resolve(auto_config(), "cpu").mixed_precision == cpu_auto
    assert resolve.detect("tpu") == TPU
    if resolve.sys.platform.startswith("linux"):
        assert not resolve.gpu_possible(str(tmp_path))
        (tmp_path / "nvidia0").write_text("")
        assert resolve.gpu_possible(str(tmp_path))
    monkeypatch.setattr(resolve, "gpu_possible", lambda: False)
    assert resolve.detect("mirrored") == Hardware("cpu", cpu_bf16=resolve.cpu_has_bf16())


def test_cpu_bf16_detection_reads_cpu_flags(tmp_path):
    with_bf16 = tmp_path / "bf16"
    with_bf16.write_text("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    without = tmp_path / "plain"
    without.write_text("flags\t\t: fpu sse avx2\n")
    assert resolve.cpu_has_bf16(str(with_bf16)) and not resolve.cpu_has_bf16(str(without))
    assert not resolve.cpu_has_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize("dataset, stem", [("cifar10", "cifar"), ("stl10", "small"), ("tiny_imagenet", "small"),
                                           ("imagenet100", "imagenet"), ("fashion_mnist", "cifar"),
                                           ("synthetic:size=64", "small"), ("synthetic:size=128", "imagenet")])
def test_default_stem(dataset, stem):
    assert resolve.default_stem(dataset) == stem


def test_bad_values_are_config_errors():
    with pytest.raises(config.ConfigError, match="--jit_compile=maybe"):
        resolve.resolve(auto_config(jit_compile="maybe"), CPU)
    with pytest.raises(config.ConfigError, match="--steps_per_execution=-1"):
        resolve.resolve(auto_config(steps_per_execution=-1), CPU)
    with pytest.raises(config.ConfigError, match="--w_size=16"):  # resolve validates
        resolve.resolve(auto_config(w_size=16), CPU)
    cfg = dataclasses.replace(auto_config(), strategy="mirrored", cpu_replicas=2, jit_compile="true")
    with pytest.raises(config.ConfigError, match="logical CPU"):
        resolve.resolve(cfg, CPU)


@pytest.mark.parametrize("isa,native", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                                        ("ALL", True), ("", True)])
def test_onednn_isa_limit_turns_native_bf16_off(tmp_path, monkeypatch, isa, native):
    cpuinfo = tmp_path / "bf16"
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: fpu avx2 fma avx512f avx512_bf16\n")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert resolve.cpu_has_bf16(str(cpuinfo)) is native
    assert resolve.cpu_description(str(cpuinfo)).startswith("Test CPU, ")
    assert "AVX512_BF16" in resolve.cpu_description(str(cpuinfo))
    assert ("oneDNN limited to" in resolve.cpu_description(str(cpuinfo))) is bool(isa)


def test_trainer_run_resolves_a_config_built_in_code(monkeypatch):
    """trainer.run(cfg) with "auto" values resolves them first (before the strategy exists)."""
    from wmse_tf.training import distribute, trainer

    detected = []
    monkeypatch.setattr(resolve, "detect", lambda strategy="default": detected.append(strategy) or CPU)

    def stop(*args, **kwargs):
        raise RuntimeError("strategy requested")

    monkeypatch.setattr(distribute, "make_strategy", stop)
    with pytest.raises(RuntimeError, match="strategy requested"):
        trainer.run(auto_config())
    assert detected == ["default"]
