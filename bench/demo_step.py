"""Training-step time of the demo's recipe and its variants, per precision, in one run.

  python -m bench.demo_step                                  # the default grid below
  ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.demo_step          # as on an AVX2-only CPU
  python -m bench.demo_step --variants=demo:,w16:width=16+batch_size=128 --policies=float32

What `make demo` can train in its budget depends on the step time of its recipe on the
machine, and the choices of the recipe (width, batch, views, precision) trade accuracy
per step against steps per minute. This times the training step (`train_on_batch` on a
random batch, no input pipeline) of `configs/fashion_mnist.flags` and of each variant
(`name:flag=value+flag=value`, flags of TrainConfig or of its augmentation) under each dtype
policy, round-robin so that load changes hit all alike, and prints seconds per step, encoder
images per second and the steps that fit in the flagfile's --time_budget.
"""

import dataclasses
import os
import statistics
import time

from absl import app, flags

from bench import machine_line

FLAGS = flags.FLAGS


def define_flags():
    """The benchmark's flags, defined only when it runs as a program, so importing it beside
    wmse_tf.train (tests) defines no clashing flag such as --warmup."""
    flags.DEFINE_string("flagfile_of_demo", "configs/fashion_mnist.flags", "The recipe the variants change.")
    flags.DEFINE_list("variants", ["demo:", "width16:width=16", "batch128:batch_size=128",
                                   "views4:num_views=4+batch_size=128"],
                      "Comma-separated variants, each name:flag=value+flag=value (empty: the recipe as is).")
    flags.DEFINE_list("policies", ["float32", "mixed_bfloat16"],
                      "Dtype policies; mixed_bfloat16 is skipped where the CPU lacks native bfloat16 "
                      "(emulated, ~4x slower) unless --emulated_bf16.")
    flags.DEFINE_bool("emulated_bf16", False, "Time mixed_bfloat16 even where it is emulated.")
    flags.DEFINE_integer("steps", 8, "Timed rounds (median reported).")
    flags.DEFINE_integer("warmup", 2, "Untimed steps per case first (tracing).")


def parse_variant(text):
    """'name:a=1+b=2' -> (name, {"a": "1", "b": "2"}); the values stay strings until applied."""
    name, _, assignments = text.partition(":")
    changes = {}
    for item in filter(None, assignments.split("+")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variants: {text!r}: expected name:flag=value+flag=value")
        changes[key.strip()] = value.strip()
    return name, changes


def apply_changes(cfg, changes):
    """cfg with `changes` (TrainConfig or augmentation fields, values parsed to the field's type)."""
    top = {f.name: f for f in dataclasses.fields(cfg)}
    aug = {f.name: f for f in dataclasses.fields(cfg.augment)}

    def typed(old, value):
        return value.lower() in ("1", "true") if isinstance(old, bool) else type(old)(value)

    main, augment = {}, {}
    for key, value in changes.items():
        if key in top:
            main[key] = typed(getattr(cfg, key), value)
        elif key in aug:
            augment[key] = typed(getattr(cfg.augment, key), value)
        else:
            raise ValueError(f"--variants: no flag {key!r} in TrainConfig or its augmentation")
    if augment:
        main["augment"] = dataclasses.replace(cfg.augment, **augment)
    return dataclasses.replace(cfg, **main).validate()


class Case:
    """One compiled model of a (variant, policy) and its random batch; times one step at a time."""

    def __init__(self, cfg, policy):
        import keras
        import numpy as np

        from wmse_tf.training import schedules, trainer

        keras.mixed_precision.set_dtype_policy(policy)
        keras.utils.set_random_seed(cfg.seed)
        self.cfg = cfg
        self.model = trainer.build_model(cfg, total_steps=1000)
        self.model.compile(optimizer=schedules.make_optimizer(cfg.optimizer, cfg.lr, cfg.weight_decay,
                                                              cfg.momentum))
        keras.mixed_precision.set_dtype_policy("float32")
        rng = np.random.default_rng(0)
        shape = (cfg.batch_size, cfg.image_size, cfg.image_size, 3)
        self.batch = tuple(rng.uniform(size=shape).astype(np.float32) for _ in range(cfg.num_views))
        self.labels = np.zeros(cfg.batch_size, np.int64)
        self.times = []

    def step(self, timed=True):
        start = time.perf_counter()
        self.model.train_on_batch(self.batch, self.labels)
        if timed:
            self.times.append(time.perf_counter() - start)

    @property
    def seconds(self):
        return statistics.median(self.times)


def demo_config():
    """The TrainConfig of the demo's flagfile, resolved as `wmse_tf.train` resolves it."""
    from bench import table1_cell
    from wmse_tf.training import config as config_lib

    return config_lib.TrainConfig.from_dict(table1_cell.resolve_config(FLAGS.flagfile_of_demo))


def main(argv):
    del argv
    print(machine_line(), flush=True)
    import keras
    import tensorflow as tf

    from wmse_tf.training import resolve, trainer

    base = demo_config()
    native = resolve.cpu_has_bf16()
    policies = [p for p in FLAGS.policies if p != "mixed_bfloat16" or native or FLAGS.emulated_bf16]
    skipped = sorted(set(FLAGS.policies) - set(policies))
    cases = {}
    for text in FLAGS.variants:
        name, changes = parse_variant(text)
        cfg = apply_changes(base, changes)
        for policy in policies:
            cases[name, policy] = case = Case(cfg, policy)
            for _ in range(FLAGS.warmup):
                case.step(timed=False)
    for _ in range(FLAGS.steps):
        for case in cases.values():
            case.step()
    budget = base.time_budget or 480.0
    num_images = trainer.count_images(base)  # the training split's, for the epochs in the budget
    print(f"bench.demo_step: {FLAGS.flagfile_of_demo} and variants; train_on_batch on a random batch, "
          f"median of {FLAGS.steps} round-robin steps; TF {tf.__version__}, Keras {keras.__version__}"
          + (f"; skipped {', '.join(skipped)} (no native bfloat16)" if skipped else ""))
    first = next(iter(cases.values())).seconds
    print(f"{'variant':<12} {'policy':<15} {'s/step':>7} {'enc img/s':>9} {'vs first':>8} "
          f"{'steps in ' + format(budget, 'g') + ' s':>14} {'epochs':>6}")
    for (name, policy), case in cases.items():
        cfg, seconds = case.cfg, case.seconds
        steps = int(budget / seconds)
        epochs = steps * cfg.batch_size / num_images
        print(f"{name:<12} {policy:<15} {seconds:>7.3f} {cfg.batch_size * cfg.num_views / seconds:>9.0f} "
              f"{seconds / first:>8.2f} {steps:>14d} {epochs:>6.2f}")
    print(f"(changes of each variant: {'; '.join(FLAGS.variants)}; ONEDNN_MAX_CPU_ISA="
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')})")


if __name__ == "__main__":
    define_flags()
    app.run(main)
