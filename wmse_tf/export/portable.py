"""The portable graph of a SavedModel export: its encoder in float32 behind a uint8 input.

Every other runtime (ONNX, LiteRT) converts this graph, the same for each format:

  images: uint8 [batch, S, S, 3] in [0, 255]  ->  feature_vector: float32 [batch, F]

It is the SavedModel's `serving_uint8` signature for images already at the model size S
(for those the eval transform is `to_float` and the dataset's mean/std, with no resize or
crop), computed in float32. The batch size is dynamic; S is fixed (the model card's
`input.image_size`). Resizing other sizes, the string input of `serving_bytes` and the
in-graph shape checks (`tf.cond`, `Assert`, `EnsureShape`) are not part of it: they have no
builtin LiteRT ops, and tf2onnx leaves the encoder inside an ONNX `If` it cannot shape.

Why not convert the SavedModel's graph as it is: besides those ops, a SavedModel exported in
bfloat16 (on request, or before serving graphs were float32) computes in a precision neither
LiteRT nor ONNX Runtime's CPU kernels run. So the encoder is rebuilt from the model card's
flags (`arch`, `stem`, `width`) in float32 and given the SavedModel's variables by name (every
name and shape must match), and the parity check compares it with `serving_default`
(`wmse_tf.export.formats`). The zoo re-exports an old bfloat16 SavedModel from this rebuild.

Example:
  >>> encoder, spec, card = wmse_tf.export.portable.float_encoder("zoo/exports/wmse2_fashion_mnist/2")
  >>> portable.write_archive(encoder, spec, "/tmp/portable")   # a SavedModel with `serving_default`
"""

import keras
import tensorflow as tf

from wmse_tf.data import eval_transform
from wmse_tf.errors import UserError
from wmse_tf.export import saved_model, serving

INPUT_NAME = "images"
SIGNATURE = "serving_default"


def input_contract(spec, num_features):
    """The contract as the model card records it."""
    size = spec.image_size
    return {"images": f"uint8 [batch, {size}, {size}, 3] in [0, 255] (batch dynamic, {size}x{size} fixed)",
            "feature_vector": f"float32 [batch, {num_features}]",
            "as": "serving_uint8 for images at the model size, computed in float32",
            "inside": "to_float (/255) and the dataset's mean/std (the eval transform at the model size)"}


def spec_of(card, path):
    """InputSpec of a model card (`input`)."""
    spec = card.get("input")
    if not spec:
        raise UserError(f"{path}: the model card has no `input` (image_size, mean, std); re-export it with "
                        "wmse_tf.export.saved_model.export_encoder")
    return serving.InputSpec(int(spec["image_size"]), tuple(spec["mean"]), tuple(spec["std"]), spec.get("resize"))


def float_encoder(saved_model_dir, loaded=None):
    """(float32 Keras encoder with the SavedModel's weights, InputSpec, model card).

    `loaded`: the SavedModel already loaded (`tf.saved_model.load(saved_model_dir)`), if at hand.

    Raises:
      UserError: the card lacks the flags that name the architecture, or a variable's
        name or shape does not match the rebuilt encoder.
    """
    from wmse_tf.core import encoders

    card = saved_model.read_card(saved_model_dir)
    flags = card.get("flags") or {}
    missing = [k for k in ("arch", "stem", "width") if flags.get(k) in (None, "auto")]
    if missing:
        raise UserError(f"{saved_model_dir}: the model card's flags lack {missing}, needed to rebuild the encoder "
                        "in float32 (export it from a training run: wmse_tf.train or zoo.build)")
    spec = spec_of(card, saved_model_dir)
    loaded = loaded if loaded is not None else tf.saved_model.load(saved_model_dir)
    restored = {v.name.rsplit(":", 1)[0]: v for v in loaded.variables}
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        encoder = encoders.build(flags["arch"], flags["stem"], int(flags["width"]), spec.image_size)
    finally:
        keras.config.set_dtype_policy(policy)
    names = {v.path for v in encoder.variables}
    if names != set(restored):
        diff = sorted(names ^ set(restored))[:4]
        raise UserError(f"{saved_model_dir}: its variables differ from a {flags['arch']} width {flags['width']} "
                        f"stem {flags['stem']} encoder (e.g. {diff})")
    for v in encoder.variables:
        source = restored[v.path]
        if tuple(source.shape) != tuple(v.shape):
            raise UserError(f"{saved_model_dir}: variable {v.path} has shape {tuple(source.shape)}, the rebuilt "
                            f"encoder expects {tuple(v.shape)}")
        v.assign(tf.cast(source, v.dtype))
    return encoder, spec, card


def features_fn(encoder, spec):
    """uint8 [B, S, S, 3] -> {"feature_vector": float32 [B, F]}: the portable graph."""

    def serve(images):
        x = eval_transform.normalize(eval_transform.to_float(images), spec.mean, spec.std)
        return {serving.OUTPUT_KEY: tf.cast(encoder(x, training=False), tf.float32)}

    return serve


def input_signature(spec):
    size = spec.image_size
    return [tf.TensorSpec([None, size, size, 3], tf.uint8, name=INPUT_NAME)]


def write_archive(encoder, spec, directory):
    """Writes the portable graph as a SavedModel (signature `serving_default`) to `directory`.

    A scratch file for the converters (Keras' ExportArchive: its variables freeze where
    LiteRT's converter expects them), never published.
    """
    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint(SIGNATURE, features_fn(encoder, spec), input_signature=input_signature(spec))
    archive.write_out(directory, verbose=False)
    return directory
