"""A trained encoder against its baselines: the same encoder with random weights, and raw pixels.

`evaluate_with_baselines` is the demo's evaluation: frozen features of both splits for the
trained and the random-weights encoder, raw pixels, then `evaluator.evaluate_feature_sets`
(the three linear probes trained in one loop, k-NN specs sharing their matrix products).
The raw-pixel row does not depend on the run: it is cached per machine (`cache_dir`, default
`$XDG_CACHE_HOME/wmse_tf/baselines`), keyed by a hash of the pixels and labels themselves, the
evaluation protocol, the TF version and the CPU, and recomputed when any of them changes.
`evaluation_reserve` estimates the whole evaluation's seconds before training
(`evaluation.cost`), with the pixel row's share only when it is not cached.

Example:
  >>> rows, test_feats = evaluate_with_baselines("runs/fashion_mnist", "fashion_mnist", EvalConfig())
"""

import hashlib
import json
import os

import numpy as np

from wmse_tf import io as atomic_io
from wmse_tf.evaluation import cost, evaluator as eval_lib

PIXELS = "raw pixels"
TRAINED, RANDOM = "W-MSE encoder", "same encoder, random weights"


def pixel_features(dataset, split, data_dir, limit):
    """Raw pixels in [0, 1], flattened (the first channel only: gray images are tiled to RGB)."""
    from wmse_tf.data import datasets as data

    ds = data.load(dataset, split, data_dir)
    if limit:
        ds = ds.take(limit)
    x, y, gray = [], [], None
    for images, labels in ds.batch(4096).as_numpy_iterator():
        if gray is None:  # decided on the first batch, so that every row has the same length
            gray = bool(np.ptp(images.astype(np.int16), axis=-1).max() == 0)
        images = images[..., :1] if gray else images
        x.append(images.reshape(len(images), -1).astype(np.float32) / 255.0)
        y.append(labels)
    return np.concatenate(x), np.concatenate(y)


def pixel_sets(dataset, data_dir, limit_train=0, limit_test=0):
    """(train_x, train_y, test_x, test_y) of raw pixels."""
    from wmse_tf.data import datasets as data

    meta = data.info(dataset)
    return (*pixel_features(dataset, meta.train_split, data_dir, limit_train),
            *pixel_features(dataset, meta.test_split, data_dir, limit_test))


def pixel_cache_path(pixel_set, config, cache_dir=None):
    """Where the pixel row of these pixels under this protocol, TF and machine is cached."""
    from wmse_tf import onednn

    digest = hashlib.sha1()
    for a in pixel_set:
        digest.update(np.ascontiguousarray(a).tobytes())
    protocol = [repr(config.probe), list(config.knn)]  # the probe's dataclass holds every hyperparameter
    digest.update(json.dumps([protocol, onednn.machine_id()]).encode())
    return os.path.join(cache_dir or atomic_io.cache_dir("baselines"), f"pixels-{digest.hexdigest()[:16]}.json")


def evaluate_with_baselines(model_dir, dataset, config, seed=0, pixels=True, cache_dir=None, log=print):
    """{row name: results} for the trained encoder, random weights and (if `pixels`) raw pixels, and
    the test features {name: (x, y)} of the two encoders."""
    from wmse_tf.data import datasets as data

    meta = data.info(dataset)
    sets = {}
    for name, random_init in ((TRAINED, False), (RANDOM, True)):
        log(f"\n[eval] {name}: features of {meta.train_split} and {meta.test_split}")
        model = eval_lib.open_model(model_dir, random_init=random_init, seed=seed)
        sets[name] = (*eval_lib.eval_split(model, dataset, meta.train_split, config, config.limit_train),
                      *eval_lib.eval_split(model, dataset, meta.test_split, config, config.limit_test))
    cached, path = None, None
    if pixels:
        pixel_set = pixel_sets(dataset, config.data_dir, config.limit_train, config.limit_test)
        path = pixel_cache_path(pixel_set, config, cache_dir)
        cached = atomic_io.read_json(path)
        if cached is None:
            sets[PIXELS] = pixel_set
    log(f"\n[eval] {', '.join(sets)}: linear probes trained together, and k-NN"
        + (f" (raw pixels: cached, {path})" if cached else ""))
    rows = eval_lib.evaluate_feature_sets(sets, config, meta.num_classes)
    for name, (train_x, train_y, _, test_y) in sets.items():
        rows[name].update(num_train=len(train_y), num_test=len(test_y), num_features=int(train_x.shape[1]))
    if cached is not None:
        rows[PIXELS] = dict(cached, cached=path)
    elif pixels:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_io.write_json(path, rows[PIXELS])
        except OSError:
            pass  # no writable cache: computed again next time
    test_feats = {name: (sets[name][2], sets[name][3]) for name in (TRAINED, RANDOM)}
    return rows, test_feats


def evaluation_reserve(dataset, arch, width, images_per_step, config, pixels=True, cache_dir=None):
    """(step_seconds -> estimated seconds of `evaluate_with_baselines` here, calibration): a few
    seconds of probe epochs and k-NN chunks timed now (`evaluation.cost`)."""
    from wmse_tf.core import archs

    if pixels:  # loaded anyway to know whether their row is cached; they give the split sizes too
        pixel_set = pixel_sets(dataset, config.data_dir, config.limit_train, config.limit_test)
        train_n, test_n = len(pixel_set[1]), len(pixel_set[3])
    else:
        train_n, test_n = _split_sizes(dataset, config)
    features = width * (8 if archs.DEPTHS[archs.ARCHS[arch]][0] == "basic" else 32)  # as encoders.resnet
    dims = [features, features]
    if pixels and atomic_io.read_json(pixel_cache_path(pixel_set, config, cache_dir)) is None:
        dims.append(pixel_set[0].shape[1])
    fixed = cost.calibrate(train_n, test_n, dims, config.probe.epochs if config.probe else 0)
    return (lambda step_s: cost.estimate(fixed, step_s, 2 * (train_n + test_n), images_per_step)), fixed


def _split_sizes(dataset, config):
    from wmse_tf.data import datasets as data

    meta = data.info(dataset)
    sizes = []
    for split, limit in ((meta.train_split, config.limit_train), (meta.test_split, config.limit_test)):
        ds = data.load(dataset, split, config.data_dir)
        n = int(ds.cardinality())
        n = n if n >= 0 else int(ds.reduce(0, lambda count, _: count + 1))
        sizes.append(min(n, limit) if limit else n)
    return sizes
