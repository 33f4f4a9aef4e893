"""Separable resampling (PIL-style) as matrices: per-image for the augmentation, shared for eval.

Crop, resize, flip and blur are linear and separable: each image gets a row and a
column matrix and is transformed by two batched matmuls. The weights follow PIL's
ImagingResample (bicubic a=-0.5 or triangle kernel, antialiased by stretching the
kernel when downscaling), which is what torchvision applies to PIL images.
`resize_matrix` builds the matrix of a fixed resize + crop from sizes that may be
tensors, so it works in serving graphs with unknown image sizes. `affine` (rotation and
shear, not separable) samples each output pixel bilinearly instead.
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


def affine(x, angle, shear):
    """Rotates each image of x [B, H, W, C] by `angle` and shears it horizontally by `shear` (radians,
    [B]) about its centre: output pixel p samples the input at (R S)^-1 p, bilinear, 0 outside."""
    height, width = x.shape[1], x.shape[2]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) - (height - 1) / 2,
                         tf.range(width, dtype=tf.float32) - (width - 1) / 2, indexing="ij")
    cos, sin = tf.cos(angle)[:, None, None], tf.sin(angle)[:, None, None]
    src_x = cos * xs + sin * ys  # R^-1: rotation by -angle (x right, y down)
    src_y = -sin * xs + cos * ys
    src_x = src_x - tf.tan(shear)[:, None, None] * src_y  # S^-1: x' = x + tan(shear) y
    src_x, src_y = src_x + (width - 1) / 2, src_y + (height - 1) / 2
    x0, y0 = tf.floor(src_x), tf.floor(src_y)
    batch = tf.broadcast_to(tf.range(tf.shape(x)[0])[:, None, None], tf.shape(src_x))
    out = tf.zeros_like(x)
    for dy in (0.0, 1.0):
        for dx in (0.0, 1.0):
            px, py = x0 + dx, y0 + dy
            weight = (1 - tf.abs(src_x - px)) * (1 - tf.abs(src_y - py))
            inside = (px >= 0) & (px <= width - 1) & (py >= 0) & (py <= height - 1)
            idx = tf.stack([batch, tf.cast(tf.clip_by_value(py, 0, height - 1), tf.int32),
                            tf.cast(tf.clip_by_value(px, 0, width - 1), tf.int32)], axis=-1)
            out += tf.where(inside, weight, 0.0)[..., None] * tf.gather_nd(x, idx)
    return out
