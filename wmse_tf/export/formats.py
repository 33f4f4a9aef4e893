"""ONNX and LiteRT files beside a SavedModel export, with parity and the model card updated.

  export_format(version_dir, "onnx" | "litert", quantize)  -> the card's record of the file

writes `<version_dir>/<file>` (`file_name`: encoder.onnx, encoder.tflite,
encoder_float16.tflite, encoder_int8.tflite, encoder_int8.onnx) from the portable graph
(`wmse_tf.export.portable`), atomically (`wmse_tf.atomic_io.writing`), then records it in the model
card (`exports.<file>`: format, quantization, sha256, converter and runtime versions, input
contract, parity) and refreshes the card's `files` hashes. A conversion that fails leaves
the version dir as it was.

Parity (`parity`): the file's features against the SavedModel's `serving_default` on the
given images (uint8 / 255) and against the float32 portable graph run by TensorFlow: max
abs difference and cosine similarity (mean, min). One contract: a float file must match the
float32 graph, and the SavedModel's `serving_default` when it computes in float32 (every
export unless asked otherwise: `serving_precision` in the card), to `TOLERANCE`, or nothing
is published. A SavedModel exported in bfloat16 on request (or before float32 serving
graphs) differs from the float files by bfloat16 rounding, recorded in the parity.

Example:
  >>> record = export_format("zoo/exports/wmse2_fashion_mnist/2", "litert", "int8", images=uint8_images)
"""

import os
import tempfile

import numpy as np

from wmse_tf import atomic_io
from wmse_tf.errors import UserError
from wmse_tf.export import litert, onnx, portable, saved_model, variants

MODULES = {"onnx": onnx, "litert": litert}
TOLERANCE = 1e-4
PROBE_IMAGES = 64  # parity images when none are given (random uint8, seeded)


def file_name(fmt, quantize="none"):
    """encoder.onnx, encoder.tflite, encoder_<quantize>.<ext> (`wmse_tf.export.variants`)."""
    return variants.file_name(fmt, quantize)


def module_of(fmt):
    variants.quantizations(fmt)  # a UserError for an unknown format
    return MODULES[fmt]


def runner(path, threads=None):
    """fn(uint8 images) -> features for an .onnx or .tflite file."""
    for module in MODULES.values():
        if os.fspath(path).endswith(module.SUFFIX):
            return module.runner(path, threads)
    raise UserError(f"{path}: not an exported encoder (.onnx or .tflite)")


def batched(fn, images, batch_size=500):
    return np.concatenate([np.asarray(fn(images[i:i + batch_size])) for i in range(0, len(images), batch_size)])


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-30)


def compare(features, reference):
    cos = cosine(features, reference)
    return {"max_abs": float(np.abs(features - reference).max()), "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min())}


def serving_features(saved_model_, images, batch_size=500):
    """`serving_default` of a SavedModel (dir or loaded) on uint8 images (as images / 255)."""
    import tensorflow as tf

    if isinstance(saved_model_, (str, os.PathLike)):
        saved_model_ = tf.saved_model.load(os.fspath(saved_model_))
    serve = saved_model_.signatures["serving_default"]
    return batched(lambda x: serve(images=tf.constant(x.astype(np.float32) / 255.0))["feature_vector"].numpy(),
                   images, batch_size)


def parity(path, images, serving, float32, batch_size=500):
    """{"images", "vs_serving_default", "vs_float32_graph"} of the file at `path`."""
    ours = batched(runner(path), images, batch_size)
    return {"images": int(len(images)), "vs_serving_default": compare(ours, serving),
            "vs_float32_graph": compare(ours, float32)}


def probe_images(spec, n=PROBE_IMAGES, seed=0):
    size = spec.image_size
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def export_format(version_dir, fmt, quantize="none", images=None, images_name=None):
    """Converts, checks and publishes one file beside the SavedModel; returns its card record.

    Args:
      version_dir: a SavedModel export (`<export_dir>/<name>/<version>`) with its model card.
      fmt: "onnx" or "litert".
      quantize: "none", "float16" (LiteRT) or "int8".
      images: uint8 [N, S, S, 3] for the parity check (default: PROBE_IMAGES random ones).
      images_name: what `images` are, for the card (e.g. "fashion_mnist test, all 10000").

    Raises:
      UserError: a missing package, an unsupported op or quantization, a card without
        the flags that rebuild the encoder, or a float file off by more than TOLERANCE.
    """
    return export_formats(version_dir, [(fmt, quantize)], images, images_name)[file_name(fmt, quantize)]


def export_formats(version_dir, variants, images=None, images_name=None):
    """`export_format` for each (format, quantize) of `variants`, sharing the SavedModel's load,
    the float32 rebuild and the parity references; returns {file name: record}."""
    import tensorflow as tf

    names = [(fmt, q, file_name(fmt, q)) for fmt, q in variants]  # all checked before any work
    converters = {fmt: module_of(fmt).versions() for fmt, _, _ in names}  # a missing package: now
    loaded = tf.saved_model.load(version_dir)
    encoder, spec, card = portable.float_encoder(version_dir, loaded)
    if images is None:
        images, images_name = probe_images(spec), f"{PROBE_IMAGES} random uint8 images (seed 0)"
    float32 = batched(lambda x: encoder(portable_input(x, spec), training=False).numpy(), images)
    serving = serving_features(loaded, images)
    precision = serving_precision(card)
    card["exports"] = {k: v for k, v in card.get("exports", {}).items()  # drop the records of removed files
                       if os.path.exists(os.path.join(version_dir, k))}
    records = {}
    with tempfile.TemporaryDirectory() as scratch:
        archive = portable.write_archive(encoder, spec, os.path.join(scratch, "portable"))
        for fmt, quantize, name in names:
            module = module_of(fmt)
            target = os.path.join(version_dir, name)
            with atomic_io.writing(target) as tmp:
                module.convert(archive, tmp, quantize)
                check = parity(tmp, images, serving, float32)
                against = ["vs_float32_graph"] + (["vs_serving_default"] if precision == "float32" else [])
                off = {k: check[k]["max_abs"] for k in against if check[k]["max_abs"] > TOLERANCE}
                if quantize == "none" and off:
                    raise UserError(f"{fmt} export of {version_dir}: features differ "
                                    + ", ".join(f"{k} by {v:.3g}" for k, v in off.items())
                                    + f" (> {TOLERANCE:g}); not published")
            records[name] = {
                "format": fmt, "quantize": quantize, "sha256": saved_model.file_hashes(version_dir)[name],
                "size_bytes": os.path.getsize(target), "converter": converters[fmt],
                "tensorflow": tf.__version__, "input": portable.input_contract(spec, int(float32.shape[1])),
                "saved_model_computes_in": precision,
                "parity": dict(check, on=images_name or f"{len(images)} images", tolerance=TOLERANCE)}
            card["exports"][name] = records[name]
            card["files"] = saved_model.file_hashes(version_dir)
            try:
                saved_model.write_json(os.path.join(version_dir, saved_model.CARD_NAME), card)
            except BaseException:  # the card is unchanged: take back the file it does not list
                os.remove(target)
                raise
    return records


def serving_precision(card):
    """"float32" or "bfloat16": what a SavedModel's signatures compute in, from its card (cards
    written before `serving_precision`: the training policy, which their graphs kept)."""
    if card.get("serving_precision"):
        return card["serving_precision"]
    return "bfloat16" if "bfloat16" in str((card.get("flags") or {}).get("mixed_precision")) else "float32"


def portable_input(images, spec):
    """The portable graph's preprocessing in TensorFlow (for the float32 reference)."""
    from wmse_tf.data import eval_transform

    return eval_transform.normalize(eval_transform.to_float(images), spec.mean, spec.std)
