"""Tests for wmse_tf/data/augment.py: behaviour of the views, not only their shapes."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wmse_tf.data import augment, resampling

CIFAR = augment.recipe("cifar10")
# Only the crop, with a square window of the full image: views == normalized images.
IDENTITY = dataclasses.replace(CIFAR, jitter_p=0.0, grayscale_p=0.0, flip_p=0.0,
                               crop_scale_min=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0)
GEOMETRY = dataclasses.replace(CIFAR, jitter_p=0.0, grayscale_p=0.0)


def _unnormalize(x, cfg):
    return np.asarray(x) * np.array(cfg.std) + np.array(cfg.mean)


def _natural(batch=8, size=32, seed=0):
    """Smooth coloured random images, uint8 [B, S, S, 3]."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (batch, 4, 4, 3)).astype(np.float32)
    return tf.cast(tf.image.resize(low, [size, size], "bicubic"), tf.uint8).numpy()


def _gradient(batch, size):
    """R = x / (S - 1), G = y / (S - 1), B = 0, as float [0, 1] images."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    img = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 0 * ramp[None, :]), -1)
    return np.repeat(img[None], batch, axis=0)


def test_views_keep_image_order_and_differ():
    images = np.broadcast_to(np.arange(16, dtype=np.uint8)[:, None, None, None] * 15,
                             (16, 32, 32, 3)).copy()
    views = augment.make_views(images, GEOMETRY, 3, seed=7)
    assert len(views) == 3
    for v in views:
        assert v.shape == (16, 32, 32, 3) and v.dtype == tf.float32
        per_image = _unnormalize(v, GEOMETRY).mean(axis=(1, 2, 3)) * 255 / 15
        np.testing.assert_allclose(per_image, np.arange(16), atol=1e-3)
    nat = augment.make_views(_natural(), CIFAR, 2, seed=7)
    diff = np.abs(nat[0].numpy() - nat[1].numpy()).mean(axis=(1, 2, 3))
    assert np.all(diff > 0.05), diff


def test_value_range_and_seeds():
    images = _natural(batch=32)
    a = augment.make_views(images, CIFAR, 2, seed=1)
    b = augment.make_views(images, CIFAR, 2, seed=1)
    c = augment.make_views(images, CIFAR, 2, seed=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    assert np.abs(a[0].numpy() - c[0].numpy()).mean() > 0.05
    for v in a:
        raw = _unnormalize(v, CIFAR)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
        assert raw.max() - raw.min() > 0.5  # normalization undone: back to pixel scale.


def test_identity_config_is_normalization():
    images = _natural(batch=4)
    view = augment.augment_batch(images, IDENTITY, seed=3).numpy()
    expected = (images / 255.0 - np.array(CIFAR.mean)) / np.array(CIFAR.std)
    np.testing.assert_allclose(view, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["cifar10", "stl10", "imagenet100", "fashion_mnist"])
def test_eval_transform_of_constant_image(name):
    cfg = augment.recipe(name)
    size = {"stl10": 96, "imagenet100": 256}.get(name, cfg.image_size)
    images = np.full((2, size, size, 3), 200, np.uint8)
    out = augment.eval_transform(images, cfg).numpy()
    assert out.shape == (2, cfg.image_size, cfg.image_size, 3)
    expected = (200 / 255 - np.array(cfg.mean)) / np.array(cfg.std)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape), atol=1e-4)


@pytest.mark.parametrize("kind,out", [("bicubic", 20), ("bicubic", 48), ("bilinear", 20)])
def test_resample_matrix_matches_pil(kind, out):
    image = _natural(batch=1, size=40, seed=5)[0]
    top, left, h, w = 5.0, 3.0, 30.0, 26.0
    rows = resampling.resample_matrix(40, out, [top], [h / out], kind)
    cols = resampling.resample_matrix(40, out, [left], [w / out], kind)
    ours = resampling.apply_separable(tf.constant(image[None], tf.float32), rows, cols)[0]
    method = Image.BICUBIC if kind == "bicubic" else Image.BILINEAR
    pil = Image.fromarray(image).resize((out, out), method, box=(left, top, left + w, top + h))
    err = np.abs(np.clip(ours.numpy(), 0, 255) - np.asarray(pil, np.float32))
    assert err.max() <= 2.0 and err.mean() < 0.6


def _crop_fraction(cfg, n=256, size=32):
    """Area fraction and aspect ratio of each view's crop, read off a gradient image."""
    views = augment.augment_batch(_gradient(n, size), cfg, seed=11)
    raw = _unnormalize(views, cfg)
    span_x = raw[..., 0].max(axis=(1, 2)) - raw[..., 0].min(axis=(1, 2))
    span_y = raw[..., 1].max(axis=(1, 2)) - raw[..., 1].min(axis=(1, 2))
    w = span_x * (size - 1) * cfg.image_size / (cfg.image_size - 1)
    h = span_y * (size - 1) * cfg.image_size / (cfg.image_size - 1)
    return w * h / size**2, w / h


def test_crop_scale_and_ratio_range_honoured():
    cfg = dataclasses.replace(GEOMETRY, flip_p=0.0)
    frac, ratio = _crop_fraction(cfg)
    assert frac.min() > 0.2 - 0.06 and frac.max() < 1.0 + 0.03
    assert frac.min() < 0.3 and frac.max() > 0.85  # the range is used, not one value.
    assert ratio.min() > 0.75 - 0.1 and ratio.max() < 4 / 3 + 0.12
    fixed = dataclasses.replace(cfg, crop_scale_min=0.25, crop_scale_max=0.25,
                                crop_ratio_min=1.0, crop_ratio_max=1.0)
    frac, ratio = _crop_fraction(fixed)
    np.testing.assert_allclose(frac, 0.25, atol=0.03)
    np.testing.assert_allclose(ratio, 1.0, atol=0.08)
    # Half-width crops start anywhere in the free half of the image, in both axes.
    raw = _unnormalize(augment.augment_batch(_gradient(256, 32), fixed, seed=5), fixed)
    starts = raw[..., :2].min(axis=(1, 2))  # [n, (x, y)]
    for start in starts.T:
        assert start.min() < 0.1 and start.max() > 0.4 and 0.15 < start.mean() < 0.35
    assert abs(np.corrcoef(starts.T)[0, 1]) < 0.3  # independent draws for x and y.


def test_crop_falls_back_to_center_crop_like_torchvision():
    cfg = dataclasses.replace(GEOMETRY, crop_scale_min=1.0, crop_ratio_min=2.0,
                              crop_ratio_max=2.0)
    top, left, h, w = augment.random_crop_boxes(4, 32, 32, cfg, tf.constant([1, 2]))
    np.testing.assert_array_equal(w, 32)
    np.testing.assert_array_equal(h, 16)
    np.testing.assert_array_equal(top, 8)


def test_flip_and_grayscale_probabilities():
    cfg = dataclasses.replace(IDENTITY, flip_p=0.5)
    view = _unnormalize(augment.augment_batch(_gradient(400, 32), cfg, seed=4), cfg)
    flipped = view[:, 0, 0, 0] > view[:, 0, -1, 0]
    assert 0.4 < flipped.mean() < 0.6
    cfg = dataclasses.replace(IDENTITY, grayscale_p=0.3)
    view = _unnormalize(augment.augment_batch(_natural(400), cfg, seed=4), cfg)
    gray = np.abs(view[..., 0] - view[..., 1]).max(axis=(1, 2)) < 1e-4
    assert 0.22 < gray.mean() < 0.38


def test_color_jitter_brightness_and_probability():
    cfg = dataclasses.replace(IDENTITY, jitter_p=0.5, contrast=0.0, saturation=0.0, hue=0.0)
    images = np.full((400, 32, 32, 3), 100, np.uint8)
    view = _unnormalize(augment.augment_batch(images, cfg, seed=9), cfg) * 255
    factor = view.mean(axis=(1, 2, 3)) / 100
    assert factor.min() >= 0.6 - 1e-3 and factor.max() <= 1.4 + 1e-3
    changed = np.abs(factor - 1) > 1e-3
    assert 0.4 < changed.mean() < 0.6
    # Contrast, saturation and hue leave a gray constant image unchanged.
    cfg = dataclasses.replace(IDENTITY, jitter_p=1.0, brightness=0.0)
    view = _unnormalize(augment.augment_batch(images[:8], cfg, seed=9), cfg) * 255
    np.testing.assert_allclose(view, 100, atol=0.05)


def test_hue_and_saturation_change_colour_not_luma_range():
    cfg = dataclasses.replace(IDENTITY, jitter_p=1.0, brightness=0.0, contrast=0.0)
    images = _natural(64)
    view = _unnormalize(augment.augment_batch(images, cfg, seed=2), cfg)
    assert np.abs(view - images / 255.0).mean() > 0.01
    assert view.min() >= -1e-5 and view.max() <= 1 + 1e-5


def test_blur_reduces_high_frequencies():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (16, 64, 64, 3)).astype(np.uint8)
    base = dataclasses.replace(IDENTITY, image_size=64)
    sharp = augment.augment_batch(noise, base, seed=1).numpy()
    blurred = augment.augment_batch(noise, dataclasses.replace(base, blur_p=1.0,
                                                               blur_sigma_min=1.0), seed=1)
    assert np.abs(np.diff(blurred.numpy(), axis=2)).mean() < 0.5 * np.abs(
        np.diff(sharp, axis=2)).mean()
    rows = resampling.blur_matrix(64, tf.constant([0.5, 2.0]))
    np.testing.assert_allclose(tf.reduce_sum(rows, -1), 1.0, atol=1e-5)


def test_multiview_validates_arguments():
    with pytest.raises(ValueError, match="num_views"):
        augment.make_views(_natural(2), CIFAR, 1, seed=0)
    with pytest.raises(ValueError, match="num_views"):
        augment.MultiView(CIFAR, num_views=0)
    with pytest.raises(ValueError, match="crop_scale"):
        dataclasses.replace(CIFAR, crop_scale_min=0.0)
    with pytest.raises(ValueError, match="jitter_p"):
        dataclasses.replace(CIFAR, jitter_p=1.5)
    with pytest.raises(ValueError, match="images"):
        augment.augment_batch(np.zeros((2, 32, 32, 1), np.uint8), CIFAR, seed=0)
    views = augment.MultiView(CIFAR, num_views=5)(_natural(2), seed=0)
    assert len(views) == 5


def test_recipes_follow_the_paper():
    assert (CIFAR.image_size, CIFAR.crop_scale_min, CIFAR.grayscale_p) == (32, 0.2, 0.1)
    assert (CIFAR.brightness, CIFAR.hue, CIFAR.jitter_p) == (0.4, 0.1, 0.8)
    stl = augment.recipe("stl10")
    assert (stl.image_size, stl.eval_resize, stl.mean) == (64, 70, (0.43, 0.42, 0.39))
    inet = augment.recipe("imagenet100")
    assert (inet.image_size, inet.crop_scale_min, inet.blur_p, inet.grayscale_p) == (
        224, 0.08, 0.5, 0.2)
    assert augment.recipe("tiny_imagenet").image_size == 64
    assert augment.recipe("fashion_mnist").image_size == 28
    assert augment.recipe("cifar100").std == (0.2675, 0.2565, 0.2761)
    assert augment.recipe("synthetic:size=48").image_size == 48


@pytest.mark.parametrize("name", ["cifar10", "imagenet100", "fashion_mnist"])
def test_xla_and_plain_tf_give_the_same_views(name):
    cfg = dataclasses.replace(augment.recipe(name), image_size=24)
    if name == "fashion_mnist":  # with the options beyond the reference
        cfg = dataclasses.replace(cfg, affine_p=0.5, erase_p=0.5, solarize_p=0.3, local_views=2)
    images = _natural(batch=6, size=40)
    fast = augment.make_views(images, cfg, 2, seed=3, jit_compile=True)
    plain = augment.make_views(images, cfg, 2, seed=3, jit_compile=False)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-3)


def test_solarize_and_invert_match_their_pixel_math():
    images = _natural(batch=16)
    raw = images.astype(np.float32) / 255
    for field, want in (("solarize_p", np.where(raw >= 0.5, 1 - raw, raw)), ("invert_p", 1 - raw)):
        cfg = dataclasses.replace(IDENTITY, **{field: 1.0})
        view = _unnormalize(augment.make_views(images, cfg, 2, seed=3)[0], cfg)
        np.testing.assert_allclose(view, want, atol=2e-3)
        off = _unnormalize(augment.make_views(images, IDENTITY, 2, seed=3)[0], IDENTITY)
        np.testing.assert_allclose(off, raw, atol=2e-3)


def test_random_erasing_sets_one_rectangle_to_the_mean():
    cfg = dataclasses.replace(IDENTITY, erase_p=1.0, erase_scale_min=0.1, erase_scale_max=0.2)
    images = np.full((64, 32, 32, 3), 250, np.uint8)  # far from the mean: erased pixels stand out
    view = augment.make_views(images, cfg, 2, seed=5)[0].numpy()
    erased = np.all(view == 0, axis=-1)
    for mask in erased:
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
        assert 0.1 * 1024 * 0.5 <= mask.sum() <= 0.2 * 1024 * 1.5  # its area, up to rounding and clipping
    half = augment.make_views(images, dataclasses.replace(cfg, erase_p=0.5), 2, seed=5)[0].numpy()
    share = np.all(half == 0, axis=-1).any(axis=(1, 2)).mean()
    assert 0.25 < share < 0.75, share


def test_grayscale_datasets_skip_colour_only_operations():
    gray = augment.recipe("fashion_mnist")
    assert (gray.saturation, gray.hue, gray.grayscale_p) == (0.0, 0.0, 0.0)
    assert gray.brightness == CIFAR.brightness and gray.contrast == CIFAR.contrast
    images = np.repeat(_natural(batch=8, size=28)[..., :1], 3, axis=-1)
    colour = dataclasses.replace(gray, saturation=0.4, hue=0.1, grayscale_p=0.1)
    a, b = augment.make_views(images, gray, 2, seed=9), augment.make_views(images, colour, 2, seed=9)
    np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), atol=5e-3)  # the same views on gray images


def test_local_views_are_small_crops_after_unchanged_full_views():
    cfg = dataclasses.replace(GEOMETRY, local_views=3, local_crop_scale_min=0.1, local_crop_scale_max=0.2)
    images = _natural(batch=16)
    views = augment.make_views(images, cfg, 2, seed=4)
    plain = augment.make_views(images, GEOMETRY, 2, seed=4)
    assert [tuple(v.shape) for v in views] == [(16, 32, 32, 3)] * 2 + [(16, 16, 16, 3)] * 3
    for a, b in zip(views, plain):  # adding small views leaves the full ones as they were
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    local = cfg.local()
    assert (local.image_size, local.crop_scale_min, local.crop_scale_max, local.local_views) == (16, 0.1, 0.2, 0)
    top, left, h, w = augment.random_crop_boxes(4096, 32, 32, local, tf.constant([1, 2], tf.int64))
    area = (h * w).numpy() / 1024
    assert area.min() >= 0.1 * 0.85 and area.max() <= 0.2 * 1.15  # the local scale, up to rounding
    sized = dataclasses.replace(cfg, local_size=12)
    assert augment.make_views(images, sized, 2, seed=4)[-1].shape == (16, 12, 12, 3)
    with pytest.raises(ValueError, match="local_size <= image_size"):
        dataclasses.replace(cfg, local_size=64)


def test_affine_rotates_and_shears_about_the_centre():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 9, 9, 3)).astype(np.float32)

    def run(angle, shear):
        return resampling.affine(tf.constant(x), tf.constant([np.radians(angle)] * 3, tf.float32),
                                 tf.constant([np.radians(shear)] * 3, tf.float32)).numpy()

    np.testing.assert_allclose(run(0, 0), x, atol=1e-6)
    # +90 degrees: out[i, j] = in[H-1-j, i], numpy's clockwise quarter turn (y points down)
    np.testing.assert_allclose(run(90, 0), np.rot90(x, k=-1, axes=(1, 2)), atol=1e-5)
    sheared = np.zeros_like(x)  # shear 45 degrees: out[i, j] = in[i, j - (i - 4)], black outside
    for i in range(9):
        for j in range(9):
            if 0 <= j - (i - 4) < 9:
                sheared[:, i, j] = x[:, i, j - (i - 4)]
    np.testing.assert_allclose(run(0, 45), sheared, atol=1e-5)
    half = run(45, 0)  # off-grid samples: a bilinear blend, inside the input's range
    assert half.min() >= 0 and half.max() <= 1 and np.abs(half - x).mean() > 0.1


def test_affine_views_apply_it_with_its_probability_and_seeded_draws():
    images = _natural(batch=64)
    cfg = dataclasses.replace(IDENTITY, affine_p=0.5, affine_degrees=30, affine_shear=0)
    params = augment.sample_params(64, 32, 32, cfg, augment._op_seed(augment._as_seed(3), 1000))  # view 0's
    angles = np.degrees(params["angle"].numpy())
    assert 0.25 < np.mean(angles != 0) < 0.75 and np.abs(angles).max() <= 30 and not params["shear"].numpy().any()
    plain = augment.make_views(images, IDENTITY, 2, seed=3)[0].numpy()
    view = augment.make_views(images, cfg, 2, seed=3)[0].numpy()
    untouched = angles == 0
    np.testing.assert_allclose(view[untouched], plain[untouched], atol=1e-5)
    assert np.abs(view[~untouched] - plain[~untouched]).mean() > 0.05
