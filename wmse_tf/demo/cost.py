"""How long the demo's evaluation will take on this machine, known before training starts.

The demo has one wall-clock budget for training and evaluation together (`--demo_budget`), so
its training plan (`training.budget.TimeBudget(reserve=...)`) must know what the evaluation will
cost here. Its parts scale differently with the machine:

  features     forward passes of the encoder (trained and random) over both splits: convolutions,
               so they scale with the measured training step (a step is forward + backward of
               batch x views images, about FORWARD_SHARE of it forward)
  probes, k-NN dense algebra on the features: they scale with the core, not with the
               convolution kernels, so they are timed here on data of their real shapes
               (`calibrate`: a few probe epochs and k-NN chunks, a few seconds)
  t-SNE, plots, export   scale with the core like the probes: T_SNE_PROBE_EPOCHS epochs of one
               UNIT_PROBE_DIM-d probe, timed too (so not fewer when cached baselines leave fewer probes)

The constants were fitted on `python -m bench.evaluation_cost` and demo runs (docs/demo.md).

Example:
  >>> fixed = calibrate(60000, 10000, [64, 64, 784])
  >>> seconds = estimate(fixed, step_seconds=0.2, feature_images=140000, images_per_step=512)
"""

import time

import numpy as np

# Forward share of a training step's time per image (forward + backward ~ 3 forwards, plus the
# step's fixed costs); measured features / step ratio in docs/demo.md.
FORWARD_SHARE = 0.45
# t-SNE of 2 x 2000 points, the plots and the export, in epochs of one UNIT_PROBE_DIM-d probe on
# the machine (timed whatever rows the evaluation has, so it does not shrink with the probes
# left when baselines are cached): 39 s against 55 ms on an AVX2-only Zen 3 (709 epochs), 15 s
# against 35 ms on the Zen 4 development VM (430) (docs/demo.md).
T_SNE_PROBE_EPOCHS = 750
UNIT_PROBE_DIM = 64
MARGIN = 1.15  # estimates are kept 15% high: the budget must not be overrun
KNN_BANK = 65536  # rows of the k-NN bank timed at most (scaled to the real bank): all of Fashion-MNIST's
# 60000, whose per-row cost is lower than that of an 8192-row bank (8192 gave 11.4 s against 7.9 s taken)
PROBE_CALLS, KNN_CALLS = 5, 3  # one-epoch probe calls and k-NN chunks timed, after an untimed one


def median_seconds(call, times):
    """Median seconds of `call(i)` for i in range(times): one slow call (another process, the first
    run of a graph) does not inflate the estimate as it did a mean of two (72 ms per probe epoch
    estimated, 49 ms taken, in a demo on the Zen 3)."""
    seconds = []
    for i in range(times):
        start = time.perf_counter()
        call(i)
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def calibrate(num_train, num_test, dims, probe_epochs=500, knn_chunk=256, seed=0):
    """Seconds of the linear probes (trained together; none if `probe_epochs` is 0) and k-NN of
    feature sets of `dims`, extrapolated from the median of PROBE_CALLS one-epoch probe calls and of
    KNN_CALLS k-NN chunks per set against a bank of at most KNN_BANK rows, on random data of the real
    shapes (after one untimed call and chunk: tracing); and of the t-SNE, plots and export, from the
    epochs of one UNIT_PROBE_DIM-d probe."""
    from wmse_tf.evaluation import knn, linear_probe

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, num_train)
    xs = [rng.normal(size=(num_train, d)).astype(np.float32) for d in dims]
    import tensorflow as tf

    def epoch_seconds(sets):
        train, _ = linear_probe.trainer_for(sets, y, 10, linear_probe.ProbeConfig(epochs=max(probe_epochs, 3)))
        train(tf.constant(0), 1)  # traces
        return median_seconds(lambda i: train(tf.constant(1 + i), 1), PROBE_CALLS)

    epoch_s = epoch_seconds(xs) if probe_epochs and xs else 0.0
    if probe_epochs and dims == [UNIT_PROBE_DIM]:  # the probe just timed is the unit probe (cached baselines)
        unit_s = epoch_s
    else:
        unit_s = epoch_seconds([rng.normal(size=(num_train, UNIT_PROBE_DIM)).astype(np.float32)])
    specs = [("cosine", 5, False), ("euclidean", 5, False)]
    knn_s, bank = 0.0, min(num_train, KNN_BANK)
    for x in xs:  # the chunk's time grows with the bank's rows
        queries = x[:knn_chunk]
        chunk = lambda _: knn.knn_predict_many(x[:bank], y[:bank], queries, specs, batch_size=knn_chunk)  # noqa: E731
        chunk(None)  # traces
        knn_s += median_seconds(chunk, KNN_CALLS) * num_train / bank * -(-num_test // knn_chunk)
    return {"probe_epoch_seconds": epoch_s, "probes_seconds": epoch_s * probe_epochs, "knn_seconds": knn_s,
            "other_seconds": unit_s * T_SNE_PROBE_EPOCHS}


def estimate(fixed, step_seconds, feature_images, images_per_step):
    """Seconds of the whole evaluation: `calibrate`'s fixed part plus the features' forward passes."""
    features = feature_images / images_per_step * FORWARD_SHARE * step_seconds
    return MARGIN * (features + fixed["probes_seconds"] + fixed["knn_seconds"] + fixed["other_seconds"])

