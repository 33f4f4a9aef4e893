"""An exported encoder as a Keras 3 layer that fine-tunes with any optimizer.

`keras.layers.TFSMLayer` names its variables after TF's (`stem_conv/kernel:0` ->
`stem_conv_kernel:0`); Keras optimizers build their slot names from those
(`stem_conv_kernel:0_momentum`), and the `:0` is not a valid name scope, so
`fit()` with Adam, AdamW or SGD with momentum fails (plain SGD has no slots).
Every `tf.Variable.name` ends in `:0`, so no export can avoid it. `EncoderLayer`
loads the SavedModel itself and tracks each of its variables as a
`keras.Variable` with a valid name that wraps the restored variable (the same
resource the restored graph reads and writes, so gradients and optimizer
updates reach the graph).

Calls go through the TF Hub `__call__(images, training)` of the export: float32
RGB images in [0, 1] (uint8 ones are divided by 255), any size (the graph resizes
and normalizes). In training mode the graph's BatchNorms use batch statistics and
update their moving statistics; a frozen layer (`trainable=False`) always runs in
inference mode, as a frozen `keras.layers.BatchNormalization` does.
"""

import re

import keras
import tensorflow as tf


def _keras_name(tf_name):
    """`stem_conv/kernel:0` -> `stem_conv_kernel` (valid as a Keras name and scope)."""
    name = re.sub(r":\d+$", "", tf_name)
    return re.sub(r"[^A-Za-z0-9_.>-]", "_", name) or "variable"


class EncoderLayer(keras.layers.Layer):
    """A wmse_tf SavedModel export as a Keras 3 layer: images in [0, 1] -> features.

    Args:
      path: a version directory (`<export_dir>/<name>/<version>`) or the model
        directory (its latest version is used).
      trainable: fine-tune the encoder's weights; False freezes them and keeps
        BatchNorm in inference mode in `fit()`.
      **kwargs: keras.layers.Layer arguments (name, ...).

    Attributes:
      module: the loaded SavedModel (`tf.saved_model.load`); its variables are
        the layer's weights, so `tf.saved_model.save(layer.module, dir,
        signatures=layer.module.signatures)` re-exports a fine-tuned encoder.

    Example:
      >>> layer = wmse_tf.export.keras_encoder.load_encoder_layer("zoo/exports/wmse2_fashion_mnist/2")
    """

    def __init__(self, path, trainable=True, **kwargs):
        kwargs.setdefault("dtype", "float32")  # the export takes float32 images
        super().__init__(**kwargs)
        from wmse_tf.export import saved_model as export  # lazy: keep this module light

        self.filepath = export.latest_version_dir(str(path))
        self.module = tf.saved_model.load(self.filepath)
        for attr in ("variables", "trainable_variables", "__call__"):
            if not hasattr(self.module, attr):
                raise ValueError(f"EncoderLayer: {self.filepath} has no `{attr}`; expected a wmse_tf "
                                 "export (TF Hub reusable SavedModel)")
        self.supports_jit = False  # a restored graph (asserts, conds) is not meant for XLA
        trainable_ids = {id(v) for v in self.module.trainable_variables}
        with keras.name_scope(self.name):
            self.encoder_weights = [self._wrap(v, id(v) in trainable_ids) for v in self.module.variables]
        self.trainable = trainable  # after the weights exist: the setter freezes them too

    @staticmethod
    def _wrap(variable, trainable):
        wrapped = keras.Variable(variable, trainable=trainable, dtype=variable.dtype,
                                 name=_keras_name(variable.name))
        # The TensorFlow backend wraps a tf.Variable initializer instead of copying it;
        # the restored graph would not see a copy's updates, so fail loudly if that changes.
        if wrapped.value is not variable:
            raise RuntimeError("EncoderLayer: keras.Variable copied the restored tf.Variable "
                               f"{variable.name} instead of wrapping it (Keras {keras.__version__})")
        return wrapped

    def call(self, images, training=False):
        if images.dtype == tf.uint8:  # as the export's serving_uint8
            images = tf.cast(images, tf.float32) / 255.0
        images = tf.cast(images, tf.float32)
        return self.module(images, training=bool(training) and self.trainable)

    def compute_output_shape(self, input_shape):
        out = self.module.__call__.get_concrete_function(
            tf.TensorSpec(None, tf.float32), training=False).structured_outputs
        return (input_shape[0], int(out.shape[-1]))

    def get_config(self):
        return {**super().get_config(), "path": self.filepath}


def load_encoder_layer(path, trainable=True, **kwargs):
    """An exported encoder as a Keras 3 layer (`EncoderLayer`) for `fit()` with any optimizer.

    Example:
      >>> encoder = wmse_tf.export.keras_encoder.load_encoder_layer(path)
      >>> model = keras.Sequential([keras.Input((28, 28, 3)), encoder, keras.layers.Dense(10)])
    """
    return EncoderLayer(path, trainable=trainable, **kwargs)
