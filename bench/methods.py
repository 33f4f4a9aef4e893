"""Training-step time of each method on the same encoder and batch, as ratios to W-MSE 2.

  python -m bench.methods                      # CPU-sized defaults, < 3 min
  python -m bench.methods --width=64 --batch_size=256 --emb=64 --w_size=128 --jit   # paper-sized, GPU

Methods: W-MSE with 2 and 4 views, contrastive (NT-Xent), BYOL. Every model
gets a fresh copy of the same encoder (same seed) and the same batch of B
images (random normal, already "augmented"); W-MSE 4 sees 4 views of those B
images, so it runs the encoder on 2x as many images. One run measures all:
after `--warmup` compile/warm-up steps per method, the methods are timed in
interleaved rounds (one step each per round, so drifting machine load hits
all alike) and the median over `--steps` rounds is reported.
"""

import statistics
import time

from absl import app, flags

from bench import machine_line

FLAGS = flags.FLAGS
flags.DEFINE_string("arch", "resnet18", "Encoder architecture (wmse_tf.core.encoders.ARCHS).")
flags.DEFINE_string("stem", "cifar", "ResNet stem: cifar | small | imagenet.")
flags.DEFINE_integer("width", 8, "Channels of the first ResNet stage (64 in the paper).")
flags.DEFINE_integer("image_size", 32, "Image side in pixels.")
flags.DEFINE_integer("batch_size", 128, "Images per step (each method gets the same B images).")
flags.DEFINE_integer("emb", 32, "Embedding size.")
flags.DEFINE_integer("hidden", 1024, "Projector (and BYOL predictor) hidden size.")
flags.DEFINE_integer("w_size", 64, "W-MSE whitening sub-batch size (> emb, divides batch_size).")
flags.DEFINE_integer("steps", 7, "Timed rounds (median reported).")
flags.DEFINE_integer("warmup", 2, "Untimed steps per method first (tracing, compilation).")
flags.DEFINE_bool("jit", False, "XLA-compile the train step (compile(jit_compile=...)).")
flags.DEFINE_integer("seed", 0, "Seed of weights and data.")

# name -> (method, number of views, extra build kwargs)
CASES = {
    "wmse_2": ("wmse", 2, {}),
    "wmse_4": ("wmse", 4, {}),
    "contrastive": ("contrastive", 2, {}),
    "byol": ("byol", 2, {}),
}


def build(case):
    import keras

    from wmse_tf import methods
    from wmse_tf.core import encoders

    method, _, kwargs = CASES[case]
    kwargs = dict(kwargs)
    if method == "wmse":
        kwargs["w_size"] = FLAGS.w_size
    if method == "byol":
        kwargs["total_steps"] = 1000
    keras.utils.set_random_seed(FLAGS.seed)
    encoder = encoders.build(FLAGS.arch, FLAGS.stem, FLAGS.width, FLAGS.image_size)
    model = methods.build(method, encoder, emb=FLAGS.emb, hidden=FLAGS.hidden, seed=FLAGS.seed, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=FLAGS.jit)
    return model


def main(argv):
    del argv
    print(machine_line(), flush=True)
    import numpy as np

    rng = np.random.default_rng(FLAGS.seed)
    shape = [FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3]
    views = tuple(rng.normal(size=shape).astype(np.float32) for _ in range(4))
    labels = np.zeros(FLAGS.batch_size, np.int64)
    models, batches = {}, {}
    for case, (_, num_views, _) in CASES.items():
        models[case] = build(case)
        batches[case] = views[:num_views]
        for _ in range(FLAGS.warmup):
            models[case].train_on_batch(batches[case], labels)
    times = {case: [] for case in CASES}
    for _ in range(FLAGS.steps):
        for case, model in models.items():
            start = time.perf_counter()
            logs = model.train_on_batch(batches[case], labels, return_dict=True)
            times[case].append(time.perf_counter() - start)
            if not np.isfinite(logs["loss"]):
                raise RuntimeError(f"{case}: non-finite loss {logs['loss']}")
    print(f"bench.methods: {FLAGS.arch} width={FLAGS.width} stem={FLAGS.stem} "
          f"{FLAGS.image_size}x{FLAGS.image_size} batch={FLAGS.batch_size} emb={FLAGS.emb} "
          f"hidden={FLAGS.hidden} w_size={FLAGS.w_size} jit={FLAGS.jit}; median of {FLAGS.steps} "
          f"interleaved steps after {FLAGS.warmup} warm-up")
    base = statistics.median(times["wmse_2"])
    print(f"{'method':<12} {'views':>5} {'ms/step':>9} {'vs wmse_2':>9}")
    for case, (_, num_views, _) in CASES.items():
        median = statistics.median(times[case])
        print(f"{case:<12} {num_views:>5} {1000 * median:>9.1f} {median / base:>9.2f}")


if __name__ == "__main__":
    app.run(main)
