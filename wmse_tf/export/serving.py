"""Serving graph of an exported encoder: input checks, the eval transform, signatures.

`EncoderModule` wraps a Keras encoder (normalized images -> features) in a
`tf.Module` whose graph takes *raw* images, so callers never normalize:

  - `serving_default(images)`: float32 [batch, H, W, 3] in [0, 1];
  - `serving_uint8(images)`: uint8 [batch, H, W, 3] in [0, 255];
  - `serving_bytes(image_bytes)`: string [batch] of encoded JPEG/PNG/GIF/BMP;
  - each returns {"feature_vector": float32 [batch, F]}.

Inside the graph, images go through `wmse_tf.data.eval_transform`, the transform the
evaluation pipeline applies: images already `image_size` x `image_size` pass
unchanged; others get their shorter side resized to `resize` (PIL-style bicubic,
antialiased, rounded to 8-bit levels) and a central `image_size` crop; then the
dataset's mean/std normalization. Inputs are declared with unknown rank and
checked inside the graph (`assert_images`: a clear InvalidArgumentError naming
`images` and the expected shape). It also follows the TF Hub reusable-SavedModel conventions: a
`__call__(images, training=False)` traced for both values of `training`, and
`variables`, `trainable_variables`, `regularization_losses` attributes.
"""

import dataclasses
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from wmse_tf.data import eval_transform

OUTPUT_KEY = "feature_vector"
SIGNATURES = ("serving_default", "serving_uint8", "serving_bytes")
_SHAPE_HELP = "[batch, height, width, 3]"
# Image inputs are declared with unknown rank: with a static rank 4, TF folds the
# in-graph rank check away and a rank-3 input fails later with an obscure error.
_IMAGES_F32 = tf.TensorSpec(None, tf.float32, name="images")
_IMAGES_U8 = tf.TensorSpec(None, tf.uint8, name="images")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the exported graph does to raw images before the encoder.

    Attributes:
      image_size: side S of the square images the encoder takes.
      mean, std: per-channel normalization of [0, 1] pixels (dataset statistics).
      resize: shorter side before the central S x S crop for images of another
        size (default S: straight to S x S for square images).

    Example:
      >>> spec = wmse_tf.export.serving.InputSpec(32, (0.49, 0.48, 0.45), (0.20, 0.20, 0.20))
    """

    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    resize: Optional[int] = None

    def __post_init__(self):
        if self.image_size < 1:
            raise ValueError(f"InputSpec: image_size must be >= 1, got {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"InputSpec: mean and std need 3 channels, got {self.mean}, {self.std}")
        if min(self.std) <= 0:
            raise ValueError(f"InputSpec: std must be > 0, got {self.std}")
        if self.resize is not None and self.resize < self.image_size:
            raise ValueError(f"InputSpec: resize ({self.resize}) must be >= image_size ({self.image_size})")

    def to_json(self):
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "resize": self.resize or self.image_size}


def check_images(images, name="images", dtypes=("float32", "uint8")):
    """Python-side check of a batch of images; returns it as a numpy array.

    Raises:
      ValueError: naming `name`, when the rank, channels or dtype are wrong, or
        when float images are clearly in [0, 255] instead of [0, 1].
    """
    arr = np.asarray(images)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape[1:3]:  # as assert_images in the graph
        raise ValueError(f"{name} must have shape {_SHAPE_HELP} (RGB, channels last, H, W > 0), got "
                         f"shape {arr.shape}; add a batch axis or tile grayscale to 3 channels")
    if arr.dtype.name not in dtypes:
        raise ValueError(f"{name} must have dtype {' or '.join(dtypes)}, got {arr.dtype}")
    if arr.dtype == np.float32 and arr.size and float(arr.max()) > 1.0 + 1e-3:
        raise ValueError(f"{name}: float images must be in [0, 1], got max {float(arr.max()):.3g}; "
                         "divide by 255 or send uint8 images (signature serving_uint8)")
    return arr


def assert_images(images, name="images"):
    """In-graph check: images are rank 4 with 3 channels and non-empty H, W.

    The check is a tf.cond whose output feeds the rest of the graph, so a bad
    input fails here (a data dependency; a control dependency on an Assert
    does not stop ops that read the shape, e.g. a resize, from failing first).
    """
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)  # safe to index at any rank
    ok = tf.logical_and(tf.equal(tf.size(shape), 4), tf.equal(padded[3], 3))
    ok = tf.logical_and(ok, tf.reduce_all(padded[1:3] > 0))

    def fail():
        check = tf.debugging.Assert(
            False, [f"{name} must have shape {_SHAPE_HELP} with 3 (RGB) channels; got shape", shape],
            summarize=8, name=f"check_{name}")
        with tf.control_dependencies([check]):
            return tf.zeros([0, 1, 1, 3], images.dtype)

    out = tf.cond(ok, lambda: tf.identity(images), fail)
    return tf.ensure_shape(out, [None, None, None, 3])


def to_model_size(images, spec):
    """uint8 or [0, 1] float [B, H, W, 3] -> float [B, S, S, 3] in [0, 1] (`eval_transform.fit`)."""
    return eval_transform.fit(images, spec.image_size, spec.resize)


def normalize(images, spec):
    return eval_transform.normalize(images, spec.mean, spec.std)


def decode_images(image_bytes, spec):
    """string [B] of encoded images (any sizes) -> float32 [B, S, S, 3] in [0, 1]."""
    size = spec.image_size

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return to_model_size(image[None], spec)[0]

    image_bytes = tf.reshape(image_bytes, [-1])
    return tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


class EncoderModule(tf.Module):
    """A Keras encoder behind a raw-image serving graph; see the module docstring.

    Args:
      encoder: keras.Model, normalized images [B, S, S, 3] -> features [B, F].
      spec: InputSpec (image size, mean/std, resize).

    Example:
      >>> module = EncoderModule(encoder, InputSpec(32, mean, std))
      >>> tf.saved_model.save(module, path, signatures=module.signatures())
    """

    # TF Hub reusable SavedModel: saved as plain lists, shadowing tf.Module's properties.
    variables = None
    trainable_variables = None
    regularization_losses = None

    def __init__(self, encoder, spec, name="wmse_encoder"):
        super().__init__(name=name)
        self.__dict__["_encoder"] = encoder  # untracked: only its variables are saved
        self.__dict__["spec"] = spec
        self.variables = [v.value for v in encoder.variables]
        self.trainable_variables = [v.value for v in encoder.trainable_variables]
        self.regularization_losses = []  # the encoder has no regularizers (weight decay is in the optimizer)
        for training in (False, True):
            self.__call__.get_concrete_function(_IMAGES_F32, training=training)

    def _features(self, images, training):
        x = normalize(to_model_size(assert_images(images), self.spec), self.spec)
        # An empty batch gets [0, F] features: Keras' Conv2D returns its input for an
        # empty batch and the next layer then fails with an obscure shape error.
        num_features = int(self._encoder.output.shape[-1])
        return tf.cond(tf.shape(x)[0] > 0,
                       lambda: tf.cast(self._encoder(x, training=training), tf.float32),
                       lambda: tf.zeros([0, num_features], tf.float32))

    # The encoder is traced twice, in `serve` and `serve_training`; the other functions call them
    # (one nested function each in the SavedModel, not a copy of the encoder's graph per signature).
    @tf.function(autograph=False)
    def __call__(self, images, training=False):
        """float32 images [B, H, W, 3] in [0, 1] -> features [B, F] (TF Hub convention)."""
        return self.serve_training(images) if training else self.serve(images)

    @tf.function(input_signature=[_IMAGES_F32], autograph=False)
    def serve(self, images):
        """Keras 3 endpoint: `TFSMLayer(path, call_endpoint="serve")` -> features tensor."""
        return self._features(images, False)

    @tf.function(input_signature=[_IMAGES_F32], autograph=False)
    def serve_training(self, images):
        """Training-mode twin of `serve` (BatchNorm in batch mode), for `call_training_endpoint`."""
        return self._features(images, True)

    @tf.function(input_signature=[_IMAGES_F32], autograph=False)
    def serving_default(self, images):
        return {OUTPUT_KEY: self.serve(images)}

    @tf.function(input_signature=[_IMAGES_U8], autograph=False)
    def serving_uint8(self, images):
        return {OUTPUT_KEY: self.serve(eval_transform.to_float(images))}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    def serving_bytes(self, image_bytes):
        return {OUTPUT_KEY: self.serve(decode_images(image_bytes, self.spec))}

    def signatures(self):
        """The serving signatures, for `tf.saved_model.save(..., signatures=...)`."""
        return {name: getattr(self, name) for name in SIGNATURES}
