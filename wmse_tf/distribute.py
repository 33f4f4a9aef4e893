"""tf.distribute strategies, device-dependent defaults, and chief/worker roles.

`--strategy`: default (one device), mirrored (all local GPUs, or `devices`, or
`cpu_replicas` logical CPUs for tests), multi_worker (MultiWorkerMirroredStrategy
from TF_CONFIG), tpu (TPUStrategy via TPUClusterResolver). Logical CPU devices and
multi-worker collectives must be set up before TensorFlow initializes its devices,
so `make_strategy` is the first TF call of a run.
"""

import json
import os

import tensorflow as tf


def accelerator(strategy_name):
    """"tpu", "gpu" or "cpu": what the run will compute on (without initializing TF)."""
    if strategy_name == "tpu":
        return "tpu"
    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


# oneDNN ISA levels (ONEDNN_MAX_CPU_ISA) below which its kernels emulate bfloat16.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                             "AVX512_CORE_VNNI"}


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """True if the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16, from /proc/cpuinfo)
    and oneDNN is not limited below that (ONEDNN_MAX_CPU_ISA=AVX2 emulates an AVX2-only CPU)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return False
    try:
        with open(cpuinfo) as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def cpu_description(cpuinfo="/proc/cpuinfo"):
    """The CPU a figure was measured on: model, cores, vector/bf16 flags, oneDNN ISA limit.

    e.g. "AMD EPYC, 2 cores, AVX2 FMA AVX512F AVX512_BF16" or "..., oneDNN limited to AVX2".
    """
    model, flags = "unknown CPU", set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    shown = [f.upper() for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    text = f"{model}, {os.cpu_count()} cores, {' '.join(shown) or 'no AVX2'}"
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return text + (f", oneDNN limited to {isa}" if isa else "")


def resolve_mixed_precision(value, accel):
    """Dtype policy for `--mixed_precision`; "auto" picks per accelerator.

    auto: on CPU, mixed_bfloat16 where the CPU has native bfloat16 (AVX512_BF16 / AMX:
    a ResNet-18 W-MSE step measured 1.9x float32 in bench/train_step.py) and float32
    elsewhere (emulated bfloat16 is slower); mixed_float16 on GPU (with loss scaling);
    mixed_bfloat16 on TPU. Whitening runs in float32 under every policy.
    """
    if value != "auto":
        return value
    if accel == "cpu":
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    return {"gpu": "mixed_float16", "tpu": "mixed_bfloat16"}[accel]


def resolve_jit_compile(value, accel):
    """`--jit_compile` as a bool; "auto" = XLA on GPU/TPU, off on CPU."""
    if isinstance(value, bool):
        return value
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    if value != "auto":
        raise ValueError(f"--jit_compile={value}: allowed: auto, true, false")
    return accel != "cpu"


def resolve_steps_per_execution(value, accel):
    """`--steps_per_execution`; 0 = auto: 1 on CPU (no launch overhead to hide), 8 on GPU, 32 on TPU.

    Other values pass through (TrainConfig.validate rejects negatives).
    """
    return value if value else {"cpu": 1, "gpu": 8, "tpu": 32}[accel]


def set_cpu_replicas(count):
    """Splits the first physical CPU into `count` logical devices (before TF init)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])


def make_strategy(name, devices=(), cpu_replicas=0, tpu=""):
    """Creates the strategy `name` (see module doc). Call before any other TF op."""
    if cpu_replicas:
        set_cpu_replicas(cpu_replicas)
    if name == "default":
        if cpu_replicas > 1:
            raise ValueError("--cpu_replicas > 1 needs --strategy=mirrored")
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if devices:
            return tf.distribute.MirroredStrategy(list(devices))
        if cpu_replicas:
            return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                             '"task": {"type": "worker", "index": 0}})')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy={name}: unknown; allowed: default, mirrored, multi_worker, tpu")


def task_info(strategy):
    """(task_type, task_id) of this process; ("worker", 0) style for multi-worker, else (None, 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, 0
    return resolver.task_type, resolver.task_id or 0


def is_chief(strategy):
    """True for the process that writes logs, checkpoints and exports."""
    task_type, task_id = task_info(strategy)
    if task_type is None or task_type == "chief":
        return True
    if task_type == "worker" and task_id == 0:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
        return "chief" not in cluster
    return False


def worker_dir(model_dir, strategy):
    """model_dir for the chief; a private scratch dir for other workers.

    Every worker must write its checkpoint (saving may involve collectives), but
    only the chief's is kept: the others write to `<model_dir>/.worker-<id>`, which
    the caller deletes afterwards.
    """
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task_info(strategy)
    return os.path.join(model_dir, f".{task_type}-{task_id}")
