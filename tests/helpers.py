"""Shared helpers for the tests: tiny encoders and exports, run dirs, images, flagfiles, commands in-process."""

import contextlib
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from wmse_tf import onednn
from wmse_tf.core import encoders
from wmse_tf.export import saved_model as export, serving

SIZE = 16
SPEC = serving.InputSpec(SIZE, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def onednn_on():
    """True if TensorFlow's oneDNN custom ops are on in this process."""
    from tensorflow.python.util import _pywrap_util_port as port

    return bool(port.IsMklEnabled())


def skip_if_onednn_wrong(convs):
    """Skips a test whose numbers depend on `convs` when oneDNN is on and computes one of them wrong
    on this CPU (wmse_tf.onednn's check; tests/test_onednn.py tests that the check refuses them)."""
    wrong = onednn.cached_check(convs) if onednn_on() else {}
    if wrong:
        pytest.skip(f"oneDNN is on and computes {', '.join(f'{k} ({v[0]})' for k, v in wrong.items())} "
                    "wrong on this CPU: wmse_tf.onednn refuses it for this encoder (test_onednn)")


def tiny_encoder(size=SIZE, width=4, seed=0):
    """A ResNet-10 (one basic block per stage: quicker to trace than ResNet-18) of width `width` on
    size x size images, seeded."""
    keras.utils.set_random_seed(seed)
    return encoders.resnet(10, width=width, input_shape=(size, size, 3))


def images01(n=4, size=SIZE, seed=0):
    """Random float32 images in [0, 1], [n, size, size, 3]."""
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def normalized(x, spec=SPEC):
    return (x - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)


def export_tiny(base, encoder=None, name="tiny", spec=SPEC, **kwargs):
    """Exports a (tiny) encoder under `base`; returns (version dir, encoder)."""
    encoder = encoder or tiny_encoder()
    path = export.export_encoder(encoder, str(base), name, spec=spec, **kwargs)
    return path, encoder


def reload(path):
    return tf.saved_model.load(path)


def write_run_dir(run_dir, encoder, dataset, **flags):
    """A training-run directory as wmse_tf.train writes it: encoder.keras + flags.json."""
    os.makedirs(run_dir, exist_ok=True)
    encoder.save(os.path.join(run_dir, "encoder.keras"))
    with open(os.path.join(run_dir, "flags.json"), "w") as f:
        json.dump(dict(dataset=dataset, **flags), f)
    return str(run_dir)


def digits_images(n=64, size=SIZE):
    """The first n scikit-learn digits as uint8 RGB [n, size, size, 3] and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = tf.image.resize(d.images[:n, :, :, None] / 16.0, [size, size]).numpy()
    x = np.clip(np.round(np.tile(x, [1, 1, 1, 3]) * 255), 0, 255).astype(np.uint8)
    return x, d.target[:n].astype(np.int64)


def python_env():
    """Environment for `python -m ...` subprocesses: quiet TF, repo root importable."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def parse_flagfile(path):
    """The resolved TrainConfig dict of a flagfile, as `wmse_tf.train --flagfile=path` sees it."""
    from absl import flags

    from wmse_tf import train

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--flagfile={path}"])
    try:
        return train.config_from_flags().to_dict()
    finally:
        flags.FLAGS.unparse_flags()


@contextlib.contextmanager
def own_flags(define):
    """Defines one entry point's flags, hiding the project's others (they share names) meanwhile."""
    from absl import flags

    FLAGS = flags.FLAGS
    FLAGS.unparse_flags()
    hidden = [(module, f) for module, fl in FLAGS.flags_by_module_dict().items()
              if module.startswith(("wmse_tf", "zoo")) for f in fl]
    for name in {f.name for _, f in hidden}:
        delattr(FLAGS, name)
    before = set(FLAGS)
    define()
    try:
        yield
    finally:
        FLAGS.unparse_flags()
        for name in set(FLAGS) - before:
            delattr(FLAGS, name)
        for module, f in hidden:
            if f.name not in FLAGS:
                FLAGS[f.name] = f
            FLAGS.register_flag_by_module(module, f)


def run_command(main, argv, capsys):
    """`cli.run(main, argv)` in-process (inside `own_flags`): (exit code, stdout, stderr); code 0 for None."""
    from absl import flags

    from wmse_tf import cli

    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.run(main, argv=argv)
    finally:
        flags.FLAGS.unparse_flags()
    out = capsys.readouterr()
    return exited.value.code or 0, out.out, out.err
