"""Tests of wmse_tf.methods.contrastive: NT-Xent against a float64 numpy implementation."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_whiten
from wmse_tf import methods
from wmse_tf.methods import contrastive


def rand(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def numpy_log_softmax_ce(logits, target):
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    return np.mean(lse - logits[np.arange(len(target)), target])


def numpy_nt_xent_pair(x0, x1, tau, normalize):
    """The reference's contrastive_loss(x0, x1), float64, written out."""
    x0, x1 = np.asarray(x0, np.float64), np.asarray(x1, np.float64)
    if normalize:
        x0 = x0 / np.linalg.norm(x0, axis=1, keepdims=True)
        x1 = x1 / np.linalg.norm(x1, axis=1, keepdims=True)
    n = len(x0)
    mask = np.eye(n) * 1e9
    target = np.arange(n)
    l00, l11 = x0 @ x0.T / tau - mask, x1 @ x1.T / tau - mask
    l01, l10 = x0 @ x1.T / tau, x1 @ x0.T / tau
    return (numpy_log_softmax_ce(np.concatenate([l01, l00], 1), target)
            + numpy_log_softmax_ce(np.concatenate([l10, l11], 1), target)) / 2


def numpy_nt_xent(views, tau=0.5, normalize=True):
    pairs = itertools.combinations(range(len(views)), 2)
    return np.mean([numpy_nt_xent_pair(views[i], views[j], tau, normalize) for i, j in pairs])


@pytest.mark.parametrize("num_views,tau,normalize", [(2, 0.5, True), (3, 0.5, True), (4, 0.1, True), (2, 1.0, False)])
def test_nt_xent_matches_numpy(num_views, tau, normalize):
    views = rand([num_views, 24, 8], num_views)
    if not normalize:
        views = views * 0.3
    ref = numpy_nt_xent(views, tau, normalize)
    np.testing.assert_allclose(contrastive.nt_xent(views, tau, normalize).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(contrastive.nt_xent(views.astype(np.float64), tau, normalize).numpy(), ref, rtol=1e-10)


def test_nt_xent_bounds():
    z = rand([1, 32, 16], 1)
    perfect = np.concatenate([z, z])  # positives identical
    random = rand([2, 32, 16], 2)
    assert contrastive.nt_xent(perfect, 0.1).numpy() < contrastive.nt_xent(random, 0.1).numpy()
    # Collapsed embeddings: every logit equal -> log(2N - 1).
    same = np.ones([2, 32, 16], np.float32)
    np.testing.assert_allclose(contrastive.nt_xent(same, 0.5).numpy(), np.log(2 * 32 - 1), rtol=1e-5)


def test_objective_stats_and_registry():
    views = rand([2, 32, 8], 3)
    objective = methods.objective("contrastive", tau=0.5)
    assert isinstance(objective, contrastive.NTXent)
    loss, stats = objective(views, seed=0)
    assert set(stats) == set(objective.stat_names) == {"pos_cos", "emb_std"}
    np.testing.assert_allclose(loss.numpy(), numpy_nt_xent(views), rtol=1e-5)
    zn = views / np.linalg.norm(views, axis=-1, keepdims=True)
    np.testing.assert_allclose(stats["pos_cos"].numpy(), np.mean(np.sum(zn[0] * zn[1], -1)), rtol=1e-5)
    np.testing.assert_allclose(stats["emb_std"].numpy(), np.mean(zn.std(axis=1, ddof=0)), rtol=1e-4)


def test_whitened_contrastive_matches_numpy():
    views = rand([2, 40, 6], 4) @ rand([6, 6], 5)  # correlated dims
    objective = contrastive.NTXent(tau=0.5, whiten=True)
    loss, stats = objective(views)
    white = np.stack([numpy_whiten(v) for v in views])
    np.testing.assert_allclose(loss.numpy(), numpy_nt_xent(white, 0.5), rtol=1e-4)
    assert stats["whiten_ok"].numpy() == 1.0 and "whiten_ok" in objective.stat_names


def test_gradients_are_finite():
    views = tf.Variable(rand([2, 16, 4], 6))
    with tf.GradientTape() as tape:
        loss = contrastive.nt_xent(views, 0.5)
    grad = tape.gradient(loss, views)
    assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).sum() > 0


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="tau"):
        contrastive.NTXent(tau=0.0)
    with pytest.raises(ValueError, match="w_eps"):
        contrastive.NTXent(w_eps=1.0)
    with pytest.raises(ValueError, match="num_views"):
        contrastive.nt_xent(rand([1, 8, 4]))
    with pytest.raises(ValueError, match="exceed"):
        contrastive.NTXent(whiten=True)(rand([2, 8, 8]))
