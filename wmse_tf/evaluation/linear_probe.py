"""Linear probe on frozen features: the reference protocol (htdt eval/sgd.py).

One keras Dense layer (features -> classes, PyTorch's nn.Linear init) trained with
cross-entropy and keras Adam (weight decay 5e-6 as an L2 regularizer, so it is
added to the gradient as PyTorch's Adam does, not AdamW's decoupled decay), lr 1e-2
decayed exponentially per epoch (ExponentialDecay) to 1e-6 over 500 epochs,
shuffled batches of 1000 (the last partial batch of each epoch is dropped,
as the reference's loaders do). Features are used as they are (the reference
does not standardize them; `standardize=True` is an option). The whole run is
one jit-compiled tf.function (while loops over epochs and batches) over
in-memory tensors, so it is fast on CPU.

Example:
  >>> metrics = wmse_tf.evaluation.linear_probe.linear_probe(x_train, y_train, x_test, y_test, ProbeConfig(epochs=100))
"""

import dataclasses
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf

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
      progress: show a progress bar (epochs, in PROGRESS_CHUNKS XLA calls).
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


def _trainer(layer, optimizer, x, y, rows, seed):
    """fn(first_epoch, epochs): `epochs` epochs of shuffled batches of `rows` rows, all in
    one XLA program (a while loop over epochs and steps); `epochs` is a Python int."""
    n = x.shape[0]
    steps = n // rows
    variables = layer.trainable_variables

    @tf.function(jit_compile=True)
    def train(first_epoch, epochs):
        def epoch_body(epoch):
            perm = tf.argsort(tf.random.stateless_uniform([n], tf.stack([seed, epoch])))

            def step_body(s):
                idx = tf.slice(perm, [s * rows], [rows])
                xb, yb = tf.gather(x, idx), tf.gather(y, idx)
                with tf.GradientTape() as tape:
                    logits = layer(xb)
                    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
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
    x = tf.constant(np.asarray(train_x, np.float32))
    y = tf.constant(np.asarray(train_y, np.int32))
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train_linear: {x.shape[0]} feature rows but {y.shape[0]} labels")
    if int(tf.reduce_min(y)) < 0 or int(tf.reduce_max(y)) >= num_classes:
        raise ValueError(f"train_linear: labels must be in [0, {num_classes}) (unlabelled rows removed)")
    rows = min(config.batch_size, x.shape[0])
    layer = _classifier(*_init(x.shape[1], num_classes, config.seed), config.weight_decay)
    optimizer = _optimizer(config, x.shape[0] // rows)
    optimizer.build(layer.trainable_variables)
    train = _trainer(layer, optimizer, x, y, rows, tf.constant(config.seed))
    # One XLA call for all epochs; with progress, PROGRESS_CHUNKS calls (same result: the
    # optimizer keeps its state, the lr and the shuffling depend on the global epoch only).
    chunk = -(-config.epochs // PROGRESS_CHUNKS) if config.progress else config.epochs
    bar = keras.utils.Progbar(config.epochs, unit_name="epoch") if config.progress else None
    done = 0
    while done < config.epochs:
        n = min(chunk, config.epochs - done)
        train(tf.constant(done), n)
        done += n
        if bar:
            bar.update(done)
    w, b = layer.get_weights()
    return w, b


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
    train_x, train_y = _labelled(train_x, train_y)
    test_x, test_y = _labelled(test_x, test_y)
    num_classes = num_classes or int(max(train_y.max(), test_y.max())) + 1
    if config.standardize:
        mean, std = standardizer(train_x)
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    w, b = train_linear(train_x, train_y, num_classes, config)
    return topk_accuracy(test_x @ w + b, test_y, config.topk)


def _labelled(x, y):
    x, y = np.asarray(x, np.float32), np.asarray(y, np.int64)
    keep = y >= 0
    return x[keep], y[keep]
