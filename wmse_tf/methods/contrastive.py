"""NT-Xent (SimCLR's contrastive loss), the paper's contrastive baseline.

Reference semantics (htdt/self-supervised methods/contrastive.py): for each
pair of views (i, j) and each image n, the logits of anchor z_i[n] are its
cosine similarities / tau to every z_j[m] (the positive is m = n) and to every
z_i[m], m != n (the same-view diagonal is masked out); the cross entropy is
averaged over images, over both directions of the pair, and over the
V(V-1)/2 pairs. Embeddings are L2-normalized (`normalize=True`); the model
puts a BatchNorm after the projector (`projector`); `build` is the method's
builder (registered in `wmse_tf.methods` as "contrastive").

`whiten=True` whitens each view's batch (wmse_tf.core.whitening.whiten) before the
loss: the paper's "whitening + contrastive" ablation.
"""

import dataclasses

import keras
import tensorflow as tf

from wmse_tf.core import encoders, model as model_lib, objectives, whitening
from wmse_tf.core.objectives import embedding_std  # noqa: F401 (public here since it was defined here)

MASK = 1e9  # subtracted from the masked same-view diagonal (as the reference)


def _float(x):
    """float64 stays float64; everything else computes in float32."""
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float64 if x.dtype == tf.float64 else tf.float32)


def nt_xent(views, tau=0.5, normalize=True):
    """NT-Xent loss averaged over all pairs of views.

    Args:
      views: [V, N, D] embeddings, V >= 2 views of the same N images.
      tau: temperature, > 0 (the reference uses 0.5).
      normalize: L2-normalize the embeddings first (cosine similarities).

    Returns:
      Scalar loss (float32, or float64 for float64 views).

    Example:
      >>> loss = wmse_tf.methods.contrastive.nt_xent(tf.random.normal([2, 256, 64]), tau=0.5)
    """
    if not tau > 0:
        raise ValueError(f"nt_xent: tau (temperature) must be > 0, got {tau}")
    z = _float(views)
    num_views, _, _ = objectives.check_views(z)
    if normalize:
        z = tf.math.l2_normalize(z, axis=-1)
    inv_tau = tf.cast(1.0 / tau, z.dtype)
    sim = tf.einsum("ind,jmd->ijnm", z, z) * inv_tau  # [V, V, N, N] cross-view logits
    eye = tf.eye(tf.shape(z)[1], dtype=z.dtype)
    same = tf.einsum("ind,imd->inm", z, z) * inv_tau - MASK * eye  # [V, N, N], diagonal masked
    # Anchor z_i[n] of the ordered pair (i, j): logsumexp over [sim[i, j, n, :], same[i, n, :]].
    lse_cross = tf.reduce_logsumexp(sim, axis=-1)  # [V, V, N]
    lse_same = tf.broadcast_to(tf.reduce_logsumexp(same, axis=-1)[:, None, :], tf.shape(lse_cross))
    lse = tf.reduce_logsumexp(tf.stack([lse_cross, lse_same]), axis=0)
    positive = tf.linalg.diag_part(sim)  # [V, V, N]: sim[i, j, n, n]
    ce = tf.reduce_mean(lse - positive, axis=-1)  # [V, V], mean over images
    off_diag = 1.0 - tf.eye(num_views, dtype=z.dtype)
    # Mean over ordered pairs = mean over pairs of the two directions' mean.
    return tf.reduce_sum(ce * off_diag) / (num_views * (num_views - 1))


def mean_positive_cosine(views):
    """Mean cosine similarity between the views of the same image, over all pairs."""
    z = tf.math.l2_normalize(_float(views), axis=-1)
    num_views = z.shape[0]
    cos = tf.einsum("ind,jnd->ij", z, z) / tf.cast(tf.shape(z)[1], z.dtype)
    off_diag = 1.0 - tf.eye(num_views, dtype=z.dtype)
    return tf.cast(tf.reduce_sum(cos * off_diag) / (num_views * (num_views - 1)), tf.float32)


@dataclasses.dataclass(frozen=True)
class NTXent:
    """NT-Xent contrastive objective with the common call shape; see `nt_xent`.

    Args:
      tau: temperature, > 0 (reference: 0.5).
      normalize: L2-normalize the embeddings (reference: True).
      whiten: whiten each view's batch before the loss (the paper's
        "whitening + contrastive" ablation); needs N > D per replica.
      w_eps: covariance shrinkage of that whitening, in [0, 1).

    Stats: `pos_cos` (mean cosine of positives), `emb_std` (collapse monitor,
    see `embedding_std`), and `whiten_ok` when `whiten`.

    Example:
      >>> objective = wmse_tf.methods.contrastive.NTXent(tau=0.5)
      >>> loss, stats = objective(tf.random.normal([2, 256, 64]))
    """

    tau: float = 0.5
    normalize: bool = True
    whiten: bool = False
    w_eps: float = 0.0

    def __post_init__(self):
        if not self.tau > 0:
            raise ValueError(f"NTXent: tau (temperature) must be > 0, got {self.tau}")
        if not 0.0 <= self.w_eps < 1.0:
            raise ValueError(f"NTXent: w_eps must be in [0, 1), got {self.w_eps}")

    @property
    def stat_names(self):
        return ("pos_cos", "emb_std") + (("whiten_ok",) if self.whiten else ())

    def __call__(self, views, seed=None):
        del seed  # deterministic
        views = tf.convert_to_tensor(views)
        _, n, d = objectives.check_views(views)
        stats = {}
        if self.whiten:
            if n is not None and n <= d:
                raise ValueError(
                    f"NTXent(whiten=True): the batch of N={n} images per replica must exceed "
                    f"the embedding size emb={d}, else the covariance is singular")
            views, chol = whitening.whiten(_float(views), self.w_eps, return_chol=True)
            stats["whiten_ok"] = tf.cast(tf.reduce_all(tf.math.is_finite(chol)), tf.float32)
        loss = nt_xent(views, self.tau, self.normalize)
        stats["pos_cos"] = mean_positive_cosine(views)
        stats["emb_std"] = embedding_std(views)
        return loss, stats


def projector(emb, hidden=1024, name="projector"):
    """The projector followed by BatchNorm (float32), as the reference's contrastive head."""
    return keras.Sequential([
        encoders.projector(emb, hidden, name="head"),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32", name="bn_last"),
    ], name=name)


def build(encoder, emb, hidden, params, whiten_across_replicas=False, seed=None):
    """SSLModel(encoder, projector + BatchNorm, NTXent(tau, whiten_contrastive, w_eps))."""
    objective = NTXent(tau=params.tau, whiten=params.whiten_contrastive, w_eps=params.w_eps)
    return model_lib.SSLModel(encoder, projector(emb, hidden), objective,
                              whiten_across_replicas=whiten_across_replicas, seed=seed, name="contrastive")
