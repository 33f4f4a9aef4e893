"""W-MSE objective cost: its share of a ResNet-18 training step, batched vs a Python loop.

Run: python -m bench.objective [--quick]

Prints, measured in one run on this machine:
  - forward+backward time of the W-MSE objective (N=256 images, D=64, V=2 and V=4,
    w_size=128) as a share of a full SSLModel training step (ResNet-18, CIFAR stem,
    width 64, 32x32, the same batch);
  - the batched whitening (one Cholesky for all sub-batches) vs a per-sub-batch
    Python loop, both in tf.function.
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from bench import machine_line
from wmse_tf.core import encoders, model, objectives, whitening


def seconds_per_call(fn, *args, repeats=10, warmup=2):
    """Median wall seconds of fn(*args) after `warmup` untimed calls."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def wmse_loop(views, w_size, w_iter=1, eps=0.0, seed=0):
    """The reference's structure: a Python loop whitening one sub-batch of one view at a time."""
    num_views, n, _ = views.shape
    perms = objectives.random_permutations(w_iter, n, seed)
    loss = 0.0
    for it in range(w_iter):
        z = []
        for v in range(num_views):
            x = tf.gather(views[v], perms[it])
            z.append(tf.concat([whitening.whiten(x[g:g + w_size], eps) for g in range(0, n, w_size)], 0))
        for i in range(num_views):
            for j in range(i + 1, num_views):
                loss += objectives.normalized_mse(z[i], z[j])
    return loss / (w_iter * num_views * (num_views - 1) / 2)


def objective_grad_fn(loss_fn):
    @tf.function
    def step(views):
        with tf.GradientTape() as tape:
            tape.watch(views)
            loss = loss_fn(views)
        return loss, tape.gradient(loss, views)
    return step


def train_step_seconds(num_views, batch, width, repeats):
    """Median seconds of one SSLModel W-MSE training step (ResNet-18 CIFAR, 32x32)."""
    enc = encoders.resnet(18, stem="cifar", width=width, input_shape=(32, 32, 3))
    m = model.SSLModel(enc, encoders.projector(64), objectives.WMSE(w_size=128), seed=0)
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    views = tuple(tf.constant(rng.normal(size=(batch, 32, 32, 3)).astype("float32")) for _ in range(num_views))
    data = (views, tf.zeros([batch], tf.int64))
    return seconds_per_call(lambda: m.train_on_batch(data), repeats=repeats, warmup=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 16 encoder, fewer repeats")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    # One timed step (after an untimed one that traces): the share is ~1e-4, far from noise.
    width, step_repeats = (16, 2) if args.quick else (64, 1)
    n, d, w_size = 256, 64, 128
    print(f"W-MSE objective vs ResNet-18 step (N={n}, D={d}, w_size={w_size}, encoder width {width}); "
          f"TF {tf.__version__}, {tf.config.threading.get_intra_op_parallelism_threads() or 'default'} threads")
    print(f"{'views':>5} {'objective ms':>13} {'loop ms':>9} {'loop/batched':>13} {'step ms':>9} {'objective/step':>15}")
    for num_views in (2, 4):
        views = tf.random.normal([num_views, n, d])
        batched = objective_grad_fn(lambda v: objectives.wmse(v, w_size, seed=0))
        loop = objective_grad_fn(lambda v: wmse_loop(v, w_size, seed=0))
        np.testing.assert_allclose(batched(views)[0].numpy(), loop(views)[0].numpy(), rtol=1e-4)
        t_obj = seconds_per_call(batched, views, repeats=50)
        t_loop = seconds_per_call(loop, views, repeats=50)
        t_step = train_step_seconds(num_views, n, width, step_repeats)
        print(f"{num_views:>5} {1e3 * t_obj:>13.2f} {1e3 * t_loop:>9.2f} {t_loop / t_obj:>13.2f} "
              f"{1e3 * t_step:>9.0f} {100 * t_obj / t_step:>14.2f}%")


if __name__ == "__main__":
    main()
