"""Tests of wmse_tf.methods.byol: the tau schedule, the EMA target update, no gradient into the target."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.reference import numpy_normalized_mse
from wmse_tf.core import encoders
from wmse_tf.methods import byol


def mlp_encoder(dim=16, width=32, name="mlp"):
    inputs = keras.Input((dim,))
    x = keras.layers.Dense(width)(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.ReLU()(x), name=name)


def make_model(total_steps=10, tau_base=0.5, seed=0):
    keras.utils.set_random_seed(seed)
    return byol.BYOLModel(mlp_encoder(), encoders.projector(8, 32), byol.predictor_head(8, 32),
                          total_steps=total_steps, tau_base=tau_base, seed=seed)


def views_dataset(num_views=2, n=32, dim=16, steps=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=[n, dim]).astype(np.float32)
    views = tuple(x + 0.1 * rng.normal(size=x.shape).astype(np.float32) for _ in range(num_views))
    return tf.data.Dataset.from_tensors((views, np.zeros(n, np.int64))).repeat(steps)


def snapshot(variables):
    return [v.numpy().copy() for v in variables]


def test_tau_schedule():
    assert byol.target_tau(0, 100, 0.99) == pytest.approx(0.99)
    assert byol.target_tau(50, 100, 0.99) == pytest.approx(0.995)
    assert byol.target_tau(100, 100, 0.99) == pytest.approx(1.0)
    assert byol.target_tau(1000, 100, 0.99) == pytest.approx(1.0)  # clipped
    k = 30
    expected = 1 - (1 - 0.99) * (math.cos(math.pi * k / 100) + 1) / 2
    assert byol.target_tau(tf.constant(k), 100, 0.99).numpy() == pytest.approx(expected, rel=1e-6)


def test_byol_loss_matches_numpy():
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=[3, 16, 4]), rng.normal(size=[3, 16, 4])
    ref = np.mean([numpy_normalized_mse(p[i], t[j]) + numpy_normalized_mse(p[j], t[i])
                   for i, j in itertools.combinations(range(3), 2)])
    np.testing.assert_allclose(byol.byol_loss(p, t).numpy(), ref, rtol=1e-10)
    np.testing.assert_allclose(byol.byol_loss(p.astype(np.float32), t.astype(np.float32)).numpy(), ref, rtol=1e-5)


def test_target_is_a_frozen_copy():
    model = make_model()
    trainable = {id(v) for v in model.trainable_variables}
    for t, o in model.target_pairs():
        assert not t.trainable and id(t) not in trainable
        np.testing.assert_array_equal(t.numpy(), o.numpy())
    assert all(id(v) in trainable for v in model.predictor.trainable_variables)
    bns = [l for l in model.target_encoder.layers + model.target_projector.layers
           if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(isinstance(l, byol.BatchStatsNormalization) for l in bns)


def test_no_gradient_into_target():
    model = make_model()
    views = next(iter(views_dataset()))[0]
    target_vars = [t for t, _ in model.target_pairs()]
    with tf.GradientTape(persistent=True) as tape:
        loss, _ = model.compute_objective(views, training=True)
    assert all(g is None for g in tape.gradient(loss, target_vars))
    online_grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in online_grads)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_target_update_is_the_ema_of_online(jit_compile):
    total_steps, tau_base = 10, 0.5
    model = make_model(total_steps, tau_base)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    pairs = model.target_pairs()
    for step in (1, 2):
        target_before = snapshot(t for t, _ in pairs)
        online_before = snapshot(o for _, o in pairs)
        history = model.fit(views_dataset(seed=step), epochs=1, verbose=0, shuffle=False)
        tau = byol.target_tau(step, total_steps, tau_base)
        changed = 0
        for (t, o), t0, o0 in zip(pairs, target_before, online_before):
            np.testing.assert_allclose(t.numpy(), tau * t0 + (1 - tau) * o.numpy(), rtol=1e-5, atol=1e-6)
            changed += not np.allclose(o.numpy(), o0)
        assert changed > 0  # the online weights moved, so the check is not vacuous
        assert history.history["byol_tau"][-1] == pytest.approx(tau, rel=1e-6)
        assert history.history["step_ok"][-1] == 1.0


def test_frozen_batchnorm_uses_batch_statistics():
    layer = byol.BatchStatsNormalization()
    layer.build((None, 3))
    layer.trainable = False
    x = np.random.default_rng(2).normal(3.0, 2.0, size=[64, 3]).astype(np.float32)
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), 1.0, atol=1e-2)
    np.testing.assert_array_equal(layer.moving_mean.numpy(), 0.0)  # untouched
    np.testing.assert_allclose(layer(x, training=False).numpy(), x / np.sqrt(1 + 1e-3), rtol=1e-5)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="total_steps"):
        byol.BYOLModel(mlp_encoder(), encoders.projector(8, 32))
    with pytest.raises(ValueError, match="tau_base"):
        byol.BYOLModel(mlp_encoder(), encoders.projector(8, 32), total_steps=5, tau_base=1.5)
    with pytest.raises(ValueError, match="target"):
        byol.BYOLLoss()(tf.zeros([2, 4, 3]))


def test_target_update_under_mirrored_strategy(two_cpus):
    """2 logical CPU devices (split by tests/conftest.py before TF starts)."""
    with two_cpus.scope():
        model = make_model(total_steps=10, tau_base=0.5)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
    pairs = model.target_pairs()

    def per_replica(v):
        return [r.numpy() for r in v.value.values]

    for step in (1, 2):
        t0 = [per_replica(t) for t, _ in pairs]
        o0 = [per_replica(o) for _, o in pairs]
        model.fit(views_dataset(n=32, seed=step), epochs=1, verbose=0, shuffle=False)
        tau = byol.target_tau(step, 10, 0.5)
        changed = 0
        for (t, o), before, online_before in zip(pairs, t0, o0):
            target, online = per_replica(t), per_replica(o)
            assert len(target) == 2 and len(online) == 2
            if o.trainable:  # weights: identical on every replica
                np.testing.assert_array_equal(target[0], target[1])
                np.testing.assert_array_equal(online[0], online[1])
            # BN moving statistics are per replica (Keras); each target copy follows its replica.
            for r in range(2):
                np.testing.assert_allclose(target[r], tau * before[r] + (1 - tau) * online[r], rtol=1e-5, atol=1e-6)
            changed += not np.allclose(online[0], online_before[0])
        assert changed > 0  # the online weights moved, so the EMA check is not vacuous


def test_views_of_two_sizes_reach_online_and_target_per_size():
    """Multi-crop: each size is one call of the online and of the target network; the loss is the
    BYOL loss over all 2 + 2 views."""
    keras.utils.set_random_seed(0)
    enc = encoders.resnet(10, width=4, input_shape=(None, None, 3))
    m = byol.BYOLModel(enc, encoders.projector(8, 16), byol.predictor_head(8, 16), total_steps=10, tau_base=0.5)
    rng = np.random.default_rng(0)
    full = tuple(tf.constant(rng.uniform(size=(16, 8, 8, 3)), tf.float32) for _ in range(2))
    views = full + tuple(tf.image.resize(v, [4, 4]) for v in full)
    loss, _ = m.compute_objective(views, training=False)
    z = [m.projector(enc(v, training=False), training=False) for v in views]
    p = [m.predictor(v, training=False) for v in z]
    t = [m.target_projector(m.target_encoder(v, training=False), training=False) for v in views]
    nmse = lambda i, j: numpy_normalized_mse(p[i].numpy(), t[j].numpy())  # noqa: E731
    want = np.mean([nmse(i, j) + nmse(j, i) for i, j in itertools.combinations(range(4), 2)])
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-4)
