"""BYOL (Grill et al., 2020), the paper's second baseline.

Reference semantics (htdt/self-supervised methods/byol.py):
  - online branch: encoder -> projector -> predictor (emb -> hidden, BN, ReLU -> emb);
  - target branch: a copy of encoder + projector, no gradient, updated after
    every optimizer step as an EMA of the online weights,
    target <- tau_k * target + (1 - tau_k) * online, with
    tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2 rising from tau_base to 1
    over the K = `total_steps` steps of training;
  - loss: for every pair of views (i, j), normalized MSE(pred_i, target_j) +
    normalized MSE(pred_j, target_i), divided by the number of pairs.

The target's weights are non-trainable Keras variables written with `assign`
inside `train_step` (a cross-replica `update`, like the optimizer's, so the
copies stay identical under MirroredStrategy). Like the reference, the target
runs in training mode (BatchNorm with batch statistics). `build` is the method's
builder (registered in `wmse_tf.methods` as "byol").
"""

import dataclasses
import math

import keras
import tensorflow as tf
from keras import ops

from wmse_tf.core import encoders, model as model_lib, objectives
from wmse_tf.methods.contrastive import embedding_std


def predictor_head(emb, hidden=1024, name="predictor"):
    """BYOL's predictor head: Dense(hidden), BN, ReLU, Dense(emb), float32 output.

    Example:
      >>> head = wmse_tf.methods.byol.predictor_head(64, hidden=1024)
    """
    return encoders.projector(emb, hidden, name=name)


def target_tau(step, total_steps, tau_base=0.99):
    """EMA coefficient after `step` of `total_steps`: tau_base at 0, 1 at the end (cosine).

    Works on Python numbers and tensors; `step` is clipped to [0, total_steps].
    """
    if isinstance(step, (int, float)):
        k = min(max(step, 0), total_steps)
        return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0
    k = tf.clip_by_value(tf.cast(step, tf.float32), 0.0, float(total_steps))
    return 1.0 - (1.0 - tau_base) * (tf.cos(math.pi * k / total_steps) + 1.0) / 2.0


def byol_loss(online, target):
    """Symmetric normalized MSE over all pairs of views.

    Args:
      online: [V, N, D] predictions of the online branch.
      target: [V, N, D] projections of the target branch (treated as constants).

    Returns:
      sum over pairs i < j of nmse(online_i, target_j) + nmse(online_j, target_i),
      divided by V(V-1)/2; nmse(a, b) = mean over rows of 2 - 2 cos(a, b).
    """
    online, target = tf.convert_to_tensor(online), tf.convert_to_tensor(target)
    num_views, _, _ = objectives.check_views(online, "online")
    if online.shape != target.shape and target.shape.is_fully_defined() and online.shape.is_fully_defined():
        raise ValueError(f"byol_loss: online {online.shape} and target {target.shape} must match")
    dtype = tf.float64 if online.dtype == tf.float64 else tf.float32
    p = tf.math.l2_normalize(tf.cast(online, dtype), axis=-1)
    t = tf.math.l2_normalize(tf.stop_gradient(tf.cast(target, dtype)), axis=-1)
    cos = tf.einsum("ind,jnd->ij", p, t) / tf.cast(tf.shape(p)[1], dtype)  # mean cos per (i, j)
    off_diag = 1.0 - tf.eye(num_views, dtype=dtype)
    num_pairs = num_views * (num_views - 1) / 2
    return tf.reduce_sum((2.0 - 2.0 * cos) * off_diag) / num_pairs


@dataclasses.dataclass(frozen=True)
class BYOLLoss:
    """BYOL's objective: `objective(online [V,N,D], seed, target=[V,N,D]) -> (loss, stats)`.

    Unlike the other objectives it needs the target projections, so it is used
    by `BYOLModel`, not by `SSLModel`. Stats: `emb_std` of the target projections.
    """

    stat_names = ("emb_std",)

    def __call__(self, views, seed=None, target=None):
        del seed
        if target is None:
            raise ValueError("BYOLLoss needs the target projections: objective(online, target=...)")
        return byol_loss(views, target), {"emb_std": embedding_std(target)}


@keras.saving.register_keras_serializable(package="wmse_tf")
class BatchStatsNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that, frozen (trainable=False), still uses batch statistics in training.

    Keras runs a frozen BatchNormalization in inference mode; BYOL's target
    network is frozen (updated by EMA, not by gradients) but, as in the
    reference, normalizes with the statistics of its batch. Moving statistics
    are left alone here (the EMA copies the online ones).
    """

    def call(self, inputs, training=None, mask=None):
        if not training or self.trainable or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        axes = [a for a in range(len(x.shape)) if a != axis]
        mean, variance = ops.moments(x, axes=axes)
        gamma = ops.cast(self.gamma, x.dtype) if self.scale else None
        beta = ops.cast(self.beta, x.dtype) if self.center else None
        out = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=beta, scale=gamma,
                                      epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)


def _clone_layer(layer):
    config = layer.get_config()
    if isinstance(layer, keras.layers.BatchNormalization):
        return BatchStatsNormalization.from_config(config)
    return layer.__class__.from_config(config)


def make_target(online, name):
    """A frozen copy of `online` (same weights, BatchNorm -> BatchStatsNormalization)."""
    try:
        target = keras.models.clone_model(online, clone_function=_clone_layer)
    except Exception as err:  # e.g. a subclassed model without get_config
        raise ValueError(
            f"BYOLModel: cannot clone {online.name!r} for the target network ({err}); "
            "pass target_encoder / target_projector explicitly") from err
    target.name = name
    copy_weights(online, target)
    target.trainable = False
    return target


def copy_weights(source, dest):
    """Copies all weights source -> dest, checking that they correspond one to one."""
    src, dst = source.weights, dest.weights
    if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
        raise ValueError(f"BYOLModel: the target {dest.name!r} does not mirror {source.name!r} "
                         f"({len(dst)} vs {len(src)} weights or different shapes)")
    for a, b in zip(src, dst):
        b.assign(a)


def _tf_variable(v):
    return v.value if isinstance(v, keras.Variable) else v


def ema_update(pairs, tau):
    """target <- tau * target + (1 - tau) * online for each (target, online) variable pair.

    A plain `assign` in whatever context it runs: in a replica context (strategy.run,
    fit under MirroredStrategy) each replica updates its own copy of the target from
    its own copy of the online weights, so mirrored weights stay identical (the same
    math on the same values) and per-replica BatchNorm statistics follow their replica.
    Valid in tf.function and under XLA; no merge_call.
    """
    for t, o in pairs:
        t, o = _tf_variable(t), _tf_variable(o)
        tau_t = tf.cast(tau, t.dtype)
        t.assign(tau_t * t + (1.0 - tau_t) * tf.cast(o, t.dtype))


class BYOLModel(model_lib.SSLModel):
    """BYOL: online encoder + projector + predictor, EMA target encoder + projector.

    Shares SSLModel's batch format, NaN guard, loss scaling and metrics;
    overrides `compute_objective` (predictor, target branch) and `train_step`
    (EMA update of the target after the optimizer step).

    Args:
      encoder, projector: the online networks (functional or Sequential
        Keras models; the target is a clone with the same weights).
      predictor: head emb -> emb; default `predictor_head(emb, 1024)`.
      total_steps: K, the number of training steps of the tau schedule, > 0.
      tau_base: initial EMA coefficient, in [0, 1] (reference: 0.99).
      target_encoder, target_projector: explicit target networks (same weight
        layout as the online ones) instead of clones.
      whiten_across_replicas: gather predictions and targets of all replicas
        (BYOL's loss is per-image, so this only changes the mean).
      seed: passed to SSLModel.

    Example:
      >>> model = BYOLModel(encoders.resnet(18, width=16), encoders.projector(64), total_steps=1000)
      >>> model.compile(optimizer=keras.optimizers.Adam(3e-3)); model.fit(ds, epochs=1)
    """

    def __init__(self, encoder, projector, predictor=None, total_steps=None, tau_base=0.99,
                 target_encoder=None, target_projector=None, whiten_across_replicas=False,
                 seed=None, **kwargs):
        if total_steps is None or int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"BYOLModel: total_steps (K of the tau schedule) must be a positive "
                             f"integer, got {total_steps}")
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"BYOLModel: tau_base must be in [0, 1], got {tau_base}")
        super().__init__(encoder, projector, BYOLLoss(), whiten_across_replicas, seed, **kwargs)
        emb = projector.compute_output_shape((None, encoder.output.shape[-1]))[-1]
        self.predictor = predictor if predictor is not None else predictor_head(emb)
        if not self.predictor.built:
            self.predictor.build((None, emb))
        self.total_steps = int(total_steps)
        self.tau_base = float(tau_base)
        if target_encoder is None:
            target_encoder = make_target(encoder, "target_" + encoder.name)
        else:
            copy_weights(encoder, target_encoder)
            target_encoder.trainable = False
        if target_projector is None:
            target_projector = make_target(projector, "target_" + projector.name)
        else:
            if not target_projector.built:
                target_projector.build((None, encoder.output.shape[-1]))
            copy_weights(projector, target_projector)
            target_projector.trainable = False
        self.target_encoder = target_encoder
        self.target_projector = target_projector
        self.stat_trackers["byol_tau"] = keras.metrics.Mean(name="byol_tau")

    def target_pairs(self):
        """(target variable, online variable) pairs of the EMA, in a fixed order."""
        online = self.encoder.weights + self.projector.weights
        target = self.target_encoder.weights + self.target_projector.weights
        return list(zip(target, online))

    def current_tau(self):
        """tau_k for k = the number of optimizer steps done so far."""
        return target_tau(self.optimizer.iterations, self.total_steps, self.tau_base)

    def update_target(self, tau):
        """target <- tau * target + (1 - tau) * online (all weights, BN statistics included)."""
        ema_update(self.target_pairs(), tau)

    def target_views(self, views, training):
        """Views [V, B, ...] -> target projections [V, B, D], no gradient."""
        shape = tf.shape(views)
        flat = tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0))
        z = self.target_projector(self.target_encoder(flat, training=training), training=training)
        return tf.stop_gradient(tf.reshape(tf.cast(z, tf.float32), [views.shape[0], -1, z.shape[-1]]))

    def compute_objective(self, views, training):
        groups = model_lib.view_groups(views)  # one per view size (multi-crop)
        z = tf.concat([self.embed_views(g, training) for g in groups], axis=0)  # [V, B, D]
        num_views, d = z.shape[0], z.shape[-1]
        p = self.predictor(tf.reshape(z, [-1, d]), training=training)
        p = tf.reshape(tf.cast(p, tf.float32), [num_views, -1, d])
        t = tf.concat([self.target_views(g, training) for g in groups], axis=0)
        if self.whiten_across_replicas:
            p, t = model_lib.all_gather_views(p), model_lib.all_gather_views(t)
        return self.objective(p, seed=self.seed_generator, target=t)

    def train_step(self, data):
        super().train_step(data)  # optimizer step (with NaN guard), metrics
        tau = self.current_tau()
        self.update_target(tau)
        self.stat_trackers["byol_tau"].update_state(tau)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        loss, stats = self.compute_objective(model_lib.unpack_batch(data), training=False)
        return self._update_metrics(loss, dict(stats, byol_tau=self.current_tau()))


def build(encoder, emb, hidden, params, whiten_across_replicas=False, seed=None, total_steps=None):
    """BYOLModel(encoder, projector, predictor_head, total_steps, tau_base=byol_tau)."""
    return BYOLModel(encoder, encoders.projector(emb, hidden), predictor_head(emb, hidden),
                     total_steps=total_steps, tau_base=params.byol_tau,
                     whiten_across_replicas=whiten_across_replicas, seed=seed, name="byol")
