"""Tests of wmse_tf.core.objectives: W-MSE against its definition."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_normalized_mse, numpy_whiten
from wmse_tf.core import objectives


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def test_normalized_mse_is_2_minus_2cos():
    a, b = rand([32, 8], 1), rand([32, 8], 2)
    np.testing.assert_allclose(objectives.normalized_mse(a, b).numpy(), numpy_normalized_mse(a, b), rtol=1e-5)
    assert abs(objectives.normalized_mse(a, 3 * a).numpy()) < 1e-6
    np.testing.assert_allclose(objectives.normalized_mse(a, -a).numpy(), 4.0, rtol=1e-6)


def test_pairwise_is_mean_over_pairs():
    z = rand([4, 16, 8], 3)
    pairs = [numpy_normalized_mse(z[i], z[j]) for i, j in itertools.combinations(range(4), 2)]
    np.testing.assert_allclose(objectives.pairwise_normalized_mse(z).numpy(), np.mean(pairs), rtol=1e-5)


def numpy_wmse_fixed_groups(views, w_size):
    """W-MSE with the identity permutation, float64: groups of consecutive rows."""
    num_views, n, _ = views.shape
    z = np.stack([np.concatenate([numpy_whiten(views[v, g:g + w_size]) for g in range(0, n, w_size)])
                  for v in range(num_views)])
    pairs = [numpy_normalized_mse(z[i], z[j]) for i, j in itertools.combinations(range(num_views), 2)]
    return np.mean(pairs)


def test_wmse_with_w_size_equal_n_matches_numpy_and_ignores_seed():
    views = rand([2, 64, 8], 4)
    ref = numpy_wmse_fixed_groups(views.astype(np.float64), 64)
    for seed in (0, 1, 123):
        np.testing.assert_allclose(objectives.wmse(views, w_size=64, seed=seed).numpy(), ref, rtol=1e-4)


def test_wmse_sub_batches_depend_on_the_permutation():
    views = rand([2, 64, 4], 5)
    losses = {round(float(objectives.wmse(views, w_size=16, seed=s)), 6) for s in range(4)}
    assert len(losses) > 1


def test_wmse_matches_explicit_permuted_loop():
    views = rand([3, 48, 4], 6)
    w_size, w_iter, seed = 16, 3, 11
    perms = objectives.random_permutations(w_iter, 48, seed).numpy()
    loss = objectives.wmse(views, w_size=w_size, w_iter=w_iter, seed=seed).numpy()
    ref = np.mean([numpy_wmse_fixed_groups(views[:, p].astype(np.float64), w_size) for p in perms])
    np.testing.assert_allclose(loss, ref, rtol=1e-4)


def test_identical_views_give_zero_loss():
    v = rand([64, 8], 7)
    assert abs(objectives.wmse(np.stack([v, v, v]), w_size=32).numpy()) < 1e-5


def test_four_views_is_mean_of_six_pair_losses():
    views = rand([4, 64, 8], 8)
    four = objectives.wmse(views, w_size=64).numpy()
    pairs = [objectives.wmse(views[[i, j]], w_size=64).numpy() for i, j in itertools.combinations(range(4), 2)]
    assert len(pairs) == 6
    np.testing.assert_allclose(four, np.mean(pairs), rtol=1e-5)


def test_wmse_gradient_matches_finite_differences():
    views = tf.constant(rand([2, 12, 3], 9, np.float64))
    theoretical, numerical = tf.test.compute_gradient(lambda v: objectives.wmse(v, w_size=6, seed=3), [views])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-4, atol=1e-5)


def test_stats_report_health():
    loss, stats = objectives.wmse(rand([2, 64, 8], 10), w_size=32, return_stats=True)
    assert stats["whiten_ok"].numpy() == 1.0
    assert stats["whiten_offdiag"].numpy() < 1e-5
    assert 1.0 <= stats["whiten_cond"].numpy() < 100
    collapsed = np.repeat(rand([2, 64, 1], 11), 8, axis=-1)  # rank-1 embeddings: singular covariance
    loss, stats = objectives.wmse(collapsed, w_size=32, return_stats=True)
    assert stats["whiten_ok"].numpy() == 0.0 or stats["whiten_cond"].numpy() > 1e6
    # eps shrinkage makes the same collapsed batch well-posed.
    loss, stats = objectives.wmse(collapsed, w_size=32, eps=0.1, return_stats=True)
    assert np.isfinite(loss.numpy()) and stats["whiten_ok"].numpy() == 1.0


@pytest.mark.parametrize("shape,w_size,match", [
    ([2, 64, 8], 8, "w_size=8 must exceed the embedding size emb=8"),
    ([2, 60, 8], 32, "N=60 .* divisible by w_size=32"),
    ([1, 64, 8], 32, "num_views >= 2"),
    ([64, 8], 32, r"\[V, N, D\]"),
])
def test_bad_shapes_raise_naming_the_argument(shape, w_size, match):
    with pytest.raises(ValueError, match=match):
        objectives.wmse(np.zeros(shape, np.float32), w_size=w_size)


def test_small_w_size_warns_and_bad_w_iter_raises():
    with pytest.warns(UserWarning, match="w_size=12 < 2 \\* emb=16"):
        objectives.wmse(rand([2, 24, 8]), w_size=12)
    with pytest.raises(ValueError, match="w_iter"):
        objectives.wmse(rand([2, 32, 4]), w_size=16, w_iter=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objectives.wmse(rand([2, 32, 4]), w_size=16)


def test_jit_compiled_equals_eager():
    views = rand([4, 64, 8], 12)
    fn = tf.function(lambda v: objectives.wmse(v, w_size=32, w_iter=2, seed=5), jit_compile=True)
    np.testing.assert_allclose(fn(views).numpy(), objectives.wmse(views, w_size=32, w_iter=2, seed=5).numpy(),
                               rtol=1e-4)


def test_registry():
    obj = objectives.get("wmse", w_size=32)
    loss, stats = obj(rand([2, 64, 8]))
    assert set(stats) == set(obj.stat_names)
    with pytest.raises(ValueError, match="unknown objective"):
        objectives.get("nope")


# A fresh interpreter that imports only the registry wmse_tf.methods, then builds every method's
# objective by name.
GET_ALL = textwrap.dedent("""
    import json, sys
    import numpy as np
    from wmse_tf import methods
    before = sorted(m for m in sys.modules if m.startswith("wmse_tf.") and m != "wmse_tf.onednn")  # __init__'s
    views = np.random.default_rng(0).normal(size=(2, 64, 8)).astype("float32")
    out = {"before": before}
    for name in methods.METHODS:
        obj = methods.objective(name, **({"w_size": 32} if name == "wmse" else {}))
        kwargs = {"target": views[::-1]} if name == "byol" else {}
        loss, stats = obj(views, **kwargs)
        out[name] = [type(obj).__module__ + "." + type(obj).__name__, float(loss), sorted(stats)]
    print(json.dumps(out))
""")


def test_get_builds_every_objective_without_other_imports():
    """methods.objective works in a fresh process: no objective registers itself on import, and
    the registry imports no method module (nor TensorFlow) until one is built."""
    proc = subprocess.run([sys.executable, "-c", GET_ALL], capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == ["wmse_tf.methods", "wmse_tf.tf_log"], out["before"]  # tf_log: wmse_tf's own, no TF
    assert {name: out[name][0] for name in ("wmse", "normmse", "contrastive", "byol")} == {
        "wmse": "wmse_tf.core.objectives.WMSE", "normmse": "wmse_tf.core.objectives.NormMSE",
        "contrastive": "wmse_tf.methods.contrastive.NTXent", "byol": "wmse_tf.methods.byol.BYOLLoss"}
    for name in ("wmse", "normmse", "contrastive", "byol"):
        assert np.isfinite(out[name][1]) and out[name][2], out[name]
    assert out["normmse"][2] == ["emb_std"] and "pos_cos" in out["contrastive"][2]


def test_whitening_is_one_batched_call():
    """The whole W-MSE forward uses a single Cholesky op, whatever w_iter and V."""
    fn = tf.function(lambda v: objectives.wmse(v, w_size=16, w_iter=3))
    graph = fn.get_concrete_function(tf.TensorSpec([4, 64, 8], tf.float32)).graph
    ops = [op.type for op in graph.get_operations()]
    assert ops.count("Cholesky") == 1 and ops.count("MatrixTriangularSolve") == 1


def test_permutations_are_valid_and_identical_under_xla():
    eager = objectives.random_permutations(3, 257, seed=7).numpy()
    assert all(sorted(p) == list(range(257)) for p in eager)
    assert len({tuple(p) for p in eager}) == 3
    gen = keras.random.SeedGenerator(7)
    jit = tf.function(lambda: objectives.random_permutations(3, 257, gen), jit_compile=True)().numpy()
    np.testing.assert_array_equal(jit, eager)
    # Positions look uniform: the mean position of each element over many draws is ~ (n-1)/2.
    many = objectives.random_permutations(400, 16, seed=1).numpy()
    positions = np.argsort(many, axis=1).mean(axis=0)
    assert np.abs(positions - 7.5).max() < 1.0
