"""The one evaluation-time image transform: raw images -> normalized float32 at the model size.

Shared by the eval pipeline (`pipeline.eval_dataset`), the folder loader
(`image_folder.fit_image`) and the serving graph (`serving.EncoderModule`), so a served
encoder returns the features its evaluation measured. It is torchvision's
``Resize(R, bicubic) -> CenterCrop(S) -> Normalize(mean, std)`` of the reference:

  - an image already S x S passes unchanged (so the transform is idempotent);
  - else its shorter side goes to R (``resize``, default S) and the longer one to
    ``floor(R * long / short)``, as torchvision computes them, with PIL's antialiased
    bicubic weights (`resampling.resize_matrix`, the matrices the augmentation uses),
    then the central S x S crop (offsets ``round((new - S) / 2)``, as CenterCrop).
    The resampled pixels are rounded to 8-bit levels, as PIL's resize of an 8-bit
    image is; an image whose shorter side is already R is only cropped.

Sizes may be unknown until run time: it works eagerly, in a tf.data map and in a
tf.function with unknown batch and spatial sizes.

Example:
    >>> x = wmse_tf.data.eval_transform.apply(images_uint8, 64, mean, std, resize=70)  # STL-10
"""

from typing import Optional, Sequence

import tensorflow as tf

from wmse_tf.data import resampling

KIND = "bicubic"  # the reference's eval Resize(..., interpolation=3)


def to_float(images) -> tf.Tensor:
    """uint8 [0, 255] -> float32 / 255; float -> float32 (assumed in [0, 1])."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def normalize(images: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """(x - mean) / std per channel for float images in [0, 1]."""
    return (images - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def fit(images, size: int, resize: Optional[int] = None) -> tf.Tensor:
    """uint8 or [0, 1] float images [B, H, W, 3] (any H, W) -> float32 [B, S, S, 3] in [0, 1].

    Args:
      images: a batch of one size; H and W may be unknown until run time.
      size: side S of the output.
      resize: shorter side before the central crop (>= S); None means S.
    """
    resize = resize or size
    if resize < size:
        raise ValueError(f"fit: resize ({resize}) must be >= size ({size})")
    x = to_float(images)
    if x.shape.rank is not None and (x.shape.rank != 4 or x.shape[-1] not in (3, None)):
        raise ValueError(f"fit: images must be [B, H, W, 3], got shape {x.shape}")
    x = tf.ensure_shape(x, [None, None, None, 3])  # fails at run time for another rank
    h, w = _dim(x, 1), _dim(x, 2)
    if isinstance(h, int) and isinstance(w, int):  # static sizes: decide in Python
        out = x if (h, w) == (size, size) else _resize_and_crop(x, h, w, size, resize)
    else:
        out = tf.cond(tf.logical_and(tf.equal(h, size), tf.equal(w, size)),
                      lambda: tf.identity(x), lambda: _resize_and_crop(x, h, w, size, resize))
    return tf.ensure_shape(out, [None, size, size, 3])


def apply(images, size: int, mean: Sequence[float], std: Sequence[float],
          resize: Optional[int] = None) -> tf.Tensor:
    """The eval transform: `fit` then `normalize`; float32 [B, S, S, 3]."""
    return normalize(fit(images, size, resize), mean, std)


def fit_uint8(image, size: int) -> tf.Tensor:
    """One uint8 image [H, W, 3] -> uint8 [S, S, 3]: `fit` with resize S (the folder loader's)."""
    x = fit(tf.convert_to_tensor(image)[None], size)[0]
    return tf.cast(tf.round(x * 255.0), tf.uint8)


def _dim(x, axis):
    static = x.shape[axis]
    return int(static) if static is not None else tf.shape(x)[axis]


def _geometry(h, w, size, resize):
    """(new_h, new_w, top, left) of Resize(resize) + CenterCrop(size); ints or int32 tensors."""
    if isinstance(h, int) and isinstance(w, int):
        short = min(h, w)
        new_h, new_w = [resize if d == short else resize * d // short for d in (h, w)]
        return new_h, new_w, round((new_h - size) / 2), round((new_w - size) / 2)
    short = tf.minimum(h, w)
    # torchvision: shorter side R, longer int(R * long / short); CenterCrop: round((new - S) / 2).
    new_h, new_w = [tf.where(tf.equal(d, short), resize, resize * d // short) for d in (h, w)]
    top, left = [tf.cast(tf.round(tf.cast(n - size, tf.float32) / 2.0), tf.int32) for n in (new_h, new_w)]
    return new_h, new_w, top, left


def _resize_and_crop(x, h, w, size, resize):
    """Shorter side to `resize` (skipped if already so), central size x size crop."""
    new_h, new_w, top, left = _geometry(h, w, size, resize)

    def crop():
        return x[:, top:top + size, left:left + size, :]

    def resample():
        rows = resampling.resize_matrix(h, new_h, top, size, KIND)
        cols = resampling.resize_matrix(w, new_w, left, size, KIND)
        y = tf.clip_by_value(resampling.apply_separable(x, rows, cols), 0.0, 1.0)
        return tf.round(y * 255.0) / 255.0  # 8-bit levels, as PIL's resize of an 8-bit image

    if isinstance(h, int) and isinstance(w, int):
        return crop() if min(h, w) == resize else resample()
    return tf.cond(tf.equal(tf.minimum(h, w), resize), crop, resample)
