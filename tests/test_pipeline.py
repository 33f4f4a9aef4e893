"""Tests for wmse_tf/data/pipeline.py: the (views_tuple, labels) contract with the model."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from wmse_tf.data import augment, datasets as data, pipeline

NAME = "synthetic:size=16,classes=4,train=100,test=30"
CFG = augment.recipe(NAME)
IDENTITY = dataclasses.replace(CFG, jitter_p=0.0, grayscale_p=0.0, flip_p=0.0,
                               crop_scale_min=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0)


def _batches(ds):
    return [(tuple(v.numpy() for v in views), labels.numpy()) for views, labels in ds]


def test_element_structure_and_fixed_batches():
    ds = pipeline.ssl_dataset(NAME, "ssl", 32, 3, CFG, seed=0)
    views_spec, label_spec = ds.element_spec
    assert isinstance(views_spec, tuple) and len(views_spec) == 3
    for spec in views_spec:
        assert spec.shape == (32, 16, 16, 3) and spec.dtype == tf.float32
    assert label_spec.shape == (32,) and label_spec.dtype == tf.int64
    batches = _batches(ds)
    assert len(batches) == 100 // 32  # drop_remainder: fixed batch for whitening.
    assert not np.allclose(batches[0][0][0], batches[0][0][1])


def test_labels_stay_with_their_images():
    images, labels = (np.stack(t) for t in zip(*data.load(NAME, "train").as_numpy_iterator()))
    by_image = {img.tobytes(): y for img, y in zip(images, labels)}
    ds = pipeline.ssl_dataset(NAME, "train", 25, 2, IDENTITY, seed=1, shuffle_buffer=100)
    seen = []
    for views, batch_labels in _batches(ds):
        np.testing.assert_allclose(views[0], views[1], atol=1e-5)
        raw = np.round((views[0] * np.array(CFG.std) + np.array(CFG.mean)) * 255).astype(np.uint8)
        for img, y in zip(raw, batch_labels):
            assert by_image[img.tobytes()] == y
            seen.append(img.tobytes())
    assert len(set(seen)) == 100  # every image once per epoch.
    assert [by_image[s] for s in seen[:20]] != list(labels[:20])  # shuffled.


def test_seed_reproduces_and_epochs_differ():
    make = lambda seed: pipeline.ssl_dataset(NAME, "ssl", 20, 2, CFG, seed=seed)
    ds = make(5)
    first, second = _batches(ds), _batches(ds)
    again = _batches(make(5))
    other = _batches(make(6))
    for (va, la), (vb, lb) in zip(first, again):
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(va[0], vb[0])
    assert not np.allclose(first[0][0][0], second[0][0][0])  # new epoch, new views.
    assert not np.allclose(first[0][0][0], other[0][0][0])


def test_repeat_and_input_context_sharding():
    ds = pipeline.ssl_dataset(NAME, "ssl", 20, 2, CFG, seed=0, repeat=True)
    assert len(list(ds.take(12))) == 12  # beyond one epoch of 5 batches.
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    ds = pipeline.ssl_dataset(NAME, "ssl", 20, 2, CFG, seed=0, input_context=context)
    batches = _batches(ds)
    assert ds.element_spec[1].shape == (10,)  # per-replica batch.
    assert len(batches) == 50 // 10  # half of the 100 images.
    with pytest.raises(ValueError):
        pipeline.ssl_dataset(NAME, "ssl", 21, 2, CFG, seed=0, input_context=context)
    with pytest.raises(ValueError, match="num_views"):
        pipeline.ssl_dataset(NAME, "ssl", 20, 1, CFG, seed=0)


def test_distribute_datasets_from_function():
    strategy = tf.distribute.get_strategy()
    ds = strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.ssl_dataset(NAME, "ssl", 20, 2, CFG, seed=0, input_context=ctx))
    views, labels = next(iter(ds))
    assert len(views) == 2 and labels.shape == (20,)


def test_eval_dataset_is_deterministic_and_keeps_remainder():
    ds = pipeline.eval_dataset(NAME, "test", 8)
    batches = _batches(ds)
    assert [len(y) for _, y in batches] == [8, 8, 8, 6]
    images, labels = (np.stack(t) for t in zip(*data.load(NAME, "test").as_numpy_iterator()))
    got = np.concatenate([b[0] for b in batches])
    expected = (images / 255.0 - np.array(CFG.mean)) / np.array(CFG.std)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    bigger = pipeline.eval_dataset(NAME, "test", 8, image_size=24)
    assert bigger.element_spec[0].shape[1:] == (24, 24, 3)
