"""Cholesky whitening of embeddings: the operation at the heart of W-MSE.

`whiten(x)` maps each group of n rows (any leading batch dims) to zero mean and
identity covariance: S = Xc^T Xc / (n - 1), S' = (1 - eps) S + eps I,
S' = L L^T, W = L^-1, output Xc W^T. All groups are whitened in one batched
Cholesky and one batched triangular solve. Math runs in float32 even for
float16/bfloat16 inputs (mixed precision; float64 stays float64); the result
is cast back to the input dtype.
"""

import keras
import tensorflow as tf


def compute_dtype(dtype):
    """float32 for 16-bit floats (mixed precision), else the input's float dtype."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def whitening_matrix(xc, eps=0.0):
    """Returns (W, L) for centred rows `xc` [..., n, d] (float32 or float64).

    W = L^-1 where L is the Cholesky factor of the shrunk covariance.
    A singular covariance gives a non-finite L (tf.linalg.cholesky returns NaN
    rather than raising); callers check `tf.math.is_finite`.
    """
    n = tf.cast(tf.shape(xc)[-2], xc.dtype)
    d = tf.shape(xc)[-1]
    cov = tf.linalg.matmul(xc, xc, transpose_a=True) / (n - 1.0)
    eye = tf.eye(d, batch_shape=tf.shape(cov)[:-2], dtype=xc.dtype)
    if eps:
        cov = (1.0 - eps) * cov + eps * eye
    chol = tf.linalg.cholesky(cov)
    w = tf.linalg.triangular_solve(chol, eye, lower=True)
    return w, chol


def whiten(x, eps=0.0, return_chol=False):
    """Whitens each group of rows of `x` [..., n, d] to zero mean, identity covariance.

    Args:
      x: float tensor [..., n, d]; leading dims are independent groups.
      eps: shrinkage towards identity, S' = (1 - eps) S + eps I, in [0, 1).
      return_chol: also return the Cholesky factor L [..., d, d] (float32,
        or float64 for float64 inputs), for health metrics.

    Returns:
      Whitened tensor of x's shape and dtype (and L if `return_chol`).

    Example:
      >>> z = wmse_tf.core.whitening.whiten(tf.random.normal([4, 128, 64]))
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"whiten: eps must be in [0, 1), got {eps}")
    x = tf.convert_to_tensor(x)
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"whiten: x must have shape [..., n, d], got {x.shape}")
    xf = tf.cast(x, compute_dtype(x.dtype))
    xc = xf - tf.reduce_mean(xf, axis=-2, keepdims=True)
    w, chol = whitening_matrix(xc, eps)
    out = tf.cast(tf.linalg.matmul(xc, w, transpose_b=True), x.dtype)
    return (out, chol) if return_chol else out


def condition_estimate(chol):
    """Cheap condition-number estimate of L L^T: (max diag L / min diag L)^2.

    A lower bound of the true condition number; it grows without bound as the
    covariance becomes singular (collapse) and is NaN when Cholesky failed.
    """
    diag = tf.abs(tf.linalg.diag_part(chol))
    ratio = tf.reduce_max(diag, axis=-1) / tf.reduce_min(diag, axis=-1)
    return tf.reduce_max(ratio) ** 2


def offdiag_abs_mean(z):
    """Mean |off-diagonal| of the covariance of z [..., n, d]: 0 when whitened."""
    z = tf.cast(z, tf.float32)
    zc = z - tf.reduce_mean(z, axis=-2, keepdims=True)
    n = tf.cast(tf.shape(z)[-2], tf.float32)
    cov = tf.linalg.matmul(zc, zc, transpose_a=True) / (n - 1.0)
    off = cov - tf.linalg.diag(tf.linalg.diag_part(cov))
    d = tf.cast(tf.shape(z)[-1], tf.float32)
    return tf.reduce_mean(tf.abs(off)) * d / (d - 1.0)


@keras.saving.register_keras_serializable(package="wmse_tf")
class Whitening(keras.layers.Layer):
    """Whitening layer: batch statistics in training, running ones at inference.

    Like BatchNormalization, training whitens with the batch's own mean and
    covariance and updates running estimates with `momentum`; inference uses
    the running mean and covariance (if `track_running_stats`), so a single
    example can be whitened. Statistics are float32 under mixed precision.

    Args:
      eps: shrinkage towards identity, in [0, 1).
      momentum: weight of the old running statistics in the update.
      track_running_stats: keep running mean/covariance for inference; if
        False, inference whitens with batch statistics too.

    Example:
      >>> layer = wmse_tf.core.whitening.Whitening(eps=0.0)
    """

    def __init__(self, eps=0.0, momentum=0.99, track_running_stats=True, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"Whitening: eps must be in [0, 1), got {eps}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"Whitening: momentum must be in [0, 1], got {momentum}")
        self.eps = eps
        self.momentum = momentum
        self.track_running_stats = track_running_stats

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None:
            raise ValueError("Whitening: the last (feature) dimension must be known")
        if self.track_running_stats:
            self.running_mean = self.add_weight(
                shape=(d,), initializer="zeros", trainable=False,
                dtype="float32", name="running_mean")
            self.running_cov = self.add_weight(
                shape=(d, d), initializer="identity", trainable=False,
                dtype="float32", name="running_cov")

    def call(self, x, training=False):
        if training or not self.track_running_stats:
            if training and self.track_running_stats:
                self._update_running(x)
            return whiten(x, self.eps)
        x32 = tf.cast(x, tf.float32)
        xc = x32 - self.running_mean
        d = tf.shape(self.running_cov)[-1]
        cov = (1.0 - self.eps) * self.running_cov + self.eps * tf.eye(d)
        chol = tf.linalg.cholesky(cov)
        w = tf.linalg.triangular_solve(chol, tf.eye(d), lower=True)
        return tf.cast(tf.linalg.matmul(xc, w, transpose_b=True), x.dtype)

    def _update_running(self, x):
        x32 = tf.reshape(tf.cast(x, tf.float32), [-1, tf.shape(x)[-1]])
        mean = tf.reduce_mean(x32, axis=0)
        xc = x32 - mean
        n = tf.cast(tf.shape(x32)[0], tf.float32)
        cov = tf.linalg.matmul(xc, xc, transpose_a=True) / (n - 1.0)
        m = self.momentum
        self.running_mean.assign(m * self.running_mean + (1.0 - m) * mean)
        self.running_cov.assign(m * self.running_cov + (1.0 - m) * cov)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(eps=self.eps, momentum=self.momentum,
                      track_running_stats=self.track_running_stats)
        return config
