"""Multi-view augmentation for W-MSE, vectorized over the batch and seeded.

The recipe follows the reference code (htdt/self-supervised, datasets/transforms.py):
``RandomApply(ColorJitter, p) -> RandomGrayscale -> RandomResizedCrop(bicubic) ->
RandomHorizontalFlip -> Normalize``, plus a Gaussian blur for ImageNet-100, and optional
solarization, inversion, small affine transforms and random erasing (off in the paper's recipes; grayscale datasets such
as Fashion-MNIST use them, docs/recipes.md). Every op
draws per-image random parameters with ``tf.random.stateless_*`` from one seed, so a
fixed seed reproduces the same views. Crop, resize, flip and blur are linear and
separable: they are done together as two batched matmuls with per-image PIL-style
resampling matrices (bicubic with antialiasing, like torchvision on PIL images).

Example:
    >>> from wmse_tf import augment
    >>> views = augment.make_views(images_uint8, augment.recipe("cifar10"), 2, seed=0)
"""

import math
from typing import Dict

import tensorflow as tf

from wmse_tf.data import eval_transform as eval_transform_lib, resampling
from wmse_tf.data.augment_config import AugmentConfig, recipe  # noqa: F401 (re-exported)

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights.


# ------------------------------------------------------------------------ random parameters
def _uniform(seed, shape, lo, hi):
    return tf.random.stateless_uniform(shape, seed=seed, minval=lo, maxval=hi, alg="philox")


def _op_seed(seed: tf.Tensor, op: int) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, op)


def random_crop_boxes(batch, height: int, width: int, cfg: AugmentConfig, seed: tf.Tensor,
                      attempts: int = 10):
    """torchvision RandomResizedCrop.get_params, vectorized: ([B] top, left, h, w) float.

    Draws ``attempts`` candidates per image and keeps the first that fits, falling back
    to the central crop with the ratio clamped, like torchvision.
    """
    area = float(height * width)
    s = _uniform(_op_seed(seed, 0), [batch, attempts], cfg.crop_scale_min, cfg.crop_scale_max)
    log_r = _uniform(_op_seed(seed, 1), [batch, attempts], math.log(cfg.crop_ratio_min),
                     math.log(cfg.crop_ratio_max))
    r = tf.exp(log_r)
    w = tf.round(tf.sqrt(area * s * r))
    h = tf.round(tf.sqrt(area * s / r))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
    any_ok = tf.reduce_any(ok, axis=1)
    pick = lambda t: tf.gather(t, first, batch_dims=1)
    in_ratio = width / height
    if in_ratio < cfg.crop_ratio_min:
        fw, fh = float(width), float(round(width / cfg.crop_ratio_min))
    elif in_ratio > cfg.crop_ratio_max:
        fw, fh = float(round(height * cfg.crop_ratio_max)), float(height)
    else:
        fw, fh = float(width), float(height)
    h = tf.where(any_ok, pick(h), fh)
    w = tf.where(any_ok, pick(w), fw)
    u = _uniform(_op_seed(seed, 2), [batch, 2], 0.0, 1.0)
    top = tf.where(any_ok, tf.floor(u[:, 0] * (height - h + 1)), tf.round((height - h) / 2))
    left = tf.where(any_ok, tf.floor(u[:, 1] * (width - w + 1)), tf.round((width - w) / 2))
    return top, left, h, w


def sample_params(batch, height: int, width: int, cfg: AugmentConfig,
                  seed) -> Dict[str, tf.Tensor]:
    """Per-image random parameters of one view, each [B]; identity values where an op
    is not applied. Drawn outside XLA, so views do not depend on ``jit_compile``."""
    seed = _as_seed(seed)
    jitter = _uniform(_op_seed(seed, 0), [batch], 0.0, 1.0) < cfg.jitter_p

    def factor(op, strength, identity):
        lo, hi = (max(0.0, 1.0 - strength), 1.0 + strength) if identity else (-strength, strength)
        return tf.where(jitter, _uniform(_op_seed(seed, op), [batch], lo, hi), float(identity))

    u = _uniform(_op_seed(seed, 5), [batch, 4], 0.0, 1.0)
    sigma = cfg.blur_sigma_min + u[:, 2] * (cfg.blur_sigma_max - cfg.blur_sigma_min)
    top, left, h, w = random_crop_boxes(batch, height, width, cfg, _op_seed(seed, 6))
    v = _uniform(_op_seed(seed, 7), [batch, 3], 0.0, 1.0)  # new draws: the ones above are unchanged
    erase = erase_boxes(batch, cfg, _op_seed(seed, 8))
    a = _uniform(_op_seed(seed, 9), [batch, 3], 0.0, 1.0)
    affine = a[:, 0] < cfg.affine_p
    radians = lambda degrees, u: tf.where(affine, (2 * u - 1) * math.radians(degrees), 0.0)  # noqa: E731
    return {
        "angle": radians(cfg.affine_degrees, a[:, 1]), "shear": radians(cfg.affine_shear, a[:, 2]),
        "solarize": v[:, 0] < cfg.solarize_p, "invert": v[:, 1] < cfg.invert_p,
        "erase": v[:, 2] < cfg.erase_p, **erase,
        "brightness": factor(1, cfg.brightness, 1), "contrast": factor(2, cfg.contrast, 1),
        "saturation": factor(3, cfg.saturation, 1), "hue": factor(4, cfg.hue, 0),
        "gray": tf.cast(u[:, 0] < cfg.grayscale_p, tf.float32),
        "flip": u[:, 1] < cfg.flip_p,
        "sigma": tf.where(u[:, 3] < cfg.blur_p, sigma, 1e-3),  # ~delta kernel: no blur.
        "top": top, "left": left, "height": h, "width": w,
    }


def erase_boxes(batch, cfg: AugmentConfig, seed: tf.Tensor):
    """torchvision RandomErasing's rectangles in output pixels, one draw per image (no retries:
    a rectangle larger than the view is clipped to it): {erase_top, erase_left, erase_h, erase_w}."""
    size = float(cfg.image_size)
    u = _uniform(seed, [batch, 4], 0.0, 1.0)
    area = size * size * (cfg.erase_scale_min + u[:, 0] * (cfg.erase_scale_max - cfg.erase_scale_min))
    ratio = tf.exp(math.log(0.3) + u[:, 1] * (math.log(3.3) - math.log(0.3)))
    h = tf.minimum(tf.round(tf.sqrt(area * ratio)), size)
    w = tf.minimum(tf.round(tf.sqrt(area / ratio)), size)
    return {"erase_top": tf.floor(u[:, 2] * (size - h + 1)), "erase_left": tf.floor(u[:, 3] * (size - w + 1)),
            "erase_h": h, "erase_w": w}


# ---------------------------------------------------------------------------- pixel math
def _gray(images: tf.Tensor) -> tf.Tensor:
    return tf.einsum("bhwc,c->bhw", images, tf.constant(_GRAY))[..., None]


def _blend(a: tf.Tensor, b: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision's _blend: clip(factor * a + (1 - factor) * b); factor [B]."""
    f = factor[:, None, None, None]
    return tf.clip_by_value(b + f * (a - b), 0.0, 1.0)


def color_jitter(x: tf.Tensor, params: Dict[str, tf.Tensor], cfg: AugmentConfig) -> tf.Tensor:
    """torchvision ColorJitter with per-image factors; float images [B, H, W, 3] in [0, 1].

    The order is fixed (brightness, contrast, saturation, hue); torchvision permutes it
    per image.
    """
    if cfg.jitter_p == 0:
        return x
    if cfg.brightness > 0:
        x = tf.clip_by_value(x * params["brightness"][:, None, None, None], 0.0, 1.0)
    if cfg.contrast > 0:
        x = _blend(x, tf.reduce_mean(_gray(x), axis=[1, 2, 3], keepdims=True), params["contrast"])
    if cfg.saturation > 0:
        x = _blend(x, _gray(x), params["saturation"])
    if cfg.hue > 0:
        hsv = tf.image.rgb_to_hsv(x)
        h = tf.math.floormod(hsv[..., 0] + params["hue"][:, None, None], 1.0)
        x = tf.image.hsv_to_rgb(tf.stack([h, hsv[..., 1], hsv[..., 2]], axis=-1))
    return x


def solarize_invert(x: tf.Tensor, params: Dict[str, tf.Tensor], cfg: AugmentConfig) -> tf.Tensor:
    """Solarizes (pixels >= 0.5 -> 1 - pixel) and/or inverts the images drawn for it."""
    if cfg.solarize_p > 0:
        x = tf.where(params["solarize"][:, None, None, None] & (x >= 0.5), 1.0 - x, x)
    if cfg.invert_p > 0:
        x = tf.where(params["invert"][:, None, None, None], 1.0 - x, x)
    return x


def erase(x: tf.Tensor, params: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Sets each drawn image's erase rectangle to 0 (the normalized mean); x [B, S, S, C]."""
    idx = tf.range(tf.shape(x)[1], dtype=tf.float32)[None, :]

    def inside(start, length):
        return (idx >= start[:, None]) & (idx < (start + length)[:, None])

    rows, cols = inside(params["erase_top"], params["erase_h"]), inside(params["erase_left"], params["erase_w"])
    box = rows[:, :, None] & cols[:, None, :] & params["erase"][:, None, None]
    return tf.where(box[..., None], tf.zeros_like(x), x)


def grayscale(x: tf.Tensor, params: Dict[str, tf.Tensor]) -> tf.Tensor:
    """Replaces the images with params["gray"] == 1 by their 3-channel luma."""
    return x + params["gray"][:, None, None, None] * (_gray(x) - x)


def resample(x: tf.Tensor, params: Dict[str, tf.Tensor], cfg: AugmentConfig) -> tf.Tensor:
    """Random resized crop + horizontal flip (+ Gaussian blur) as two batched matmuls."""
    height, width, size = x.shape[1], x.shape[2], cfg.image_size
    rows = resampling.resample_matrix(height, size, params["top"], params["height"] / size,
                                      cfg.interpolation)
    cols = resampling.resample_matrix(width, size, params["left"], params["width"] / size,
                                      cfg.interpolation)
    cols = tf.where(params["flip"][:, None, None], tf.reverse(cols, axis=[1]), cols)
    if cfg.blur_p > 0:
        blur = resampling.blur_matrix(size, params["sigma"])
        rows, cols = tf.matmul(blur, rows), tf.matmul(blur, cols)
    return tf.clip_by_value(resampling.apply_separable(x, rows, cols), 0.0, 1.0)


def apply_params(images: tf.Tensor, params: Dict[str, tf.Tensor],
                 cfg: AugmentConfig) -> tf.Tensor:
    """The deterministic part of a view: jitter, grayscale, solarize/invert, affine, crop/flip/blur,
    normalize, erase."""
    x = _to_float(images)
    if cfg.jitter_p > 0:
        x = color_jitter(x, params, cfg)
    if cfg.grayscale_p > 0:
        x = grayscale(x, params)
    x = solarize_invert(x, params, cfg)
    if cfg.affine_p > 0:
        x = resampling.affine(x, params["angle"], params["shear"])
    x = normalize(resample(x, params, cfg), cfg)
    return erase(x, params) if cfg.erase_p > 0 else x


_apply_params_xla = tf.function(apply_params, jit_compile=True, autograph=False)


def augment_batch(images: tf.Tensor, cfg: AugmentConfig, seed,
                  jit_compile: bool = True) -> tf.Tensor:
    """One random view of a batch: uint8/float [B, H, W, 3] -> normalized float [B, S, S, 3].

    Args:
      images: uint8 in [0, 255] or float in [0, 1], static H and W.
      cfg: the recipe.
      seed: int or shape-[2] int tensor; the same seed gives the same view.
      jit_compile: run the pixel math with XLA (about 2-4x faster on CPU); the random
        draws are the same either way.
    """
    images = tf.convert_to_tensor(images)
    _to_float(images)  # validates the shape.
    params = sample_params(tf.shape(images)[0], images.shape[1], images.shape[2], cfg, seed)
    return (_apply_params_xla if jit_compile else apply_params)(images, params, cfg)


def make_views(images: tf.Tensor, cfg: AugmentConfig, num_views: int, seed,
               jit_compile: bool = True) -> tuple:
    """V independent views of a batch, same image order in each: tuple of [B, S, S, 3], then
    cfg.local_views small views [B, s, s, 3] (multi-crop; `AugmentConfig.local`). The full-size
    views do not depend on cfg.local_views."""
    if not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"num_views must be an int >= 2, got {num_views!r}")
    seed = _as_seed(seed)
    full = tuple(augment_batch(images, cfg, _op_seed(seed, 1000 + v), jit_compile) for v in range(num_views))
    local = cfg.local() if cfg.local_views else None
    return full + tuple(augment_batch(images, local, _op_seed(seed, 2000 + v), jit_compile)
                        for v in range(cfg.local_views))


class MultiView:
    """Callable ``(images [B,H,W,3], seed) -> tuple of num_views views`` (then the config's
    local_views small ones).

    Example:
      >>> views = wmse_tf.data.augment.MultiView(recipe("stl10"), num_views=4)(images, seed=3)
    """

    def __init__(self, config: AugmentConfig, num_views: int = 2, jit_compile: bool = True):
        if not isinstance(num_views, int) or num_views < 2:
            raise ValueError(f"num_views must be an int >= 2, got {num_views!r}")
        self.config = config
        self.num_views = num_views
        self.jit_compile = jit_compile

    def __call__(self, images: tf.Tensor, seed) -> tuple:
        return make_views(images, self.config, self.num_views, seed, self.jit_compile)


def eval_transform(images: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """The recipe's eval view (`wmse_tf.data.eval_transform.apply`): resize, center crop, normalize."""
    return eval_transform_lib.apply(images, cfg.image_size, cfg.mean, cfg.std, cfg.eval_resize)


def normalize(images: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """(x - mean) / std per channel for float images in [0, 1]."""
    return eval_transform_lib.normalize(images, cfg.mean, cfg.std)


def _to_float(images: tf.Tensor) -> tf.Tensor:
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[-1] != 3 or None in images.shape[1:3]:
        raise ValueError(f"images must be [B, H, W, 3] with static H, W; got {images.shape}")
    return eval_transform_lib.to_float(images)


def _as_seed(seed) -> tf.Tensor:
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0, tf.int64)])
    return seed
