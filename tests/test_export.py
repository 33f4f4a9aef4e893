"""Tests of wmse_tf.export.saved_model and wmse_tf.export.serving: SavedModel round trip, signatures, fine-tuning."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wmse_tf.export import saved_model as export, serving


@pytest.fixture(scope="module")
def exported(tiny_export):
    return tiny_export  # (path, encoder, reloaded): exported once per session (tests/conftest.py)


def test_layout_card_and_hashes(exported):
    path, encoder, _ = exported
    assert os.path.basename(path) == "1" and os.path.basename(os.path.dirname(path)) == "tiny"
    assert not [d for d in os.listdir(os.path.dirname(path)) if d.startswith(".")]  # no temp dirs left
    card = export.read_card(path)
    assert card["version"] == 1 and card["metrics"] == {"knn": 0.5}
    assert card["input"]["image_size"] == helpers.SIZE and card["input"]["mean"] == list(helpers.SPEC.mean)
    assert card["encoder"]["num_features"] == encoder.output.shape[-1]
    assert card["license"].startswith("Apache-2.0")  # the weights' licence, as LICENSE
    assert "saved_model.pb" in card["files"] and export.CARD_NAME not in card["files"]
    assert export.verify_hashes(path) == []


def test_features_equal_keras_encoder(exported):
    _, encoder, loaded = exported
    x = helpers.images01(5)
    want = encoder(helpers.normalized(x), training=False).numpy()
    sig = loaded.signatures
    np.testing.assert_allclose(loaded(x).numpy(), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sig["serving_default"](images=tf.constant(x))["feature_vector"], want, rtol=1e-5, atol=1e-5)
    u8 = np.round(x * 255).astype(np.uint8)
    want_u8 = encoder(helpers.normalized(u8 / np.float32(255)), training=False).numpy()
    np.testing.assert_allclose(sig["serving_uint8"](images=tf.constant(u8))["feature_vector"], want_u8, rtol=1e-5, atol=1e-5)
    pngs = tf.constant([tf.io.encode_png(im).numpy() for im in u8])
    np.testing.assert_allclose(sig["serving_bytes"](image_bytes=pngs)["feature_vector"], want_u8, rtol=1e-5, atol=1e-5)


def test_other_sizes_are_resized_in_graph(exported):
    _, encoder, loaded = exported
    x = helpers.images01(2, size=helpers.SIZE)
    big = tf.image.resize(x, [40, 56], method="bicubic").numpy().clip(0, 1)
    out = loaded.signatures["serving_default"](images=tf.constant(big))["feature_vector"]
    assert out.shape == (2, encoder.output.shape[-1])
    resized = serving.to_model_size(tf.constant(big), helpers.SPEC)
    assert resized.shape == (2, helpers.SIZE, helpers.SIZE, 3)
    np.testing.assert_array_equal(serving.to_model_size(tf.constant(x), helpers.SPEC), x)  # identity at S x S


@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (16, 16, 3), (2, 16, 16, 3, 1)])
def test_wrong_input_fails_clearly(exported, shape):
    _, _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must have shape \[batch, height, width, 3\]"):
        loaded.signatures["serving_default"](images=tf.zeros(shape))
    with pytest.raises(ValueError, match="images must have shape"):
        serving.check_images(np.zeros(shape, np.float32))


def test_check_images_dtype_and_range():
    assert serving.check_images(np.zeros((1, 4, 4, 3))).dtype == np.float32
    with pytest.raises(ValueError, match="dtype"):
        serving.check_images(np.zeros((1, 4, 4, 3), np.int32))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        serving.check_images(np.full((1, 4, 4, 3), 255.0, np.float32))


def test_saved_model_cli_lists_signatures(exported):
    path = exported[0]
    cli = shutil.which("saved_model_cli") or os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if not os.path.exists(cli):
        pytest.skip("saved_model_cli not installed")
    out = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True,
                         env=helpers.python_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in serving.SIGNATURES:
        assert f"signature_def['{name}']" in out.stdout
    assert "feature_vector" in out.stdout and "image_bytes" in out.stdout


def test_fine_tuning_through_reloaded_model(exported):
    loaded = helpers.reload(exported[0])  # a fresh copy: the module's one stays untouched
    assert len(loaded.trainable_variables) > 0 and list(loaded.regularization_losses) == []
    x = helpers.images01(8, seed=1)
    before = [v.numpy().copy() for v in loaded.trainable_variables]
    moving_before = [v.numpy().copy() for v in loaded.variables if not v.trainable]
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(loaded(x, training=True) - 1.0))
    grads = tape.gradient(loss, loaded.trainable_variables)
    assert all(g is not None for g in grads)
    opt.apply(grads, loaded.trainable_variables)
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, loaded.trainable_variables)]
    assert sum(changed) > len(changed) // 2
    moving = [v for v in loaded.variables if not v.trainable]
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(moving_before, moving))  # BN stats updated


def test_keras3_tfsm_layer(exported):
    path, encoder, _ = exported
    x = helpers.images01(3)
    want = encoder(helpers.normalized(x), training=False).numpy()
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    np.testing.assert_allclose(layer(x)["feature_vector"], want, rtol=1e-5, atol=1e-5)
    tuned = keras.layers.TFSMLayer(path, call_endpoint="serve", call_training_endpoint="serve_training")
    assert len(tuned.trainable_weights) == len(encoder.trainable_weights)
    head = keras.Sequential([keras.Input((helpers.SIZE, helpers.SIZE, 3)), tuned, keras.layers.Dense(3)])
    assert head(x).shape == (3, 3)


def test_versions_and_atomic_failure(exported, tmp_path, monkeypatch):
    path, encoder, _ = exported
    first = str(tmp_path / "m" / "1")
    shutil.copytree(path, first)  # version 1, as the session's export wrote it (tests/conftest.py)
    with pytest.raises(FileExistsError, match="overwrite"):
        export.export_encoder(encoder, str(tmp_path), "m", 1, spec=helpers.SPEC)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_encoder(encoder, str(tmp_path), "m", spec=helpers.SPEC)
    assert sorted(os.listdir(tmp_path / "m")) == ["1"]  # no version 2, no temp dir left
    assert export.latest_version_dir(str(tmp_path / "m")) == first
    assert export.next_version(str(tmp_path / "m")) == 2


def test_bad_arguments(exported, tmp_path):
    encoder = exported[1]
    with pytest.raises(ValueError, match="dataset"):
        export.export_encoder(encoder, str(tmp_path), "m")
    with pytest.raises(ValueError, match="spec.image_size"):
        export.export_encoder(encoder, str(tmp_path), "m", spec=serving.InputSpec(32, (0.5,) * 3, (0.2,) * 3))
    with pytest.raises(ValueError, match="resize"):
        serving.InputSpec(32, (0.5,) * 3, (0.2,) * 3, resize=16)
    assert not os.path.exists(tmp_path / "m" / "1")
