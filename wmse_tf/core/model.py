"""SSLModel: encoder + projector + objective, trained with Keras `fit()`.

A batch is `(views, labels)`: `views` a tuple of V image batches [B, H, W, C]
(or one tensor [V, B, H, W, C]) of the same B images; labels are ignored.
All views go through the encoder in one call ([V*B, ...]): BatchNorm statistics
over all views at once; views of several sizes (multi-crop) take one call per size.
With `bn_per_view=True` the encoder is called once per view (statistics of each
view's own batch, as the reference) and the projector once on the concatenation.
The projections are stacked to [V, B, D] and handed to the objective. The methods'
builders are in `wmse_tf.methods`.
"""

import keras
import tensorflow as tf


def stack_views(views):
    """Returns views as one tensor [V, B, ...] from a tuple/list or a stacked tensor."""
    if isinstance(views, (tuple, list)):
        if len(views) < 2:
            raise ValueError(f"SSLModel: need at least 2 views per image, got {len(views)}")
        return tf.stack(views, axis=0)
    views = tf.convert_to_tensor(views)
    if views.shape.rank != 5:
        raise ValueError(
            f"SSLModel: views must be a tuple of V batches [B, H, W, C] or a tensor "
            f"[V, B, H, W, C], got shape {views.shape}")
    return views


def view_groups(views):
    """Views as stacked groups of one image size, in order: [[V1, B, ...], [V2, B, ...], ...].
    One group when all views have the same size; multi-crop gives the full-size views, then the
    small ones. A tensor [V, B, ...] is one group."""
    if not isinstance(views, (tuple, list)) or len({tuple(v.shape[1:]) for v in views}) == 1:
        return [stack_views(views)]
    groups = []
    for view in views:
        if groups and groups[-1][-1].shape[1:] == view.shape[1:]:
            groups[-1].append(view)
        else:
            groups.append([view])
    return [tf.stack(g, axis=0) for g in groups]


def _is_views(x):
    return isinstance(x, (tuple, list)) or getattr(getattr(x, "shape", None), "rank", None) == 5


def unpack_batch(data):
    """Returns the views of a batch: `(views, labels[, weights])`, `{"views": ...}` or views."""
    if isinstance(data, dict):
        return data["views"]
    if isinstance(data, (tuple, list)):
        data = tuple(d for d in data if d is not None)  # Keras passes (x, None, None)
        if len(data) == 1:
            return unpack_batch(data[0])
        if len(data) in (2, 3) and _is_views(data[0]) and not _is_views(data[1]):
            return data[0]
    return data


def all_gather_views(z):
    """Concatenates [V, b, D] projections of all replicas to [V, R*b, D] (gradients flow back)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return z
    n = None if z.shape[1] is None else z.shape[1] * ctx.num_replicas_in_sync
    return tf.ensure_shape(ctx.all_gather(z, axis=1), [z.shape[0], n, z.shape[2]])


class SSLModel(keras.Model):
    """Self-supervised model: encoder -> projector -> objective over views.

    Args:
      encoder: keras.Model, images -> features [B, F].
      projector: keras.Model/layer, features -> embeddings [B, D].
      objective: callable `(views [V, N, D], seed) -> (loss, stats)`,
        e.g. `wmse_tf.core.objectives.WMSE(w_size=128)`.
      whiten_across_replicas: under tf.distribute, gather the projections of
        all replicas so the objective sees the global batch.
      seed: seed of the objective's random permutations.
      bn_per_view: call the encoder once per view (BatchNorm statistics of each
        view's batch, the reference's way) instead of once on all V*B images.

    Example:
      >>> model = SSLModel(encoders.resnet(18, width=16), encoders.projector(64), objectives.WMSE(128))
      >>> model.compile(optimizer=keras.optimizers.Adam(1e-3)); model.fit(ds, epochs=1)
    """

    def __init__(self, encoder, projector, objective, whiten_across_replicas=False, seed=None,
                 bn_per_view=False, **kwargs):
        super().__init__(**kwargs)
        self.bn_per_view = bool(bn_per_view)
        self.encoder = encoder
        self.projector = projector
        self.objective = objective
        self.whiten_across_replicas = whiten_across_replicas
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        names = (*getattr(objective, "stat_names", ()), "step_ok")
        self.stat_trackers = {n: keras.metrics.Mean(name=n) for n in names}
        if not projector.built:
            projector.build((None, encoder.output.shape[-1]))
        self.built = True  # encoder and projector are built; call() is the encoder

    def compile(self, optimizer="rmsprop", **kwargs):
        """keras `compile`, then the optimizer's variables built for `trainable_variables`. Keras
        builds them in the first traced step when no strategy is set, and a tf.function that creates
        variables is traced twice: building them here halves the first `fit` call's tracing."""
        super().compile(optimizer=optimizer, **kwargs)
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, images, training=False):
        """Features of images (the encoder's output), as used for evaluation."""
        return self.encoder(images, training=training)

    def embed_views(self, views, training):
        """Views [V, B, ...] -> projections [V, B, D] (float32)."""
        if self.bn_per_view:  # V encoder calls, then the projector on [V*B, F]
            if views.shape[0] is None:
                raise ValueError("SSLModel(bn_per_view=True): the number of views must be static")
            feats = tf.concat([self.encoder(views[i], training=training) for i in range(views.shape[0])], 0)
        else:
            shape = tf.shape(views)
            feats = self.encoder(tf.reshape(views, tf.concat([[-1], shape[2:]], axis=0)), training=training)
        z = self.projector(feats, training=training)
        return tf.reshape(tf.cast(z, tf.float32), [views.shape[0], -1, z.shape[-1]])

    def compute_objective(self, views, training):
        """Runs the objective on a batch of views; returns (loss, stats)."""
        z = tf.concat([self.embed_views(g, training) for g in view_groups(views)], axis=0)
        if self.whiten_across_replicas:
            z = all_gather_views(z)
        return self.objective(z, seed=self.seed_generator)

    def _update_metrics(self, loss, stats):
        self.loss_tracker.update_state(loss)
        for name, value in stats.items():
            if name not in self.stat_trackers:
                raise ValueError(f"SSLModel: the objective returned stat {name!r} not listed in its "
                                 f"stat_names {tuple(self.stat_trackers)}")
            self.stat_trackers[name].update_state(value)
        return {m.name: m.result() for m in self.metrics}

    def _state_variables(self):
        """Non-trainable state of the networks (BatchNorm moving statistics)."""
        return self.encoder.non_trainable_variables + self.projector.non_trainable_variables

    def train_step(self, data):
        views = unpack_batch(data)
        state = [tf.identity(v) for v in self._state_variables()]
        with tf.GradientTape() as tape:
            loss, stats = self.compute_objective(views, training=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        # NaN guard: a non-finite loss or gradient never reaches the weights
        # (zero gradients; BatchNorm statistics restored). The NaN loss is still
        # reported so the training loop can stop.
        finite = tf.math.is_finite(loss)
        for g in grads:
            if g is not None:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        guard = finite
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # mixed_float16: overflowing scaled gradients must reach the optimizer, which
            # then skips the step and lowers its loss scale (zeros would freeze the scale).
            guard = tf.math.is_finite(loss)
        grads = [None if g is None else tf.where(guard, g, tf.zeros_like(g)) for g in grads]
        self.optimizer.apply(grads, variables)
        for var, old in zip(self._state_variables(), state):  # undo NaN moving statistics
            var.assign(tf.where(finite, var, old))
        stats = dict(stats, step_ok=tf.cast(finite, tf.float32))
        return self._update_metrics(loss, stats)

    def test_step(self, data):
        loss, stats = self.compute_objective(unpack_batch(data), training=False)
        return self._update_metrics(loss, stats)

    @property
    def metrics(self):
        return [self.loss_tracker, *self.stat_trackers.values()]

