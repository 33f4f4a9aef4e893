"""Input pipeline throughput: 4-view W-MSE batches, and where augmentation time goes.

Run: python -m bench.input_pipeline [--quick]

Uses synthetic images (CIFAR and STL-10 need a download): 32x32 images in the CIFAR-10
recipe and 96x96 images cropped to 64 in the STL-10 recipe. All figures come from one
run on the same machine, so compare them with each other, not across machines.
"""

import dataclasses
import os
import sys
import time

import numpy as np
import tensorflow as tf

from bench import machine_line
from wmse_tf.data import augment, pipeline


def images_per_second(dataset: tf.data.Dataset, n_batches: int, warmup: int = 2) -> float:
    """Source images per second yielded by ``dataset`` of (views, labels) or (x, y).

    The first ``warmup`` batches (graph tracing, cache filling) are not timed.
    """
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    count, start = 0, time.perf_counter()
    for _ in range(n_batches):
        _, labels = next(it)
        count += int(labels.shape[0])
    return count / (time.perf_counter() - start)


def _time(fn, *args, repeats: int) -> float:
    """Seconds per call of a tf.function, after one traced (and compiled) warm-up call."""
    tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    tf.nest.map_structure(lambda t: t.numpy(), out)
    return (time.perf_counter() - start) / repeats


def breakdown(cfg: augment.AugmentConfig, source: int, batch: int, repeats: int) -> dict:
    """Seconds per batch of one view for each stage of ``augment_batch`` (XLA, as used)."""
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (batch, source, source, 3), dtype=np.uint8))
    seed = tf.constant([1, 2], tf.int64)
    x = tf.cast(images, tf.float32) / 255.0
    params = augment.sample_params(batch, source, source, cfg, seed)
    small = x[:, :cfg.image_size, :cfg.image_size]
    xla = lambda f: tf.function(f, jit_compile=True)

    def crop_and_resize(x):  # TF's bilinear op without antialiasing, for reference.
        p = params
        boxes = tf.stack([p["top"], p["left"], p["top"] + p["height"] - 1,
                          p["left"] + p["width"] - 1], 1) / (source - 1)
        return tf.image.crop_and_resize(x, boxes, tf.range(batch), [cfg.image_size] * 2)

    stages = {
        "random parameters (no XLA)": (
            tf.function(lambda u: augment.sample_params(batch, source, source, cfg, seed)), x),
        "color jitter": (xla(lambda u: augment.color_jitter(u, params, cfg)), x),
        "grayscale": (xla(lambda u: augment.grayscale(u, params)), x),
        "crop+resize+flip (matmuls)": (xla(lambda u: augment.resample(u, params, cfg)), x),
        "normalize": (xla(lambda u: augment.normalize(u, cfg)), small),
        "full view (augment_batch)": (
            tf.function(lambda u: augment.augment_batch(u, cfg, seed)), images),
        "full view without XLA": (
            tf.function(lambda u: augment.augment_batch(u, cfg, seed, jit_compile=False)),
            images),
        "ref: tf crop_and_resize": (tf.function(crop_and_resize), x),
    }
    return {k: _time(f, t, repeats=repeats) for k, (f, t) in stages.items()}


def main(quick: bool = False) -> None:
    batch, views = 256, 4
    print(machine_line(), flush=True)
    n_batches = 4 if quick else 12
    print(f"TF {tf.__version__}, {os.cpu_count()} CPU cores visible, batch {batch} images "
          f"x {views} views, float32, CPU; load average at start {os.getloadavg()[0]:.1f}")
    cases = [("cifar10", "synthetic:size=32,train=4096", 32),
             ("stl10", "synthetic:size=96,train=2048", 96)]
    for recipe_name, data_name, source in cases:
        cfg = augment.recipe(recipe_name)
        ds = pipeline.ssl_dataset(data_name, "ssl", batch, views, cfg, seed=0, repeat=True)
        rate = images_per_second(ds, n_batches)
        print(f"\n{recipe_name} recipe, {source}->{cfg.image_size} px: {rate:8.0f} images/s "
              f"({rate * views:.0f} views/s) through ssl_dataset")
        bilinear = dataclasses.replace(cfg, interpolation="bilinear")
        ds = pipeline.ssl_dataset(data_name, "ssl", batch, views, bilinear, seed=0, repeat=True)
        print(f"  same with interpolation='bilinear': {images_per_second(ds, n_batches):8.0f} "
              "images/s")
        times = breakdown(cfg, source, batch, repeats=3 if quick else 10)
        full = times["full view (augment_batch)"]
        print(f"  one view of {batch} images, ms per batch, % of the full view (stages timed "
              "alone; XLA fuses them in the full view, so they sum to more):")
        for stage, sec in times.items():
            print(f"    {stage:32s} {sec * 1e3:7.1f} ms  {100 * sec / full:5.0f}%")
    print(f"\nload average at end {os.getloadavg()[0]:.1f} (other processes share the CPU: "
          "compare figures of this run with each other)")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
