"""Separable resampling (PIL-style) as matrices: per-image for the augmentation, shared for eval.

Crop, resize, flip and blur are linear and separable: each image gets a row and a
column matrix and is transformed by two batched matmuls. The weights follow PIL's
ImagingResample (bicubic a=-0.5 or triangle kernel, antialiased by stretching the
kernel when downscaling), which is what torchvision applies to PIL images.
`resize_matrix` builds the matrix of a fixed resize + crop from sizes that may be
tensors, so it works in serving graphs with unknown image sizes.
"""

import tensorflow as tf

from wmse_tf.data.augment_config import INTERPOLATIONS as KERNELS  # noqa: F401 (public name)


def kernel(x: tf.Tensor, kind: str) -> tf.Tensor:
    """PIL's resampling kernels (bicubic a=-0.5, triangle) evaluated at x."""
    x = tf.abs(x)
    if kind == "bilinear":
        return tf.maximum(1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return tf.where(x < 1.0, near, tf.where(x < 2.0, far, tf.zeros_like(x)))


def resample_matrix(in_size: int, out_size: int, start: tf.Tensor, scale: tf.Tensor,
                    kind: str = "bicubic") -> tf.Tensor:
    """Per-image 1-D resampling matrices [B, out_size, in_size] (PIL ImagingResample).

    Output pixel k takes input pixels around ``start + (k + 0.5) * scale`` (input pixel
    units), with the kernel stretched by ``max(scale, 1)`` (antialiasing) and weights
    renormalized over the pixels inside the image.

    Args:
      in_size: input length; out_size: output length.
      start: [B] float left edge of the source window; scale: [B] window / out_size.
      kind: "bicubic" or "bilinear".
    """
    start = tf.cast(start, tf.float32)[:, None, None]
    scale = tf.cast(scale, tf.float32)[:, None, None]
    centers = start + (tf.range(out_size, dtype=tf.float32)[None, :, None] + 0.5) * scale
    pixels = tf.range(in_size, dtype=tf.float32)[None, None, :] + 0.5
    stretch = tf.maximum(scale, 1.0)
    weights = kernel((pixels - centers) / stretch, kind)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-8)


def resize_matrix(in_size, new_size, offset, out_size: int, kind: str = "bicubic") -> tf.Tensor:
    """Rows offset .. offset + out_size - 1 of PIL's in_size -> new_size resize: [out_size, in_size].

    Output pixel k samples around ``(offset + k + 0.5) * in_size / new_size``, so a crop
    of the matrix equals the same rows of the uncropped one, bit for bit.

    Args:
      in_size, new_size, offset: ints or int32 scalar tensors (resized length, crop start).
      out_size: static output length (the crop).
      kind: "bicubic" or "bilinear".
    """
    scale = tf.cast(in_size, tf.float32) / tf.cast(new_size, tf.float32)
    centers = (tf.cast(offset + tf.range(out_size), tf.float32) + 0.5) * scale
    pixels = tf.cast(tf.range(in_size), tf.float32) + 0.5
    weights = kernel((pixels[None, :] - centers[:, None]) / tf.maximum(scale, 1.0), kind)
    return weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-8)


def apply_separable(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor) -> tf.Tensor:
    """out[b] = rows[b] @ images[b] @ cols[b]^T per channel; images [B, H, W, C].

    Matrices [B, K, H] and [B, L, W] are per image; [K, H] and [L, W] are shared by the batch.
    """
    if rows.shape.rank == 2:
        x = tf.einsum("kh,bhwc->bkwc", rows, images)
        return tf.einsum("lw,bkwc->bklc", cols, x)
    x = tf.einsum("bkh,bhwc->bkwc", rows, images)
    return tf.einsum("blw,bkwc->bklc", cols, x)


def blur_matrix(size: int, sigma: tf.Tensor) -> tf.Tensor:
    """Per-image Gaussian blur matrices [B, size, size] with reflect padding."""
    radius = max(1, int(round(0.05 * size)))  # kernel 23 at 224, as in BYOL.
    taps = tf.range(-radius, radius + 1, dtype=tf.float32)
    g = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
    g = g / tf.reduce_sum(g, axis=1, keepdims=True)  # [B, T]
    pos = tf.range(size)[None, :] + tf.range(-radius, radius + 1)[:, None]  # [T, S]
    period = max(2 * size - 2, 1)
    pos = tf.math.floormod(pos, period)
    pos = tf.where(pos >= size, period - pos, pos)  # reflect without the edge pixel.
    onehot = tf.one_hot(pos, size, dtype=tf.float32)  # [T, S(out), S(in)]
    return tf.einsum("bt,tkj->bkj", g, onehot)
