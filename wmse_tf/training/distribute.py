"""tf.distribute strategies and chief/worker roles.

`--strategy`: default (one device), mirrored (all local GPUs, or `devices`, or
`cpu_replicas` logical CPUs for tests), multi_worker (MultiWorkerMirroredStrategy
from TF_CONFIG), tpu (TPUStrategy via TPUClusterResolver). Logical CPU devices and
multi-worker collectives must be set up before TensorFlow initializes its devices,
so `make_strategy` is the first TF call of a run. Device-dependent `auto` values
(precision, XLA, steps per execution) are resolved in `wmse_tf.training.resolve`.
"""

import json
import os

import tensorflow as tf


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
