"""Tests of wmse_tf/data/eval_transform.py: PIL parity, pass-through, dynamic sizes, and, per recipe
that resizes, the features served from raw images equal the features evaluation computes."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests import helpers
from wmse_tf.data import augment, datasets as data, eval_transform, folders as image_folder
from wmse_tf.evaluation import evaluator as eval_lib
from wmse_tf.export import saved_model as export


def _photo(h, w, seed=0):
    """Smooth colours plus pixel noise, uint8 [h, w, 3] (a stand-in for a photo)."""
    rng = np.random.default_rng(seed)
    low = tf.image.resize(rng.uniform(0, 255, (1, 6, 6, 3)).astype(np.float32), [h, w], "bicubic")
    return np.clip(low.numpy()[0] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _pil_eval(image, size, resize):
    """torchvision Resize(resize, bicubic) + CenterCrop(size) on a PIL image, as uint8."""
    h, w = image.shape[:2]
    short = min(h, w)
    new_h, new_w = [resize if d == short else int(resize * d / short) for d in (h, w)]
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    out = Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC)
    return np.asarray(out.crop((left, top, left + size, top + size)), np.float32)


@pytest.mark.parametrize("h,w,size,resize", [
    (96, 96, 64, 70),      # STL-10
    (500, 375, 224, 256),  # ImageNet-100 photos
    (375, 500, 224, 256),
    (151, 100, 64, 64),    # longer side int(64 * 151 / 100) = 96, not round() = 97
    (30, 60, 10, 10),      # upscaling
])
def test_fit_matches_pil_resize_and_center_crop(h, w, size, resize):
    image = _photo(h, w, seed=h + w)
    ours = eval_transform.fit(image[None], size, resize)[0].numpy() * 255
    np.testing.assert_allclose(ours, np.round(ours), atol=1e-3)  # 8-bit levels
    err = np.abs(ours - _pil_eval(image, size, resize))
    assert err.max() <= 2.0 and err.mean() < 0.3, (err.max(), err.mean())  # PIL rounds between passes


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist", "tiny_imagenet"])
def test_images_at_model_size_pass_through_normalization_only(name):
    """No-resize recipes: bit for bit the normalization of the pixels, eagerly and in tf.data."""
    cfg = augment.recipe(name)
    assert cfg.eval_resize is None
    images = np.stack([_photo(cfg.image_size, cfg.image_size, s) for s in range(3)])
    mean, std = np.float32(cfg.mean), np.float32(cfg.std)
    want = (images.astype(np.float32) / np.float32(255) - mean) / std
    np.testing.assert_array_equal(eval_transform.apply(images, cfg.image_size, cfg.mean, cfg.std), want)
    # In a tf.data map, equal to the normalization alone (the previous code) in the same map.
    ds = tf.data.Dataset.from_tensors(images)
    ours = next(iter(ds.map(lambda x: eval_transform.apply(x, cfg.image_size, cfg.mean, cfg.std))))
    only = next(iter(ds.map(lambda x: (tf.cast(x, tf.float32) / 255.0 - mean) / std)))
    np.testing.assert_array_equal(ours, only)


def test_shorter_side_at_resize_is_only_cropped_and_fit_is_idempotent():
    image = _photo(256, 300)
    out = eval_transform.fit(image[None], 224, 256)[0].numpy()
    # new size (256, 300): offsets round(32 / 2) = 16, round(76 / 2) = 38.
    np.testing.assert_array_equal(out, image[16:240, 38:262] / np.float32(255))
    square = eval_transform.fit(_photo(96, 96)[None], 64, 70)
    np.testing.assert_array_equal(eval_transform.fit(square, 64, 70), square)


def test_unknown_sizes_in_a_graph_and_uint8_equals_float():
    fit = tf.function(lambda x: eval_transform.fit(x, 64, 70),
                      input_signature=[tf.TensorSpec(None, tf.float32)])
    for h, w in [(96, 96), (100, 151), (64, 64)]:  # 151: longer side int(70 * 1.51) = 105
        images = np.stack([_photo(h, w, s) for s in range(2)])
        eager = eval_transform.fit(images, 64, 70).numpy()
        graph = fit(tf.reshape(images / np.float32(255), [2, h, w, 3])).numpy()
        assert graph.shape == (2, 64, 64, 3)
        # Same 8-bit levels; float rounding may tip a rare pixel to the next level.
        diff = np.abs(graph - eager)
        assert diff.max() <= 1 / 255 + 1e-6 and (diff > 1e-6).mean() < 1e-3
        np.testing.assert_array_equal(eval_transform.fit(images / np.float32(255), 64, 70), eager)


def test_folder_images_stored_then_evaluated_equal_the_transform_of_the_file():
    """ImageNet-100: stored at 256 (fit_image), then eval (crop 224) == eval of the raw photo."""
    store = tf.function(lambda x: image_folder.fit_image(x, 256),
                        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    fit = tf.function(lambda x: eval_transform.fit(x, 224, 256),
                      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    for h, w in [(500, 375), (375, 500), (256, 320)]:
        raw = _photo(h, w, seed=w)
        stored = store(raw)
        assert stored.shape == (256, 256, 3) and stored.dtype == tf.uint8
        np.testing.assert_array_equal(fit(stored[None]), fit(raw[None]))


# ------------------------------------------------- serving == evaluation, per recipe that resizes
def _save_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).save(path)


def _dataset(name, root, monkeypatch):
    """Writes raw images of the recipe's dataset (one class each); returns (split, {label: image})."""
    if name == "stl10":  # TFDS yields the raw 96 x 96 images as they are
        images = {i: _photo(96, 96, seed=i) for i in range(4)}
        real_load = data.load

        def load(dataset, split, data_dir=None):
            if dataset != "stl10":
                return real_load(dataset, split, data_dir)
            return tf.data.Dataset.from_tensor_slices(
                (np.stack(list(images.values())), np.array(list(images), np.int64)))

        monkeypatch.setattr(data, "load", load)
        return "test", images
    if name == "tiny_imagenet":
        images = {i: _photo(64, 64, seed=i) for i in range(3)}
        for i, image in images.items():
            _save_png(f"{root}/tiny-imagenet-200/train/n0{i}/images/n0{i}_0.png", image)
        return "train", images
    shapes = [(500, 375), (375, 500), (500, 375), (333, 500)]
    images = {i: _photo(h, w, seed=i) for i, (h, w) in enumerate(shapes)}
    for i, image in images.items():
        _save_png(f"{root}/imagenet100/val/n0{i}/{i}.png", image)
        _save_png(f"{root}/imagenet100/train/n0{i}/{i}.png", image)
    return "val", images


@pytest.mark.parametrize("name", ["stl10", "tiny_imagenet", "imagenet100"])
def test_served_features_of_raw_images_equal_evaluated_features(name, tmp_path, monkeypatch):
    cfg = augment.recipe(name)
    split, images = _dataset(name, str(tmp_path / "data"), monkeypatch)
    encoder = helpers.tiny_encoder(size=cfg.image_size, width=4)
    run_dir = helpers.write_run_dir(tmp_path / "run", encoder, name)
    path = export.export_encoder(encoder, str(tmp_path / "exports"), "m", dataset=name)
    assert export.read_card(path)["input"]["resize"] == (cfg.eval_resize or cfg.image_size)
    signatures = helpers.reload(path).signatures
    served = {}  # label -> features of the raw image through serving_uint8, _default and _bytes
    for label, image in images.items():
        u8 = signatures["serving_uint8"](images=tf.constant(image[None]))
        f32 = signatures["serving_default"](images=tf.constant(image[None] / np.float32(255)))
        png = signatures["serving_bytes"](image_bytes=tf.stack([tf.io.encode_png(image)]))
        served[label] = [out["feature_vector"][0].numpy() for out in (u8, f32, png)]
    config = eval_lib.EvalConfig(data_dir=str(tmp_path / "data"), batch_size=2, progress=False)
    for model_path in (run_dir, path):  # evaluate's checkpoint and SavedModel feature paths
        feats, labels = eval_lib.eval_split(eval_lib.open_model(model_path), name, split, config, None)
        assert sorted(labels.tolist()) == sorted(images)
        for label, want in zip(labels, feats):
            for got in served[int(label)]:
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Raw images of one size served as a batch give the same features.
    same = [i for i, im in images.items() if im.shape == images[0].shape]
    batch = signatures["serving_uint8"](images=tf.constant(np.stack([images[i] for i in same])))
    np.testing.assert_allclose(batch["feature_vector"], np.stack([served[i][0] for i in same]),
                               rtol=1e-4, atol=1e-4)
