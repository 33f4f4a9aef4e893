"""Export an encoder as a SavedModel in the TF Serving layout, with a model card.

Layout (what `tensorflow_model_server --model_base_path=<export_dir>/<name>` reads):

  <export_dir>/<name>/<version>/saved_model.pb, variables/, assets/, fingerprint.pb
  <export_dir>/<name>/<version>/model_card.json

The SavedModel holds the encoder only (no projector) behind the raw-image graph of
`wmse_tf.export.serving.EncoderModule` (signatures serving_default, serving_uint8,
serving_bytes; TF Hub `__call__`). Every signature computes in float32, whatever precision
the encoder was trained in: the serving graph is built from an encoder rebuilt under the
float32 policy with the trained weights (`with_precision`). A bfloat16 graph (Keras'
`mixed_bfloat16`) only on request (`precision="bfloat16"`); the card's `serving_precision`
says which. The model card lists dataset, flags, metrics, the input spec, the serving
precision and the sha256 of every other file of the version directory. Writing is
atomic: everything goes to a hidden temp dir beside the version dir (TF Serving
ignores non-numeric names), which is then renamed into place.

Example:
  >>> path = wmse_tf.export.saved_model.export_encoder(encoder, "exports", "wmse_fmnist", dataset="fashion_mnist")
  >>> features = tf.saved_model.load(path)(images01)
"""

import datetime
import hashlib
import json
import os

import keras
import tensorflow as tf

from wmse_tf import atomic_io
from wmse_tf.export import serving

CARD_NAME = "model_card.json"
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # serving precision -> Keras dtype policy


def _layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def with_precision(encoder, precision="float32"):
    """`encoder` computing in `precision` ("float32" or "bfloat16"), with its weights.

    Returned as it is when every layer already has that policy; else rebuilt layer by layer
    (`keras.models.clone_model`) under the policy, the weights copied (float32 variables under
    both policies, so the copy is exact).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    policy = PRECISIONS[precision]
    if all(layer.dtype_policy.name == policy for layer in _layers(encoder)):
        return encoder

    def clone(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(encoder, clone_function=clone, recursive=True)
    copy.set_weights(encoder.get_weights())
    return copy


def input_spec_for(dataset, image_size=None):
    """InputSpec (size, mean/std, eval resize) of a registered dataset's recipe."""
    from wmse_tf.data import augment  # lazy: pulls in the data registry

    cfg = augment.recipe(dataset)
    size = image_size or cfg.image_size
    resize = cfg.eval_resize
    if resize and size != cfg.image_size:
        resize = max(size, round(resize * size / cfg.image_size))
    return serving.InputSpec(size, tuple(cfg.mean), tuple(cfg.std), resize)


def input_spec_from_flags(flags):
    """InputSpec of a training run's flags.json (its resolved augmentation), else of its dataset."""
    aug = flags.get("augment")
    if not aug:
        return input_spec_for(flags["dataset"])
    return serving.InputSpec(int(aug["image_size"]), tuple(aug["mean"]), tuple(aug["std"]),
                             aug.get("eval_resize"))


def encoder_image_size(encoder):
    """The square input side of a Keras encoder, or None if not static."""
    shape = encoder.input_shape
    if shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    return None


def file_hashes(directory, skip=(CARD_NAME,)):
    """{relative path: sha256 hex} of every file under `directory`, sorted."""
    hashes = {}
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory).replace(os.sep, "/")
            if rel in skip:
                continue
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            hashes[rel] = digest.hexdigest()
    return dict(sorted(hashes.items()))


def next_version(model_dir):
    """1 + the largest numeric sub-directory of `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def latest_version_dir(path):
    """`path` if it is a SavedModel dir, else its largest numeric sub-dir holding one."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(d) for d in os.listdir(path) if d.isdigit()
                       and os.path.exists(os.path.join(path, d, "saved_model.pb"))), reverse=True)
    if not versions:
        raise FileNotFoundError(f"{path} holds neither saved_model.pb nor <version>/saved_model.pb")
    return os.path.join(path, str(versions[0]))


def read_card(saved_model_dir):
    """The model card of a version dir, or {} if it has none."""
    path = os.path.join(saved_model_dir, CARD_NAME)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def verify_hashes(saved_model_dir, card=None):
    """Returns the files whose sha256 differs from the card's (empty when intact)."""
    card = card if card is not None else read_card(saved_model_dir)
    expected = card.get("files", {})
    actual = file_hashes(saved_model_dir)
    return sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))


WEIGHTS_LICENSE = "Apache-2.0 (the weights, as the code: LICENSE)"


def export_encoder(encoder, export_dir, name, version=None, *, dataset=None, spec=None,
                   card=None, overwrite=False, precision="float32"):
    """Writes `encoder` as a SavedModel at `<export_dir>/<name>/<version>/`, atomically.

    Args:
      encoder: keras.Model, normalized images [B, S, S, 3] -> features [B, F].
      export_dir: base directory; the model goes to `<export_dir>/<name>/<version>`.
      name: model name (the TF Serving `--model_name`).
      version: positive int; default 1 + the largest existing version.
      dataset: registered dataset name; gives the InputSpec (mean/std, eval resize)
        when `spec` is not given.
      spec: wmse_tf.export.serving.InputSpec; overrides `dataset`'s.
      card: extra model-card fields (e.g. flags, epochs, metrics), JSON-serializable.
      overwrite: replace an existing version dir (else FileExistsError).
      precision: what the serving graph computes in, "float32" (default, whatever the
        encoder's training policy) or "bfloat16" (on request; the card says so).

    Returns:
      The version directory.
    """
    encoder = with_precision(encoder, precision)  # first: a bad precision fails before any work
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"export_encoder: name must be a plain directory name, got {name!r}")
    if spec is None:
        if dataset is None:
            raise ValueError("export_encoder: give `dataset` (registered name) or `spec` (InputSpec)")
        spec = input_spec_for(dataset, encoder_image_size(encoder))
    size = encoder_image_size(encoder)
    if size is not None and size != spec.image_size:
        raise ValueError(f"export_encoder: the encoder takes {size}x{size} images but "
                         f"spec.image_size={spec.image_size}")
    model_dir = os.path.join(export_dir, name)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"export_encoder: version must be >= 1, got {version}")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise FileExistsError(f"export_encoder: {final} exists; pass overwrite=True or a new version")
    with atomic_io.publishing_dir(final) as tmp:  # hidden temp dir: TF Serving ignores it
        module = serving.EncoderModule(encoder, spec)
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        num_features = int(module.serve.get_concrete_function().structured_outputs.shape[-1])
        meta = {
            "name": name, "version": version, "dataset": dataset,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tensorflow": tf.__version__,
            "encoder": {"name": encoder.name, "params": int(encoder.count_params()),
                        "num_features": num_features},
            "input": dict(spec.to_json(), signatures={
                "serving_default": "images: float32 [batch, H, W, 3] in [0, 1]",
                "serving_uint8": "images: uint8 [batch, H, W, 3] in [0, 255]",
                "serving_bytes": "image_bytes: string [batch] of encoded JPEG/PNG/GIF/BMP"}),
            "output": {serving.OUTPUT_KEY: f"float32 [batch, {num_features}]"},
            **(card or {}),
            "serving_precision": precision,
            "license": WEIGHTS_LICENSE,
            "files": file_hashes(tmp),
        }
        write_json(os.path.join(tmp, CARD_NAME), meta)
    return final


def write_json(path, obj):
    """Writes JSON atomically (wmse_tf.atomic_io), numpy scalars as numbers, sets/tuples as lists."""
    return atomic_io.write_json(path, obj, default=_jsonable)


def _jsonable(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)
