"""Self-supervised objectives over a stack of views [V, N, D].

Every objective is a callable `objective(views, seed=None) -> (loss, stats)`
where `views[v, i]` is the embedding of view v of image i (same image order in
every view) and `stats` is a dict of scalar health metrics. `wmse` is the
W-MSE loss of Ermolov et al. (ICML 2021); baselines share the call shape.
"""

import dataclasses
import warnings

import keras
import tensorflow as tf

from wmse_tf.core import whitening


def normalized_mse(a, b):
    """Mean over rows of ||a/|a| - b/|b|||^2 = 2 - 2 cos(a, b) (float32 or float64)."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    a = tf.math.l2_normalize(tf.cast(a, whitening.compute_dtype(a.dtype)), axis=-1)
    b = tf.math.l2_normalize(tf.cast(b, whitening.compute_dtype(b.dtype)), axis=-1)
    return 2.0 - 2.0 * tf.reduce_mean(tf.reduce_sum(a * b, axis=-1))


def pairwise_normalized_mse(z):
    """Mean of normalized_mse over all V(V-1)/2 pairs of views z [V, M, D]."""
    num_views = z.shape[0]
    z = tf.convert_to_tensor(z)
    zn = tf.math.l2_normalize(tf.cast(z, whitening.compute_dtype(z.dtype)), axis=-1)
    rows = tf.cast(tf.shape(z)[1], zn.dtype)
    cos = tf.einsum("imd,jmd->ij", zn, zn) / rows  # mean cosine per pair of views
    upper = tf.linalg.band_part(tf.ones_like(cos), 0, -1) - tf.eye(num_views, dtype=zn.dtype)
    num_pairs = num_views * (num_views - 1) / 2
    return 2.0 - 2.0 * tf.reduce_sum(cos * upper) / tf.cast(num_pairs, zn.dtype)


def check_views(views, name="views"):
    """Validates a [V, N, D] stack of views; returns (V, N, D) static dims."""
    if views.shape.rank != 3:
        raise ValueError(f"{name} must have shape [V, N, D] (views, images, dims), got {views.shape}")
    num_views, n, d = views.shape
    if num_views is None or d is None:
        raise ValueError(f"{name}: the number of views and the embedding size must be static, got {views.shape}")
    if num_views < 2:
        raise ValueError(f"{name}: need at least 2 views (num_views >= 2), got {num_views}")
    return num_views, n, d


def check_whitening_sizes(n, d, w_size, where="wmse"):
    """Validates w_size against batch size n and embedding size d."""
    if w_size <= d:
        raise ValueError(
            f"{where}: w_size={w_size} must exceed the embedding size emb={d}, "
            "else the covariance is singular and Cholesky fails")
    if n is not None and n % w_size:
        raise ValueError(
            f"{where}: the batch of N={n} images per replica must be divisible by w_size={w_size}")
    if w_size < 2 * d:
        warnings.warn(
            f"{where}: w_size={w_size} < 2 * emb={2 * d}: the covariance estimate is noisy; "
            "the reference uses w_size >= 2 * emb", stacklevel=3)


def seed_tensor(seed):
    """A stateless-RNG seed [2] from an int, a keras SeedGenerator, a tensor or None."""
    if isinstance(seed, keras.random.SeedGenerator):
        return tf.cast(seed.next(), tf.int64)
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(seed, tf.int64)


def _mix32(x):
    """A 32-bit integer hash (lowbias32-style) in int64 arithmetic, exact on every device."""
    mask = tf.constant(0xFFFFFFFF, tf.int64)
    for mult in (0x7FEB352D, 0x2C1B3C6D):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
        x = (x * mult) & mask  # x < 2^32 and mult < 2^31: no int64 overflow
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def random_permutations(count, n, seed=None):
    """`count` independent permutations of range(n), [count, n] int32.

    argsort of hashed counters: the same permutations eager, in tf.function,
    under XLA and on any device for the same seed (TF's stateless RNG kernels
    give different streams with and without XLA).
    """
    s = seed_tensor(seed) & 0x7FFFFFFF
    key = _mix32(_mix32(s[0]) ^ s[1])
    counters = tf.range(tf.cast(count, tf.int64) * tf.cast(n, tf.int64), dtype=tf.int64)
    keys = _mix32((counters + key * 0x9E3779B) & 0xFFFFFFFF)
    return tf.argsort(tf.reshape(keys, [count, n]), axis=-1, stable=True)


def wmse(views, w_size, w_iter=1, eps=0.0, seed=None, return_stats=False):
    """W-MSE loss: whiten random sub-batches of each view, then MSE between positives.

    For each of `w_iter` iterations one permutation of the N images, shared by
    all views, splits them into N / w_size sub-batches; each view's sub-batch
    is whitened on its own (all in ONE batched call); the loss is
    normalized_mse summed over all V(V-1)/2 pairs of views, divided by
    w_iter * number of pairs.

    Args:
      views: [V, N, D] projections, V >= 2 views of the same N images.
      w_size: whitening sub-batch size; must exceed D and divide N.
      w_iter: number of independent permutations (losses averaged).
      eps: covariance shrinkage towards identity, in [0, 1).
      seed: int, keras.random.SeedGenerator or None, for the permutations.
      return_stats: also return a dict of whitening health metrics:
        `whiten_ok` (1.0 if every Cholesky factor is finite), `whiten_cond`
        (condition estimate of the worst sub-batch covariance) and
        `whiten_offdiag` (mean |off-diagonal| of the whitened covariance).

    Returns:
      Scalar loss, float32 (float64 for float64 views), and the stats dict if
      `return_stats`.

    Example:
      >>> loss = wmse_tf.core.objectives.wmse(tf.random.normal([4, 256, 64]), w_size=128)
    """
    views = tf.convert_to_tensor(views)
    num_views, n, d = check_views(views)
    check_whitening_sizes(n, d, w_size)
    if w_iter < 1:
        raise ValueError(f"wmse: w_iter must be >= 1, got {w_iter}")
    n_dyn = tf.shape(views)[1]
    perms = random_permutations(w_iter, n_dyn, seed)
    x = tf.gather(views, perms, axis=1)  # [V, I, N, D]
    x = tf.reshape(x, [num_views, w_iter, -1, w_size, d])
    z, chol = whitening.whiten(x, eps, return_chol=True)
    loss = pairwise_normalized_mse(tf.reshape(z, [num_views, -1, d]))
    if not return_stats:
        return loss
    stats = {
        "whiten_ok": tf.cast(tf.reduce_all(tf.math.is_finite(chol)), tf.float32),
        "whiten_cond": tf.cast(whitening.condition_estimate(chol), tf.float32),
        "whiten_offdiag": tf.cast(whitening.offdiag_abs_mean(z), tf.float32),
    }
    return loss, stats


@dataclasses.dataclass(frozen=True)
class WMSE:
    """W-MSE objective with fixed hyperparameters; see `wmse`.

    Example:
      >>> objective = wmse_tf.core.objectives.WMSE(w_size=128, w_iter=1, eps=0.0)
      >>> loss, stats = objective(tf.random.normal([2, 256, 64]))
    """

    w_size: int = 128
    w_iter: int = 1
    eps: float = 0.0
    stat_names = ("whiten_ok", "whiten_cond", "whiten_offdiag")

    def __call__(self, views, seed=None):
        return wmse(views, self.w_size, self.w_iter, self.eps, seed=seed, return_stats=True)


def embedding_std(z):
    """Collapse monitor: mean over dims of the batch std of L2-normalized z [..., N, D].

    About 1/sqrt(D) for embeddings spread over the sphere, 0 when every row
    points the same way (collapse). Returned as float32.
    """
    z = tf.convert_to_tensor(z)
    zn = tf.math.l2_normalize(tf.cast(z, tf.float64 if z.dtype == tf.float64 else tf.float32), axis=-1)
    return tf.cast(tf.reduce_mean(tf.math.reduce_std(zn, axis=-2)), tf.float32)


@dataclasses.dataclass(frozen=True)
class NormMSE:
    """Plain normalized MSE between all pairs of views (no whitening): collapses.

    Example:
      >>> loss, stats = wmse_tf.core.objectives.NormMSE()(tf.random.normal([2, 64, 8]))
    """

    stat_names = ("emb_std",)

    def __call__(self, views, seed=None):
        del seed
        views = tf.convert_to_tensor(views)
        check_views(views)
        return pairwise_normalized_mse(views), {"emb_std": embedding_std(views)}


# The objectives of the core by name. The baselines' losses live with their methods
# (`wmse_tf.methods.objective(name)` builds any method's).
OBJECTIVES = {"wmse": WMSE, "normmse": NormMSE}


def get(name, **kwargs):
    """Builds a core objective by name, e.g. get("wmse", w_size=128)."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective (method) {name!r}; registered: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name](**kwargs)
