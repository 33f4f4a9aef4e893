"""Resolution of the `auto` values of a TrainConfig, in one place, from the hardware.

`resolve(cfg)` returns the config with `stem`, `mixed_precision`, `jit_compile` and
`steps_per_execution` resolved (`auto` / 0 replaced) and validated; `wmse_tf.train`,
`wmse_tf.demo`, `wmse_tf.training.trainer.run` and the tests all call it. The resolved values
are what `--print_config`, flags.json and the model card show.

  stem                 the paper's per dataset (cifar: CIFAR; small: STL-10, Tiny ImageNet;
                       imagenet: ImageNet-100), else by image size
  mixed_precision      CPU: mixed_bfloat16 with native bf16 (AVX512_BF16 / AMX, and oneDNN
                       not limited below it by ONEDNN_MAX_CPU_ISA) for an encoder of width
                       >= 16, else float32 (narrower convolutions are overhead-bound: bf16
                       only adds casts, 0.89x float32 at width 8; `python -m bench.demo_step`);
                       GPU: mixed_float16; TPU: mixed_bfloat16
  jit_compile          XLA on a single-replica GPU run and on TPU; off on CPU and under a
                       multi-replica GPU strategy (as Keras' `jit_compile="auto"`)
  steps_per_execution  1 on CPU, 8 on GPU, 32 on TPU

Hardware is detected only when an `auto` value needs it, and without TensorFlow
where it can be: on Linux with no GPU device node (/dev/nvidia<N>, /dev/kfd, /dev/dxg)
no GPU can be visible, so the run is on CPU; otherwise TensorFlow is asked.

Example:
  >>> cfg = resolve(TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64,
  ...                           mixed_precision="auto", jit_compile="auto"))
"""

import dataclasses
import glob
import os
import sys

from wmse_tf import onednn
from wmse_tf.core import archs
from wmse_tf.data import info as datasets_info
from wmse_tf.training import config as config_lib

AUTO = config_lib.AUTO


@dataclasses.dataclass(frozen=True)
class Hardware:
    """What a run computes on: accelerator "cpu" | "gpu" | "tpu", GPUs visible, CPU bf16."""

    accelerator: str
    num_gpus: int = 0
    cpu_bf16: bool = False


# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) below which its kernels emulate bfloat16.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                             "AVX512_CORE_VNNI"}


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """True if the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16, from /proc/cpuinfo)
    and oneDNN is not limited below that (ONEDNN_MAX_CPU_ISA=AVX2 emulates an AVX2-only CPU)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    return bool(onednn.cpu_flags(cpuinfo) & {"avx512_bf16", "amx_bf16"})


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """The CPU a figure was measured on: model, cores, vector/bf16 flags, oneDNN ISA limit.

    e.g. "AMD EPYC, 2 cores, AVX2 FMA AVX512F AVX512_BF16" or "..., oneDNN limited to AVX2".
    """
    model, flags = onednn.cpu_model(cpuinfo), onednn.cpu_flags(cpuinfo)
    shown = [f.upper() for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    text = f"{model}, {os.cpu_count()} cores, {' '.join(shown) or 'no AVX2'}"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return text + (f", oneDNN limited to {isa}" if isa else "")


def runtime():
    """What a run's figures depend on beyond its config, for flags.json, model cards and benchmarks."""
    return {"cpu": cpu_description(), "onednn": onednn.current().line()}


def gpu_possible(dev="/dev"):
    """False when no GPU can be visible to TensorFlow (Linux without GPU device nodes)."""
    if not sys.platform.startswith("linux"):
        return True  # e.g. macOS with tensorflow-metal: ask TensorFlow
    nodes = glob.glob(os.path.join(dev, "nvidia[0-9]*")) + glob.glob(os.path.join(dev, "kfd"))
    return bool(nodes or os.path.exists(os.path.join(dev, "dxg")))


def num_gpus():
    """GPUs visible to TensorFlow, imported only when a GPU is possible at all."""
    if not gpu_possible():
        return 0
    import tensorflow as tf  # the GPU check needs TF; initializes no device

    return len(tf.config.list_physical_devices("GPU"))


def detect(strategy="default"):
    """The Hardware of a run with `strategy` (TPU by name; GPU / CPU by detection)."""
    if strategy == "tpu":
        return Hardware("tpu")
    gpus = num_gpus()
    return Hardware("gpu", gpus) if gpus else Hardware("cpu", cpu_bf16=cpu_has_bf16())


def default_stem(dataset):
    """The paper's stem for a dataset; for other datasets by image size."""
    base = dataset.partition(":")[0]
    if base in archs.STEM_BY_DATASET:
        return archs.STEM_BY_DATASET[base]
    try:
        size = datasets_info.info(dataset).image_size
    except ValueError:
        size = 32
    return "cifar" if size <= 32 else "small" if size <= 96 else "imagenet"


def replicas(cfg, hardware):
    """Replicas of the run as far as the config and hardware tell (None: multi-worker)."""
    known = cfg.expected_replicas
    if known is None and cfg.strategy == "mirrored":
        return max(hardware.num_gpus, 1)  # all local GPUs (or the CPU)
    return known


# Narrowest encoder (channels of the first stage) for which bfloat16 pays on a CPU with native
# bf16: the demo's step (bench.demo_step, AMD EPYC with AVX512_BF16) ran 0.89x float32's speed
# at width 8, 1.5x at width 16 and 1.6x at width 32; the paper's width 64 1.67x (bench.train_step).
CPU_BF16_MIN_WIDTH = 16


def mixed_precision(hardware, width):
    """The `auto` dtype policy for an encoder of `width` (whitening runs in float32 under every policy)."""
    if hardware.accelerator == "cpu":
        return "mixed_bfloat16" if hardware.cpu_bf16 and width >= CPU_BF16_MIN_WIDTH else "float32"
    return {"gpu": "mixed_float16", "tpu": "mixed_bfloat16"}[hardware.accelerator]


def jit_compile(cfg, hardware):
    """The `auto` XLA setting: TPU always; GPU with one replica; never on CPU."""
    if hardware.accelerator == "tpu":
        return True
    return hardware.accelerator == "gpu" and replicas(cfg, hardware) == 1


def steps_per_execution(hardware):
    """The `auto` steps per call: 1 on CPU (no launch overhead to hide), 8 on GPU, 32 on TPU."""
    return {"cpu": 1, "gpu": 8, "tpu": 32}[hardware.accelerator]


def needs_hardware(cfg):
    """True when an `auto` value of cfg depends on the hardware."""
    return AUTO in (cfg.mixed_precision, cfg.jit_compile) or cfg.steps_per_execution == 0


def resolve(cfg, hardware=None):
    """`cfg` with every `auto` value resolved, validated.

    Args:
      cfg: a TrainConfig (resolved or not; a resolved one comes back validated, unchanged).
      hardware: a Hardware, or "cpu" / "gpu" / "tpu" (one GPU; the CPU's own bf16
        flags), or None to detect it, only if an `auto` value needs it.

    Raises:
      ConfigError: a bad value (the message names the flag).
    """
    if cfg.stem == AUTO:
        cfg = dataclasses.replace(cfg, stem=default_stem(cfg.dataset))
    if needs_hardware(cfg):
        if hardware is None:
            hardware = detect(cfg.strategy)
        elif isinstance(hardware, str):
            hardware = Hardware(hardware, num_gpus=int(hardware == "gpu"),
                                cpu_bf16=hardware == "cpu" and cpu_has_bf16())
        cfg = dataclasses.replace(
            cfg,
            mixed_precision=mixed_precision(hardware, cfg.width) if cfg.mixed_precision == AUTO else cfg.mixed_precision,
            jit_compile=jit_compile(cfg, hardware) if cfg.jit_compile == AUTO else cfg.jit_compile,
            steps_per_execution=cfg.steps_per_execution or steps_per_execution(hardware))
    return cfg.validate()
