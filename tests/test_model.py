"""Tests of wmse_tf.core.model.SSLModel: fit, jit vs eager, NaN guard, MirroredStrategy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wmse_tf.core import archs, encoders, model, objectives


def tiny_model(seed=0, emb=8, w_size=32, objective=None):
    keras.utils.set_random_seed(seed)
    enc = encoders.resnet(10, width=4, input_shape=(8, 8, 3))
    return model.SSLModel(enc, encoders.projector(emb, hidden=32),
                          objective or objectives.WMSE(w_size=w_size), seed=seed)


def toy_views(n=64, num_views=2, seed=0, noise=0.1):
    """Distinct random images with small per-view noise: each image is its own class."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(size=(n, 8, 8, 3)).astype("float32")
    views = tuple(base + noise * rng.normal(size=base.shape).astype("float32") for _ in range(num_views))
    return views, np.arange(n)


def test_fit_lowers_the_loss():
    helpers.skip_if_onednn_wrong(archs.convolutions("resnet10", "cifar", 4, 8))  # tiny_model's encoder
    views, labels = toy_views(256, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((views, labels)).batch(64, drop_remainder=True)
    m = tiny_model()
    m.compile(optimizer=keras.optimizers.Adam(3e-3))
    before = m.evaluate(ds, verbose=0, return_dict=True)["loss"]
    history = m.fit(ds.repeat(8), epochs=1, verbose=0).history
    after = m.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert history["whiten_ok"][-1] == 1.0 and history["step_ok"][-1] == 1.0
    assert after < before - 0.2, (before, after)


def test_compile_builds_the_optimizer_so_fit_traces_its_step_once(monkeypatch):
    """Keras builds an unbuilt optimizer inside the first traced step, and a tf.function that
    creates variables is traced twice: SSLModel.compile builds it first (half the tracing)."""
    traced = []
    real = model.SSLModel.train_step
    monkeypatch.setattr(model.SSLModel, "train_step", lambda self, data: traced.append(1) or real(self, data))
    views, labels = toy_views(64)
    m = tiny_model()
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert m.optimizer.built and len(m.optimizer.variables) > len(m.trainable_variables)
    m.fit(tf.data.Dataset.from_tensor_slices((views, labels)).batch(32, drop_remainder=True), epochs=1, verbose=0)
    assert len(traced) == 1


def test_accepts_stacked_views_and_four_views():
    views, labels = toy_views(64, num_views=4)
    m = tiny_model()
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    out = m.train_on_batch((np.stack(views), labels), return_dict=True)
    assert np.isfinite(out["loss"])
    with pytest.raises(ValueError, match="at least 2 views"):
        m.compute_objective((views[0],), training=False)


def test_jit_compiled_step_equals_eager_step():
    helpers.skip_if_onednn_wrong(archs.convolutions("resnet10", "cifar", 4, 8))  # tiny_model's encoder
    views, labels = toy_views(64, seed=2)
    init, results = None, []
    for kwargs in ({"run_eagerly": True}, {"jit_compile": True}):
        m = tiny_model(seed=3)
        init = init or m.get_weights()
        m.set_weights(init)
        m.compile(optimizer=keras.optimizers.SGD(0.1), **kwargs)
        out = m.train_on_batch((views, labels), return_dict=True)
        results.append((out["loss"], [w.numpy() for w in m.trainable_weights]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-4)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_nan_loss_never_reaches_the_weights():
    views, labels = toy_views(64)
    views = (views[0], np.full_like(views[1], np.nan))
    m = tiny_model()
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    out = m.train_on_batch((views, labels), return_dict=True)
    assert not np.isfinite(out["loss"]) and out["step_ok"] == 0.0
    assert all(np.isfinite(w.numpy()).all() for w in m.weights)


def test_mixed_bfloat16_step_whitens_in_float32():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    try:
        views, labels = toy_views(64)
        m = tiny_model()
        m.compile(optimizer=keras.optimizers.Adam(1e-3))
        out = m.train_on_batch((views, labels), return_dict=True)
        z = m.embed_views(tf.stack(views), training=False)
        assert z.dtype == tf.float32 and np.isfinite(out["loss"]) and out["whiten_ok"] == 1.0
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("across", [False, True])
def test_mirrored_strategy_on_two_logical_cpus(two_cpus, across):
    # w_size 32 with a per-replica batch of 64: local whitening works; across gathers 128.
    views, labels = toy_views(256, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((views, labels)).batch(128, drop_remainder=True)
    with two_cpus.scope():
        m = tiny_model()
        m.whiten_across_replicas = across
        m.compile(optimizer=keras.optimizers.Adam(3e-3))
    assert two_cpus.num_replicas_in_sync == 2
    means = []  # Keras' running mean of the epoch's loss after each step (no test step to trace)
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: means.append(float(logs["loss"])))
    history = m.fit(ds.repeat(16), epochs=1, verbose=0, callbacks=[record]).history
    losses = np.diff(np.arange(1, len(means) + 1) * np.array(means), prepend=0.0)  # each step's own loss
    assert len(losses) == 32 and history["whiten_ok"][-1] == 1.0
    # The two batches at the start and again after 30 updates (measured: 1.3 -> 0.07-0.08)
    assert losses[-2:].mean() < 0.5 * losses[:2].mean(), losses


def _bn_twins(seed=0):
    """Two identical SSLModels (encoder with BatchNorm), BN per view and BN over all views."""
    models = []
    for per_view in (True, False):
        m = tiny_model(seed=seed)
        m.bn_per_view = per_view
        models.append(m)
    models[1].set_weights(models[0].get_weights())
    return models


def test_bn_per_view_normalizes_each_view_with_its_own_batch_statistics():
    views, _ = toy_views(64, num_views=3, seed=4)
    views = (views[0], views[1] + 1.0, 2.0 * views[2])  # views whose batch statistics differ
    per_view, all_views = _bn_twins()
    stacked = tf.stack(views)
    z_per = per_view.embed_views(stacked, training=True).numpy()
    z_all = all_views.embed_views(stacked, training=True).numpy()
    # Expected: the encoder on each view's batch alone (reference), or on all V*B images at once;
    # the projector (its own BatchNorm) once on the concatenated features in both modes.
    enc, proj = keras.models.clone_model(per_view.encoder), keras.models.clone_model(per_view.projector)
    enc.set_weights(per_view.encoder.get_weights())
    proj.set_weights(per_view.projector.get_weights())
    feats = tf.concat([enc(v, training=True) for v in views], 0)
    np.testing.assert_allclose(z_per.reshape(-1, z_per.shape[-1]), proj(feats, training=True).numpy(),
                               rtol=1e-4, atol=1e-4)
    feats_all = enc(tf.concat(views, 0), training=True)
    np.testing.assert_allclose(z_all.reshape(-1, z_all.shape[-1]), proj(feats_all, training=True).numpy(),
                               rtol=1e-4, atol=1e-4)
    assert np.abs(z_per - z_all).max() > 1e-2  # the two modes really differ on these views


def test_bn_per_view_moving_statistics_follow_each_view_in_turn():
    views, labels = toy_views(64, num_views=2, seed=5)
    views = (views[0], 3.0 * views[1] - 1.0)
    per_view, all_views = _bn_twins()
    first_bn = next(l for l in per_view.encoder.layers if isinstance(l, keras.layers.BatchNormalization))
    mom, mean0 = first_bn.momentum, first_bn.moving_mean.numpy()
    conv = per_view.encoder.layers[per_view.encoder.layers.index(first_bn) - 1]
    stem = keras.Model(per_view.encoder.input, conv.output)  # the activations this BatchNorm sees
    m1, m2 = (stem(v).numpy().mean(axis=(0, 1, 2)) for v in views)
    m_all = stem(np.concatenate(views)).numpy().mean(axis=(0, 1, 2))
    for m in (per_view, all_views):
        m.compile(optimizer=keras.optimizers.SGD(0.0))  # statistics only: weights stay
        m.train_on_batch((views, labels))
    per_bn, all_bn = (next(l for l in m.encoder.layers if isinstance(l, keras.layers.BatchNormalization))
                      for m in (per_view, all_views))
    expected_per = mom * (mom * mean0 + (1 - mom) * m1) + (1 - mom) * m2  # two updates, one per view
    expected_all = mom * mean0 + (1 - mom) * m_all  # one update over all views
    np.testing.assert_allclose(per_bn.moving_mean.numpy(), expected_per, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(all_bn.moving_mean.numpy(), expected_all, rtol=1e-4, atol=1e-5)
    assert np.abs(expected_per - expected_all).max() > 1e-3


def test_views_of_two_sizes_take_one_encoder_call_per_size():
    """Multi-crop: the full-size views, then small ones; each size is one encoder call (its own
    BatchNorm statistics) and the objective sees all V = 2 + 2 views."""
    keras.utils.set_random_seed(0)
    enc = encoders.resnet(10, width=4, input_shape=(None, None, 3))
    seen = []
    m = model.SSLModel(enc, encoders.projector(8, hidden=32),
                       lambda z, seed=None: (seen.append(z.shape) or objectives.wmse(z, 32), {}))
    full, _ = toy_views(64, num_views=2, seed=6)
    small = tuple(tf.image.resize(v, [4, 4]) for v in full)
    views = full + small
    m.compute_objective(views, training=True)
    assert seen == [tf.TensorShape([4, 64, 8])]
    groups = model.view_groups(views)
    assert [tuple(g.shape) for g in groups] == [(2, 64, 8, 8, 3), (2, 64, 4, 4, 3)]
    z = tf.concat([m.embed_views(g, training=False) for g in groups], 0)
    for i, v in enumerate(views):  # view i's embedding: the encoder on that view alone (inference BN)
        np.testing.assert_allclose(z[i], m.projector(enc(v, training=False), training=False), rtol=1e-4, atol=1e-4)
    m.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert np.isfinite(m.train_on_batch((views, np.arange(64)), return_dict=True)["loss"])
