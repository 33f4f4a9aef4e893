"""Export and serving: SavedModel encoders with their model card, and loading them back.

Owns: `serving` (the serving graph: input checks, the eval transform inside, signatures),
`saved_model` (`export_encoder`: `<export_dir>/<name>/<version>/`, atomic, model card, sha256,
a float32 serving graph whatever the training precision (`with_precision`); reading cards and versions), `keras_encoder` (`load_encoder_layer`: an export as a Keras 3
layer that fine-tunes with any optimizer), the other runtimes: `portable` (the encoder in
float32 behind a uint8 input, the graph every converter takes), `onnx` (tf2onnx, ONNX Runtime),
`litert` (TFLite converter, LiteRT interpreter) and `formats` (those files beside a SavedModel,
with parity, in its model card).

May import: `wmse_tf.atomic_io`, `wmse_tf.errors`, `core` and `data`; nothing above.
"""

from wmse_tf.lazy import reexports

__getattr__ = reexports(__name__, {"export_encoder": "saved_model:export_encoder", "load_encoder_layer": "keras_encoder:load_encoder_layer",
                          "check_images": "serving:check_images"})  # export_encoder, load_encoder_layer, check_images
