"""Tests of wmse_tf.export.keras_encoder: fine-tuning an exported encoder with Keras 3 fit()."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wmse_tf.export import keras_encoder

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=1e-2),
    "sgd_momentum": lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
}


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export[:2]  # (path, encoder) of the session's export (tests/conftest.py)


def classifier(layer, size=helpers.SIZE, classes=3):
    return keras.Sequential([keras.Input((size, size, 3)), layer, keras.layers.Dense(classes)])


def fit(model, optimizer, x, epochs=1):
    y = np.arange(len(x)) % model.output_shape[-1]
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=4, epochs=epochs, verbose=0)


def values(variables):
    return [v.numpy().copy() for v in variables]


def encoder_with(layer):
    """A Keras encoder of the export's architecture holding the layer's current weights."""
    encoder = helpers.tiny_encoder(seed=1)
    for w in encoder.weights:
        w.assign(weight(layer, w.path.replace("/", "_")))
    return encoder


def weight(layer, name):
    (match,) = [w for w in layer.weights if w.name == name]
    return match


def test_weights_wrap_the_restored_graph(exported):
    path, encoder = exported
    layer = keras_encoder.load_encoder_layer(os.path.dirname(path))  # model dir: latest version
    assert layer.filepath == path
    assert len(layer.trainable_weights) == len(encoder.trainable_weights)
    assert len(layer.non_trainable_weights) == len(encoder.non_trainable_weights)
    names = [w.name for w in layer.weights]
    assert len(set(names)) == len(names) and not [n for n in names if ":" in n or "/" in n]
    # Each weight is a variable the restored graph reads, not a copy.
    assert {id(w.value) for w in layer.weights} == {id(v) for v in layer.module.variables}
    frozen = keras_encoder.EncoderLayer.from_config(dict(layer.get_config(), trainable=False))
    assert frozen.filepath == path and frozen.trainable_weights == []


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fit_with_any_optimizer(exported, name):
    path, _ = exported
    layer = keras_encoder.load_encoder_layer(path)
    x = helpers.images01(8, seed=1)
    before = values(layer.weights)
    fit(classifier(layer), OPTIMIZERS[name](), x)
    trained = [not np.allclose(b, w.numpy()) for b, w in zip(before, layer.weights) if w.trainable]
    assert sum(trained) > len(trained) // 2
    moving = [not np.allclose(b, w.numpy()) for b, w in zip(before, layer.weights) if not w.trainable]
    assert all(moving)  # every BatchNorm saw batches in training mode
    # The graph computes with the layer's (updated) weights: the Keras encoder given them agrees.
    want = encoder_with(layer)(helpers.normalized(x), training=False)
    np.testing.assert_allclose(layer(x, training=False), want, rtol=1e-5, atol=1e-5)


def test_training_mode_updates_moving_statistics(exported):
    path, encoder = exported
    layer = keras_encoder.load_encoder_layer(path)
    x = helpers.images01(4, seed=2)
    stem = keras.Model(encoder.input, encoder.get_layer("stem_conv").output)
    h = stem(helpers.normalized(x)).numpy().astype(np.float64)
    h = h.reshape(-1, h.shape[-1])  # BatchNorm moments run over batch, height and width
    mean0 = weight(layer, "stem_bn_moving_mean").numpy()
    var0 = weight(layer, "stem_bn_moving_variance").numpy()
    momentum = encoder.get_layer("stem_bn").momentum
    layer(x, training=True)
    np.testing.assert_allclose(weight(layer, "stem_bn_moving_mean"),
                               momentum * mean0 + (1 - momentum) * h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weight(layer, "stem_bn_moving_variance"),  # unbiased, as torchvision
                               momentum * var0 + (1 - momentum) * h.var(0, ddof=1), rtol=1e-5, atol=1e-6)


def test_inference_mode_and_frozen_layer_keep_statistics(exported):
    path, encoder = exported
    x = helpers.images01(8, seed=3)
    want = encoder(helpers.normalized(x), training=False).numpy()
    layer = keras_encoder.load_encoder_layer(path)
    before = values(layer.weights)
    np.testing.assert_allclose(layer(x, training=False), want, rtol=1e-5, atol=1e-5)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, layer.weights))

    frozen = keras_encoder.load_encoder_layer(path, trainable=False)
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == len(encoder.weights)
    model = classifier(frozen)
    head_before = values(model.layers[-1].weights)
    fit(model, keras.optimizers.Adam(1e-2), x)  # fit() calls the layer with training=True
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, frozen.weights))
    assert not np.allclose(head_before[0], model.layers[-1].weights[0].numpy())  # the head trained
    np.testing.assert_allclose(frozen(x, training=True), want, rtol=1e-5, atol=1e-5)


def test_tfsm_layer_still_fails_with_adam(exported):
    """Why EncoderLayer exists; when Keras fixes TFSMLayer this fails: revisit docs/evaluation.md."""
    layer = keras.layers.TFSMLayer(exported[0], call_endpoint="serve", call_training_endpoint="serve_training")
    with pytest.raises(ValueError, match="kernel:0_momentum' is not a valid scope name"):
        fit(classifier(layer), keras.optimizers.Adam(1e-2), helpers.images01(4))


def test_bad_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        keras_encoder.load_encoder_layer(str(tmp_path))
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "plain"))
    with pytest.raises(ValueError, match="expected a wmse_tf export"):
        keras_encoder.load_encoder_layer(str(tmp_path / "plain"))


def test_uint8_gradients_in_inference_mode_and_reexport(exported, tmp_path):
    path, encoder = exported
    layer = keras_encoder.load_encoder_layer(path)
    u8 = np.round(helpers.images01(4, seed=5) * 255).astype(np.uint8)
    want = encoder(helpers.normalized(u8 / np.float32(255)), training=False)
    np.testing.assert_allclose(layer(u8), want, rtol=1e-5, atol=1e-5)
    # training=False: moving statistics kept, the weights still get gradients.
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(u8, training=False)))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert all(g is not None for g in grads)
    keras.optimizers.Adam(1e-2).apply(grads, layer.trainable_weights)
    # Re-export the fine-tuned module: its signatures compute with the new weights.
    tf.saved_model.save(layer.module, str(tmp_path / "tuned"), signatures=layer.module.signatures)
    tuned = tf.saved_model.load(str(tmp_path / "tuned"))
    got = tuned.signatures["serving_uint8"](images=tf.constant(u8))["feature_vector"]
    np.testing.assert_allclose(got, layer(u8), rtol=1e-5, atol=1e-5)
    assert not np.allclose(got, want, atol=1e-4)
