"""Training-step throughput of SSLModel (W-MSE) per precision/XLA setting, in one run.

Run: python -m bench.train_step [--quick] [--all] [--headline] [--batch 128] [--width 64] [--reference_python PY]

ResNet-18 with the CIFAR stem, 32x32 images, emb 64 (32 below batch 128), w_size =
the batch (one whitening sub-batch per view, as W-MSE at batch 128), Adam. For each setting it prints images/s
(source images, each with V views) for W-MSE 2 and W-MSE 4 and a bare step (same
encoder + projector, plain MSE between 2 views, no whitening), then the ratios
between settings, the whitening's share, the input pipeline's headroom over the
fastest step, and the peak RSS of a W-MSE 4 step at batch 256. XLA is timed for W-MSE 2
only unless --all (it is slower on CPUs, and each XLA compile costs a minute there).
The PyTorch reference (bench/reference_torch.py) is timed in the same run, one of its steps
in each round of ours, the order rotating from round to round (so that no setting always
runs right after the other process's step), when a Python with torch is found
(--reference_python, default: this one if it imports torch). Under ONEDNN_MAX_CPU_ISA=AVX2
(an AVX2-only CPU emulated on a newer one) the reference also gets ATEN_CPU_CAPABILITY=avx2. bfloat16 settings are timed only
where the CPU has native bfloat16 (--settings=all: always). With the reference, each setting's W-MSE 2
step is also compared with the reference's step of the same round: the median and range of those
per-round ratios say how far one run's ratio can be trusted. --headline times only the W-MSE 2 steps
(no XLA) and the reference, so that more rounds fit in the same time.
"""

import argparse
import importlib.util
import resource
import subprocess
import sys
import time

from bench import decide_onednn, machine_line, objective_emb, reference_process, width_from_argv

if __name__ == "__main__":
    decide_onednn("resnet18", "cifar", width_from_argv(), 32)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from wmse_tf.core import encoders, model, objectives  # noqa: E402
from wmse_tf.training import resolve  # noqa: E402

SETTINGS = (("float32", False), ("mixed_bfloat16", False), ("float32", True), ("mixed_bfloat16", True))


class PlainMSE:
    """Normalized MSE between views without whitening: the 'bare step' reference."""

    stat_names = ()

    def __call__(self, views, seed=None):
        return objectives.pairwise_normalized_mse(views), {}


def build(policy, jit, objective, width, emb):
    keras.mixed_precision.set_dtype_policy(policy)
    enc = encoders.resnet(18, stem="cifar", width=width, input_shape=(32, 32, 3))
    m = model.SSLModel(enc, encoders.projector(emb), objective, seed=0)
    m.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    return m


class Case:
    """One (setting, objective, views) training step, built once and timed round-robin."""

    def __init__(self, policy, jit, objective, num_views, batch, width):
        self.model = build(policy, jit, objective, width, objective_emb(batch))
        keras.mixed_precision.set_dtype_policy("float32")
        rng = np.random.default_rng(0)
        views = tuple(tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype("float32"))
                      for _ in range(num_views))
        self.data = (views, tf.zeros([batch], tf.int64))
        self.batch, self.times = batch, []
        self.step()  # trace / compile

    def step(self):
        start = time.perf_counter()
        self.model.train_on_batch(self.data)
        return time.perf_counter() - start

    def images_per_second(self):
        return self.batch / float(np.median(self.times))


def round_order(steppers, r):
    """The steppers of round `r`, rotated by r: over len(steppers) rounds each runs in every position,
    so no setting always follows the reference's process (which made the one after it slower)."""
    k = r % len(steppers)
    return steppers[k:] + steppers[:k]


def ratio_spread(times, ref_times):
    """'per-round ratio median Rx (range a-b, N rounds)': the reference's step time over ours, taken
    within each round, so that a round's load touches both sides of its ratio."""
    ratios = np.asarray(ref_times[:len(times)]) / np.asarray(times[:len(ref_times)])
    return (f"per-round ratio median {np.median(ratios):.2f}x (range {ratios.min():.2f}-{ratios.max():.2f}x, "
            f"{len(ratios)} rounds)")


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 16, 2 repeats (a smoke run)")
    parser.add_argument("--batch", type=int, default=128, help="images per step (before views)")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = the paper's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--all", action="store_true", help="also time XLA for the bare and W-MSE 4 steps")
    parser.add_argument("--headline", action="store_true",
                        help="only the W-MSE 2 steps without XLA, and the reference (more rounds in the same time)")
    parser.add_argument("--settings", default="auto",
                        help="auto: bfloat16 settings only where the CPU has native bfloat16 (emulated "
                             "bfloat16 is ~4x slower, nothing to learn); all: every setting")
    parser.add_argument("--reference_python", default="",
                        help="Python with torch for the PyTorch reference step ('none' to skip)")
    parser.add_argument("--rss_probe", action="store_true", help="only print the peak RSS of a W-MSE 4 run")
    parser.add_argument("--policy", default="float32", help="dtype policy of --rss_probe")
    args = parser.parse_args()
    if args.rss_probe:
        return rss_probe(args.width, args.policy)
    print(machine_line(), flush=True)
    if args.quick:
        args.width, args.repeats = 16, 2
    wmse = objectives.WMSE(w_size=args.batch)
    print(f"SSLModel train step, ResNet-18 CIFAR stem width {args.width}, 32x32, batch {args.batch} images; "
          f"TF {tf.__version__}, Keras {keras.__version__}, devices {[d.device_type for d in tf.config.list_physical_devices()]}")
    print(f"{'setting':<24} {'bare img/s':>10} {'W-MSE 2':>9} {'W-MSE 4':>9} {'whitening share':>16}")
    settings = SETTINGS if args.settings == "all" or resolve.cpu_has_bf16() else \
        tuple(s for s in SETTINGS if s[0] == "float32")
    if args.headline:
        settings = tuple(s for s in settings if not s[1])
    cases = {}
    for policy, jit in settings:
        name = f"{policy}{' +XLA' if jit else ''}"
        for label, objective, views in (("bare", PlainMSE(), 2), ("wmse2", wmse, 2), ("wmse4", wmse, 4)):
            if label != "wmse2" and (jit and not args.all or args.headline):
                continue
            cases[name, label] = Case(policy, jit, objective, views, args.batch, args.width)
    reference = Reference(args)
    steppers = [lambda c=c: c.times.append(c.step()) for c in cases.values()] + [reference.step]
    for r in range(args.repeats):  # round-robin, so load changes hit every setting (and the reference) alike
        for step in round_order(steppers, r):
            step()
    reference.close()
    results = {}
    for policy, jit in settings:
        name = f"{policy}{' +XLA' if jit else ''}"
        bare, two, four = (cases[name, k].images_per_second() if (name, k) in cases else float("nan")
                           for k in ("bare", "wmse2", "wmse4"))
        results[name] = (bare, two, four)
        share = f"{100 * (1 - two / bare):>15.1f}%" if bare == bare else f"{'-':>16}"
        cells = [f"{v:>{w}.1f}" if v == v else f"{'-':>{w}}" for v, w in ((bare, 10), (two, 9), (four, 9))]
        print(f"{name:<24} {' '.join(cells)} {share}")
    base = results["float32"]
    best = max(results, key=lambda k: results[k][1])
    print("\nratios to float32 (W-MSE 2): " + ", ".join(f"{k} {v[1] / base[1]:.2f}x" for k, v in results.items()))
    print(f"best setting for W-MSE 2: {best} at {results[best][1]:.1f} img/s "
          f"({2 * results[best][1]:.1f} encoder images/s, 2 views each)")
    ref = reference.images_per_second(args.batch)
    if ref:
        print(f"PyTorch reference W-MSE 2 step (bench/reference_torch.py, {reference.info}), timed "
              f"alternately with the above: {ref:.1f} img/s; best wmse_tf setting / reference = "
              f"{results[best][1] / ref:.2f}x, float32 / reference = {base[1] / ref:.2f}x")
        for name in results:
            print(f"  {name} W-MSE 2 / reference, " + ratio_spread(cases[name, "wmse2"].times, reference.times))
    if args.headline:
        return
    best4 = max((k for k in results if results[k][2] == results[k][2]), key=lambda k: results[k][2])
    try:
        from bench.input_pipeline import images_per_second as pipeline_ips
        from wmse_tf.data import augment, pipeline
        ds = pipeline.ssl_dataset("synthetic:size=32,train=4096", "train", args.batch, 4,
                                  augment.recipe("cifar10"), seed=0, repeat=True)
        ips = pipeline_ips(ds, 10)
        print(f"input pipeline (4 views, CIFAR recipe): {ips:.0f} img/s = {ips / results[best4][2]:.1f}x "
              f"what the best W-MSE 4 step consumes ({results[best4][2]:.1f} img/s)")
    except ImportError as err:  # the data modules are optional for this benchmark
        print(f"input pipeline: skipped ({err})")
    probe = subprocess.run([sys.executable, "-m", "bench.train_step", "--rss_probe", f"--width={args.width}",
                            f"--policy={best.split()[0]}"], capture_output=True, text=True)
    print(probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 else f"RSS probe failed: {probe.stderr[-500:]}")


class Reference:
    """The PyTorch reference step in a subprocess (bench/reference_torch.py --serve), stepped on
    demand so that it is timed alternately with wmse_tf's steps; None-like when unavailable."""

    def __init__(self, args):
        self.proc, self.times, self.info = None, [], ""
        python = args.reference_python or (sys.executable if importlib.util.find_spec("torch") else "")
        if not python or python == "none":
            print("PyTorch reference: skipped (no Python with torch; pass --reference_python=PATH, "
                  "e.g. a venv with `pip install torch==2.13.0 numpy`)")
            return
        cmd, env = reference_process(python, args.batch, args.width, objective_emb(args.batch))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = self.proc.stdout.readline().strip()  # after its warm-up step
        if not self.info.startswith("torch"):
            print(f"PyTorch reference failed ({python}): {self.info}")
            self.close()

    def step(self):
        if self.proc is None:
            return
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        self.times.append(float(self.proc.stdout.readline().split()[1]))

    def images_per_second(self, batch):
        return batch / float(np.median(self.times)) if self.times else None

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


def rss_probe(width, policy):
    """Peak RSS of a process that only builds a CIFAR W-MSE 4 model and runs steps at batch 256."""
    m = build(policy, False, objectives.WMSE(w_size=128), width, 64)
    views = tuple(tf.random.normal([256, 32, 32, 3]) for _ in range(4))
    for _ in range(2):
        m.train_on_batch((views, tf.zeros([256], tf.int64)))
    print(f"peak RSS of a W-MSE 4 run at batch 256 ({policy}, width {width}): {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
