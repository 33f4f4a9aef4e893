"""LiteRT (TFLite) export of the portable graph and its runner (the LiteRT interpreter).

  convert(archive_dir, path, quantize)  the portable SavedModel (`wmse_tf.export.portable`)
                                        -> a .tflite file with signature `serving_default`:
                                        `images` uint8 [batch, S, S, 3] -> `feature_vector`
  runner(path)                          -> fn(uint8 images) -> features (ai_edge_litert)

The converter is TensorFlow's `tf.lite.TFLiteConverter` (still in TF 2.21), restricted to
LiteRT's builtin ops: SELECT_TF_OPS (Flex) is not in the standalone runtime, so an op
without a builtin is one `UserError` naming it. `quantize`: "none" (float32), "float16"
(float16 weights, dequantized to float32 at load) or "int8" (dynamic range: int8 weights,
activations quantized on the fly by the int8 kernels).

Example:
  >>> convert("/tmp/portable", "encoder_int8.tflite", quantize="int8")
  >>> features = runner("encoder_int8.tflite")(uint8_images)
"""

import os
import re

from wmse_tf.errors import UserError
from wmse_tf.export import variants

QUANTIZE = variants.FORMATS["litert"][1]
SUFFIX = variants.FORMATS["litert"][0]


def _interpreter():
    try:
        from ai_edge_litert import interpreter
    except ImportError as e:
        raise UserError(f"the LiteRT runtime needs the package ai-edge-litert (not installed: {e}); "
                        "pip install 'wmse_tf[export]'") from e
    return interpreter


def versions():
    """{package: version} of the converter and runtime, as recorded in the model card."""
    import importlib.metadata

    import tensorflow as tf

    _interpreter()
    return {"tensorflow (TFLiteConverter)": tf.__version__,
            "ai-edge-litert": importlib.metadata.version("ai-edge-litert")}


def unsupported(message):
    """Op names in a converter error ("'tf.Cholesky' op is neither a custom op nor a flex op")."""
    ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)))
    listed = re.search(r"TF Select ops: ([\w, ]+)", message)
    if listed:
        ops = sorted(set(ops) | {op.strip() for op in listed.group(1).split(",") if op.strip()})
    return ops


def convert(archive_dir, path, quantize="none"):
    """Writes the LiteRT model of the portable SavedModel at `archive_dir` to `path` (not atomic).

    Raises:
      UserError: an unknown `quantize`, or ops with no LiteRT builtin.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize={quantize}: the LiteRT export offers {', '.join(QUANTIZE)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(archive_dir, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    try:
        model = converter.convert()
    except Exception as e:  # noqa: BLE001 - ConverterError and friends; a bug keeps its cause chained
        ops = unsupported(str(e))
        if not ops:
            raise
        raise UserError(f"LiteRT export: no builtin LiteRT op for {', '.join(ops)} (TF {tf.__version__} "
                        "converter; Flex/SELECT_TF_OPS is not in the standalone runtime)") from e
    with open(path, "wb") as f:
        f.write(model)
    return path


def runner(path, threads=None):
    """fn(uint8 [B, S, S, 3] numpy) -> float32 [B, F] numpy, on the LiteRT interpreter (CPU).

    Args:
      threads: interpreter threads (default: LiteRT's).
    """
    interpreter = _interpreter().Interpreter(model_path=os.fspath(path), num_threads=threads)
    signature = interpreter.get_signature_runner("serving_default")

    def run(images):
        return signature(images=images)["feature_vector"]

    return run
