"""Canaries of wmse_tf/core/tf_compat.py: each wrapped TF symbol against NumPy in float64.

A failure here means TensorFlow changed a symbol wmse_tf relies on outside TF2's public API."""

import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.core import tf_compat


def numpy_batch_norm(x, gamma, beta, eps):
    """float64 training-mode batch norm over all but the last axis and its input gradients
    for the upstream gradient `dy`; returns y, mean, unbiased variance and a grad function."""
    x = x.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    mean, var = x.mean(axes), x.var(axes)
    xhat = (x - mean) / np.sqrt(var + eps)

    def grads(dy):
        dgamma, dbeta = (dy * xhat).sum(axes), dy.sum(axes)
        dx = gamma / np.sqrt(var + eps) * (dy - dbeta / n - xhat * dgamma / n)
        return dx, dgamma, dbeta

    return gamma * xhat + beta, mean, var * n / (n - 1), grads


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_fused_batch_norm_train_matches_numpy(eps):
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(4, 3, 5, 6)).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    xt, gt, bt = (tf.constant(a) for a in (x, gamma, beta))
    with tf.GradientTape() as tape:
        tape.watch([xt, gt, bt])
        y, mean, var = tf_compat.fused_batch_norm_train(xt, gt, bt, eps)
        loss = tf.reduce_sum(y * dy)
    got_grads = tape.gradient(loss, [xt, gt, bt])
    # TF floors epsilon at 1.001e-5 (cuDNN's minimum); the documented behaviour of the wrapper.
    want_y, want_mean, want_var, grads = numpy_batch_norm(x, gamma, beta, max(eps, 1.001e-5))
    assert y.dtype == tf.float32 and mean.shape == var.shape == (6,)
    np.testing.assert_allclose(y.numpy(), want_y, atol=1e-4)
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-5)
    np.testing.assert_allclose(var.numpy(), want_var, rtol=1e-4)  # unbiased: n / (n - 1)
    for got, want in zip(got_grads, grads(dy.astype(np.float64))):
        np.testing.assert_allclose(got.numpy(), want, atol=2e-3)


def test_fused_batch_norm_train_keeps_half_precision_outputs():
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 4, 4, 16)), tf.bfloat16)
    y, mean, var = tf_compat.fused_batch_norm_train(x, tf.ones([16]), tf.zeros([16]), 1e-3)
    assert y.dtype == tf.bfloat16 and mean.dtype == var.dtype == tf.float32
    want = numpy_batch_norm(x.numpy().astype(np.float64), 1.0, 0.0, 1e-3)[0]
    np.testing.assert_allclose(y.numpy().astype(np.float64), want, atol=5e-2)
