"""Tests of wmse_tf.core.whitening against the float64 numpy formula."""

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import covariance, numpy_whiten
from wmse_tf.core import whitening


def correlated(shape, seed=0):
    """Random data with a non-trivial covariance (mixed, shifted, scaled)."""
    rng = np.random.default_rng(seed)
    d = shape[-1]
    mix = rng.normal(size=(d, d)) + 3 * np.eye(d)
    return (rng.normal(size=shape) @ mix + rng.normal(size=d) * 5).astype(np.float32)


def test_output_has_zero_mean_and_identity_covariance():
    z = whitening.whiten(correlated([128, 64])).numpy()
    assert np.abs(z.mean(axis=0)).max() < 1e-4
    assert np.abs(covariance(z) - np.eye(64)).max() < 2e-3


def test_matches_float64_numpy():
    x = correlated([128, 64], seed=1)
    np.testing.assert_allclose(whitening.whiten(x).numpy(), numpy_whiten(x), atol=2e-3)
    np.testing.assert_allclose(whitening.whiten(x.astype(np.float64)).numpy(), numpy_whiten(x), atol=2e-3)


def test_batched_equals_loop_over_groups():
    x = correlated([2, 3, 96, 16], seed=2)
    batched = whitening.whiten(x).numpy()
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(batched[i, j], whitening.whiten(x[i, j]).numpy(), atol=1e-4)


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_eps_shrinkage_matches_formula(eps):
    x = correlated([64, 8], seed=3)
    z = whitening.whiten(x, eps=eps).numpy()
    np.testing.assert_allclose(z, numpy_whiten(x, eps), atol=1e-4)
    # Whitened w.r.t. the shrunk covariance: W S' W^T = I, so cov(z) != I exactly.
    assert np.abs(covariance(z) - np.eye(8)).max() > 1e-3


def test_mixed_precision_inputs_are_whitened_in_float32():
    x = correlated([128, 32], seed=4)
    z16 = whitening.whiten(tf.constant(x, tf.bfloat16))
    assert z16.dtype == tf.bfloat16
    ref = numpy_whiten(tf.cast(tf.constant(x, tf.bfloat16), tf.float64).numpy())
    np.testing.assert_allclose(tf.cast(z16, tf.float32).numpy(), ref, atol=0.05)


def test_singular_covariance_gives_nonfinite_cholesky_and_huge_condition():
    x = np.repeat(correlated([16, 8]), 2, axis=1)[:, :16]  # duplicated columns: rank 8 < 16
    _, chol = whitening.whiten(x, return_chol=True)
    cond = whitening.condition_estimate(chol).numpy()
    assert not np.isfinite(chol.numpy()).all() or cond > 1e6
    _, chol_ok = whitening.whiten(correlated([64, 8]), return_chol=True)
    assert np.isfinite(chol_ok.numpy()).all()
    assert whitening.condition_estimate(chol_ok).numpy() < 1e4


def test_offdiag_metric_is_zero_after_whitening_only():
    x = correlated([128, 16], seed=5)
    assert whitening.offdiag_abs_mean(whitening.whiten(x)).numpy() < 1e-5
    assert whitening.offdiag_abs_mean(x).numpy() > 0.1


def test_gradient_matches_finite_differences():
    x = tf.constant(correlated([12, 3], seed=6).astype(np.float64))
    proj = tf.constant(np.random.default_rng(7).normal(size=(12, 3)))
    theoretical, numerical = tf.test.compute_gradient(
        lambda t: tf.reduce_sum(whitening.whiten(t) * proj), [x])
    np.testing.assert_allclose(theoretical[0], numerical[0], atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="eps"):
        whitening.whiten(np.zeros([4, 2], np.float32), eps=1.5)
    with pytest.raises(ValueError, match=r"\[\.\.\., n, d\]"):
        whitening.whiten(np.zeros([4], np.float32))


def test_layer_training_whitens_batch_and_inference_uses_running_stats():
    layer = whitening.Whitening(momentum=0.0)
    x = correlated([256, 8], seed=8)
    z = layer(x, training=True).numpy()
    np.testing.assert_allclose(covariance(z), np.eye(8), atol=1e-3)
    np.testing.assert_allclose(layer.running_mean.numpy(), x.mean(0), rtol=1e-4, atol=1e-3)
    # With momentum 0 the running stats are the batch's: inference matches training output.
    np.testing.assert_allclose(layer(x, training=False).numpy(), z, atol=1e-3)
    one = layer(x[:1], training=False).numpy()  # a single example works at inference
    np.testing.assert_allclose(one, z[:1], atol=1e-3)


def test_layer_config_round_trip():
    layer = whitening.Whitening(eps=0.1, momentum=0.9, track_running_stats=False)
    clone = whitening.Whitening.from_config(layer.get_config())
    assert (clone.eps, clone.momentum, clone.track_running_stats) == (0.1, 0.9, False)
    with pytest.raises(ValueError, match="momentum"):
        whitening.Whitening(momentum=2.0)
