"""Tests of wmse_tf.core.batchnorm.FusedBatchNorm against Keras' BatchNormalization (the math it replaces)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.core import batchnorm, encoders


def _pair(shape, dtype="float32"):
    """A Keras BN and a FusedBatchNorm with the same random gamma/beta, built for `shape`."""
    layers = [cls(momentum=0.9, epsilon=1e-5, dtype=dtype) for cls in
              (keras.layers.BatchNormalization, batchnorm.FusedBatchNorm)]
    rng = np.random.default_rng(0)
    gamma, beta = rng.uniform(0.5, 1.5, shape[-1]), rng.normal(size=shape[-1])
    for layer in layers:
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layers


def test_training_output_gradients_and_moving_stats_match_keras():
    x = tf.constant(np.random.default_rng(1).normal(2.0, 3.0, size=(8, 5, 5, 6)), tf.float32)
    n = 8 * 5 * 5
    outs, grads = [], []
    keras_bn, fused = _pair(x.shape)
    for layer in (keras_bn, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype=tf.float32))  # a non-trivial upstream gradient
        outs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x, layer.gamma, layer.beta])])
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-4)
    for g_fused, g_keras in zip(grads[1], grads[0]):
        np.testing.assert_allclose(g_fused, g_keras, atol=1e-3)
    np.testing.assert_allclose(fused.moving_mean.numpy(), keras_bn.moving_mean.numpy(), rtol=1e-5)
    # Unbiased batch variance in the moving average (torchvision's convention), Keras: biased.
    batch_var = x.numpy().reshape(-1, 6).var(0)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * batch_var * n / (n - 1), rtol=1e-4)
    np.testing.assert_allclose(keras_bn.moving_variance.numpy(), 0.9 + 0.1 * batch_var, rtol=1e-4)


def test_inference_and_dense_inputs_use_the_keras_path():
    keras_bn, fused = _pair((4, 3))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    for training in (True, False):
        np.testing.assert_allclose(fused(x, training=training), keras_bn(x, training=training), atol=1e-6)
    img = np.random.default_rng(3).normal(size=(2, 3, 3, 3)).astype("float32")
    keras_bn, fused = _pair(img.shape)
    np.testing.assert_allclose(fused(img, training=False), keras_bn(img, training=False), atol=1e-6)


@pytest.mark.parametrize("dtype", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_statistics(dtype):
    x = tf.constant(np.random.default_rng(4).normal(1.0, 2.0, size=(16, 4, 4, 8)), tf.float32)
    keras_bn, fused = _pair(x.shape, dtype=dtype)
    y_keras, y_fused = keras_bn(x, training=True), fused(x, training=True)
    assert y_fused.dtype == y_keras.dtype and fused.moving_mean.dtype == "float32"
    np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_keras, tf.float32), atol=0.05)


def test_encoder_with_fused_batchnorm_saves_and_loads(tmp_path):
    enc = encoders.resnet(18, stem="cifar", width=4, input_shape=(16, 16, 3))
    assert any(isinstance(layer, batchnorm.FusedBatchNorm) for layer in enc.layers)
    x = np.random.default_rng(5).random((2, 16, 16, 3)).astype("float32")
    enc(x, training=True)  # moves the statistics away from their initial values
    path = str(tmp_path / "encoder.keras")
    enc.save(path)
    np.testing.assert_allclose(encoders.load(path)(x), enc(x), atol=1e-6)


@pytest.mark.parametrize("channels,fused", [(8, False), (16, True)])
def test_bfloat16_fuses_only_channel_blocks_of_16(channels, fused):
    """bfloat16 with channels not a multiple of 16 keeps Keras' code (the fused CPU kernel is slow
    there); which path ran shows in the moving variance (unbiased only when fused)."""
    x = tf.constant(np.random.default_rng(6).normal(0.0, 2.0, size=(4, 3, 3, channels)), tf.float32)
    _, layer = _pair(x.shape, dtype="mixed_bfloat16")
    layer(x, training=True)
    n = 4 * 3 * 3
    biased = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().reshape(-1, channels).var(0)
    expected = 0.9 + 0.1 * biased * (n / (n - 1) if fused else 1.0)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=2e-3)
