"""ONNX export of the portable graph (tf2onnx) and its runner (ONNX Runtime).

  convert(archive_dir, path, quantize)  the portable SavedModel (`wmse_tf.export.portable`)
                                        -> an .onnx file: input `images` uint8 [batch, S, S, 3],
                                        output `feature_vector` float32 [batch, F]
  runner(path)                          -> fn(uint8 images) -> features, on ONNX Runtime's CPU

`quantize`: "none" (float32) or "int8" (ONNX Runtime's dynamic quantization: int8
weights, activations quantized per batch at run time). tf2onnx's `from_function`
continues past ops it cannot map and only logs them; they are collected here and
raised as one `UserError` naming the ops, so no unusable file is published.

Example:
  >>> convert("/tmp/portable", "encoder.onnx")
  >>> features = runner("encoder.onnx")(uint8_images)
"""

import contextlib
import logging
import os
import re
import tempfile

from wmse_tf.errors import UserError
from wmse_tf.export import variants

QUANTIZE = variants.FORMATS["onnx"][1]
OPSET = 17
SUFFIX = variants.FORMATS["onnx"][0]


def _require(name):
    try:
        return __import__(name)
    except ImportError as e:
        raise UserError(f"the ONNX export needs the package {name.replace('_', '-')} (not installed: {e}); "
                        "pip install 'wmse_tf[export]'") from e


def versions():
    """{package: version} of the converter and runtime, as recorded in the model card."""
    return {m: _require(m).__version__ for m in ("tf2onnx", "onnx", "onnxruntime")}


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _errors_of(logger_name):
    """Yields the list of ERROR messages logged by `logger_name` (and its children) in the block."""
    handler = _Collect()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def unsupported(messages):
    """The op names in tf2onnx's error messages ('Unsupported ops: Counter({'Cholesky': 1})', ...)."""
    ops = []
    for message in messages:
        if message.startswith("Unsupported ops"):
            ops += re.findall(r"'(\w+)'", message)
        else:
            ops += [f"node {n}" for n in re.findall(r"Failed to convert node '([^']+)'", message)]
    return sorted(set(ops)) or [m.splitlines()[0][:120] for m in messages[:1]]


def convert(archive_dir, path, quantize="none", opset=OPSET):
    """Writes the ONNX model of the portable SavedModel at `archive_dir` to `path` (not atomic).

    Raises:
      UserError: a missing package, an unknown `quantize`, or ops tf2onnx cannot convert.
    """
    import tensorflow as tf

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize={quantize}: the ONNX export offers {', '.join(QUANTIZE)}")
    tf2onnx = _require("tf2onnx")
    onnx = _require("onnx")
    loaded = tf.saved_model.load(archive_dir)  # kept alive: the signature reads its variables
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    fn = tf.function(lambda images: loaded.signatures["serving_default"](images=images), autograph=False)
    with _errors_of("tf2onnx") as messages:
        model, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    if messages:
        raise UserError(f"ONNX export: tf2onnx {tf2onnx.__version__} cannot convert "
                        f"{', '.join(unsupported(messages))} (opset {opset})")
    onnx.checker.check_model(model)
    if quantize == "none":
        onnx.save(model, path)
        return path
    quantization = _require("onnxruntime.quantization").quantization
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "float.onnx")
        onnx.save(model, source)
        quantization.quantize_dynamic(source, path, weight_type=quantization.QuantType.QInt8)
    return path


def runner(path, threads=None):
    """fn(uint8 [B, S, S, 3] numpy) -> float32 [B, F] numpy, on ONNX Runtime's CPU provider.

    Args:
      threads: intra-op threads (default: ONNX Runtime's, one per core).
    """
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {name: images})[0]

    return run
