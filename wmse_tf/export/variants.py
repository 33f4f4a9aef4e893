"""The exported files' formats and quantizations, by name; no TensorFlow (flags check them early).

  FORMATS            {format: (file suffix, quantizations offered)}
  file_name(f, q)    encoder.onnx, encoder.tflite, encoder_<q>.<suffix>
  parse(items)       ["onnx", "litert:int8", ...] -> [("onnx", "none"), ("litert", "int8"), ...]

Example:
  >>> parse(["litert:float16"])
  [('litert', 'float16')]
"""

from wmse_tf.errors import UserError

FORMATS = {"onnx": (".onnx", ("none", "int8")), "litert": (".tflite", ("none", "float16", "int8"))}


def quantizations(fmt):
    if fmt not in FORMATS:
        raise UserError(f"--format={fmt}: choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt][1]


def file_name(fmt, quantize="none"):
    """encoder.onnx, encoder.tflite, encoder_<quantize>.<ext>."""
    offered = quantizations(fmt)
    if quantize not in offered:
        raise UserError(f"--quantize={quantize}: --format={fmt} offers {', '.join(offered)}")
    return "encoder" + ("" if quantize == "none" else f"_{quantize}") + FORMATS[fmt][0]


def parse(items, flag="export_formats"):
    """`format[:quantize]` items -> [(format, quantize)], each checked (UserError naming `--flag`)."""
    out = []
    for item in items:
        fmt, _, quantize = item.strip().partition(":")
        try:
            file_name(fmt, quantize or "none")
        except UserError as e:
            raise UserError(f"--{flag}={','.join(items)}: {e}") from e
        out.append((fmt, quantize or "none"))
    return out
