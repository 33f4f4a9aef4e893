"""Linear probe on frozen features: the reference protocol (htdt eval/sgd.py).

One keras Dense layer (features -> classes, PyTorch's nn.Linear init) trained with
cross-entropy and keras Adam (weight decay 5e-6 as an L2 regularizer, so it is
added to the gradient as PyTorch's Adam does, not AdamW's decoupled decay), lr 1e-2
decayed exponentially per epoch (ExponentialDecay) to 1e-6 over 500 epochs,
shuffled batches of 1000 (the last partial batch of each epoch is dropped,
as the reference's loaders do). Features are used as they are (the reference
does not standardize them; `standardize=True` is an option). The whole run is
one tf.function (while loops over epochs and batches) over in-memory tensors;
`linear_probes` trains the probes of several feature sets of the same images in
that one loop (the demo's encoder, random weights and raw pixels), each exactly
as alone, so the loop's per-step overhead is paid once.

Example:
  >>> metrics = wmse_tf.evaluation.linear_probe.linear_probe(x_train, y_train, x_test, y_test, ProbeConfig(epochs=100))
"""

import dataclasses
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

from wmse_tf.evaluation.features import progress_bar

PROGRESS_CHUNKS = 10


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe hyperparameters; defaults are the reference protocol.

    Attributes:
      epochs: passes over the training features (reference: 500).
      batch_size: rows per Adam step (reference: 1000); the whole set if smaller.
      lr_start, lr_end: exponential decay per epoch from lr_start to lr_end.
      weight_decay: L2 coefficient added to the gradient (PyTorch Adam).
      standardize: z-score features with the training mean/std first.
      topk: the top-k accuracies to report.
      seed: seed of the initialization and the shuffling.
      progress: show a progress bar (epochs, in PROGRESS_CHUNKS calls).
      jit_compile: XLA for the loop. Off: on a quiet 2-core CPU the two are within 15% of each
        other (60000 rows, 64-d and 784-d), but with other jobs on the cores XLA ran 2-4x slower.
    """

    epochs: int = 500
    batch_size: int = 1000
    lr_start: float = 1e-2
    lr_end: float = 1e-6
    weight_decay: float = 5e-6
    standardize: bool = False
    topk: Tuple[int, ...] = (1, 5)
    seed: int = 0
    progress: bool = False
    jit_compile: bool = False

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"ProbeConfig: epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not 0 < self.lr_end <= self.lr_start:
            raise ValueError(f"ProbeConfig: need 0 < lr_end <= lr_start, got {self.lr_end}, {self.lr_start}")


def _init(num_features, num_classes, seed):
    """PyTorch nn.Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and bias."""
    bound = 1.0 / np.sqrt(num_features)
    w = tf.random.stateless_uniform([num_features, num_classes], [seed, 1], -bound, bound)
    b = tf.random.stateless_uniform([num_classes], [seed, 2], -bound, bound)
    return w, b


def _classifier(w, b, weight_decay):
    """keras Dense(features -> classes) with weights (w, b); L2 of weight_decay / 2 on both,
    so the gradient gains weight_decay * param: PyTorch Adam's weight_decay (not AdamW)."""
    l2 = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    layer = keras.layers.Dense(w.shape[1], kernel_regularizer=l2, bias_regularizer=l2, dtype="float32")
    layer.build((None, w.shape[0]))
    layer.set_weights([w.numpy(), b.numpy()])
    return layer


def _optimizer(config, steps_per_epoch):
    """Keras Adam (PyTorch's betas and epsilon), lr decayed per epoch: lr_start * gamma^epoch."""
    gamma = (config.lr_end / config.lr_start) ** (1.0 / config.epochs)
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.lr_start, decay_steps=steps_per_epoch, decay_rate=gamma, staircase=True)
    return keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.999, epsilon=1e-8)


def _trainer(layers, optimizer, xs, y, rows, seed, jit_compile):
    """fn(first_epoch, epochs): `epochs` epochs of shuffled batches of `rows` rows for every
    (layer, features) pair at once, in one tf.function (a while loop over epochs and steps);
    `epochs` is a Python int. The pairs share the batches (the shuffling depends on the seed
    and the epoch only) and nothing else: the loss is their sum, so each layer's gradient and
    Adam update are what it would get alone."""
    n = xs[0].shape[0]
    steps = n // rows
    variables = [v for layer in layers for v in layer.trainable_variables]

    @tf.function(jit_compile=jit_compile, autograph=False)  # explicit while loops
    def train(first_epoch, epochs):
        def epoch_body(epoch):
            perm = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed, epoch])))

            def step_body(s):
                idx = tf.slice(perm, [s * rows], [rows])
                yb = tf.gather(y, idx)
                with tf.GradientTape() as tape:
                    loss = 0.0
                    for layer, x in zip(layers, xs):
                        logits = layer(tf.gather(x, idx))
                        loss += tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
                        loss += tf.add_n(layer.losses) if layer.losses else 0.0
                optimizer.apply(tape.gradient(loss, variables), variables)
                return (s + 1,)

            tf.while_loop(lambda s: s < steps, step_body, (tf.constant(0),))
            return (epoch + 1,)

        tf.while_loop(lambda e: e < first_epoch + epochs, epoch_body, (first_epoch,))

    return train


def standardizer(train_x):
    """(mean, std) of training features, std floored at 1e-6."""
    return train_x.mean(0), np.maximum(train_x.std(0), 1e-6)


def train_linear(train_x, train_y, num_classes, config=ProbeConfig()):
    """Trains the linear layer; returns (W [F, C], b [C]) as numpy arrays."""
    return train_linears([train_x], train_y, num_classes, config)[0]


def train_linears(train_xs, train_y, num_classes, config=ProbeConfig()):
    """Trains one linear layer per feature set of the same rows (`train_xs`: [N, F_i] each, one
    label array), all in the same loop; returns [(W_i [F_i, C], b_i [C])], each what
    `train_linear` gives for that set alone (up to float rounding)."""
    train, layers = trainer_for(train_xs, train_y, num_classes, config)
    # One call for all epochs; with progress, PROGRESS_CHUNKS calls (same result: the
    # optimizer keeps its state, the lr and the shuffling depend on the global epoch only).
    chunk = -(-config.epochs // PROGRESS_CHUNKS) if config.progress else config.epochs
    bar = progress_bar(config.epochs, "epoch") if config.progress else None
    done = 0
    while done < config.epochs:
        n = min(chunk, config.epochs - done)
        train(tf.constant(done), n)
        done += n
        if bar:
            bar.update(done)
    return [tuple(layer.get_weights()) for layer in layers]


def trainer_for(train_xs, train_y, num_classes, config=ProbeConfig()):
    """(train(first_epoch, epochs), layers): the probes' loop, not yet run (`train_linears`)."""
    xs = [tf.constant(np.asarray(x, np.float32)) for x in train_xs]
    y = tf.constant(np.asarray(train_y, np.int32))
    if any(x.shape[0] != y.shape[0] for x in xs):
        raise ValueError(f"train_linear: {[x.shape[0] for x in xs]} feature rows but {y.shape[0]} labels")
    if int(tf.reduce_min(y)) < 0 or int(tf.reduce_max(y)) >= num_classes:
        raise ValueError(f"train_linear: labels must be in [0, {num_classes}) (unlabelled rows removed)")
    rows = min(config.batch_size, y.shape[0])
    layers = [_classifier(*_init(x.shape[1], num_classes, config.seed), config.weight_decay) for x in xs]
    optimizer = _optimizer(config, y.shape[0] // rows)
    optimizer.build([v for layer in layers for v in layer.trainable_variables])
    return _trainer(layers, optimizer, xs, y, rows, tf.constant(config.seed), config.jit_compile), layers


def topk_accuracy(logits, labels, topk=(1, 5)):
    """{"top{k}": fraction of rows whose label is among the k largest logits}."""
    order = np.argsort(-logits, axis=1, kind="stable")
    hits = order == np.asarray(labels)[:, None]
    return {f"top{k}": float(hits[:, :k].any(1).mean()) for k in topk}


def linear_probe(train_x, train_y, test_x, test_y, num_classes=None, config=ProbeConfig()):
    """Trains on (train_x, train_y), returns {"top1": .., "top5": ..} on the test set.

    `num_classes` defaults to max label + 1 (as the reference). Rows with label
    < 0 (unlabelled) are ignored.
    """
    return linear_probes([train_x], train_y, [test_x], test_y, num_classes, config)[0]


def linear_probes(train_xs, train_y, test_xs, test_y, num_classes=None, config=ProbeConfig()):
    """`linear_probe` of several feature sets of the same images (same labels), trained together."""
    keep_train, keep_test = np.asarray(train_y) >= 0, np.asarray(test_y) >= 0
    train_xs = [np.asarray(x, np.float32)[keep_train] for x in train_xs]
    test_xs = [np.asarray(x, np.float32)[keep_test] for x in test_xs]
    train_y = np.asarray(train_y, np.int64)[keep_train]
    test_y = np.asarray(test_y, np.int64)[keep_test]
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if config.standardize:
        stats = [standardizer(x) for x in train_xs]
        train_xs = [(x - m) / s for x, (m, s) in zip(train_xs, stats)]
        test_xs = [(x - m) / s for x, (m, s) in zip(test_xs, stats)]
    weights = train_linears(train_xs, train_y, num_classes, config)
    return [topk_accuracy(x @ w + b, test_y, config.topk) for x, (w, b) in zip(test_xs, weights)]


