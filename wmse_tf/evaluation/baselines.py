"""A trained encoder against its baselines: the same encoder with random weights, and raw pixels.

`evaluate_with_baselines` is the demo's evaluation: frozen features of both splits for the
trained and the random-weights encoder, raw pixels, then `evaluator.evaluate_feature_sets`
(the linear probes trained in one loop, k-NN specs sharing their matrix products).
Neither baseline depends on the run: raw pixels are the data, and the random weights are the
architecture's initializers under the seed. So both rows are cached per machine (`cache_dir`,
default `$XDG_CACHE_HOME/wmse_tf/baselines`; the random row with its test features, for the 2-D
map), keyed by hashes of the pixels and labels themselves (and of the random weights, the eval
transform and the dtype policy), the evaluation protocol, the TF version and the CPU, and recomputed when any of them
changes: a demo after the first evaluates only its trained encoder. `evaluation_reserve` estimates
the whole evaluation's seconds before training (`evaluation.cost`), for the rows not cached.

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


def data_digest(pixel_set):
    """A hash of the pixels and labels themselves: the data's identity in the cached rows' keys."""
    digest = hashlib.sha1()
    for a in pixel_set:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def weights_digest(encoder):
    """A hash of an encoder's weights (the random-weights row's identity)."""
    digest = hashlib.sha1()
    for w in encoder.get_weights():
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def row_cache_path(kind, parts, config, cache_dir=None):
    """Where the row `kind` ("pixels", "random") of these `parts` (JSON: data and weights digests, eval
    transform) under this protocol, TF and machine is cached."""
    from wmse_tf import onednn

    protocol = [repr(config.probe), list(config.knn), config.rank_images]  # the probe's dataclass: every
    key = json.dumps([kind, parts, protocol, onednn.machine_id()], sort_keys=True, default=str)  # hyperparameter
    name = f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    return os.path.join(cache_dir or atomic_io.cache_dir("baselines"), name)


def random_row_parts(random_encoder, data_key, augment, image_size, policy):
    """`row_cache_path` parts of the random-weights row: the random weights of the run's architecture
    (`evaluator.random_weights`), computed under the dtype policy `policy` (the run's --mixed_precision)."""
    augment = json.loads(json.dumps(augment, default=list))  # as flags.json holds it: lists, not tuples
    return [data_key, weights_digest(random_encoder), augment, image_size, policy]


def read_row(path, with_features=False):
    """The cached row at `path` ({...} or None); with its test features (x, y) when `with_features`."""
    row = atomic_io.read_json(path)
    if row is None or not with_features:
        return row
    try:
        with np.load(path[:-len(".json")] + ".npz", allow_pickle=False) as z:
            return dict(row, test_features=(z["x"], z["y"]))
    except (OSError, KeyError, ValueError):
        return None


def write_row(path, row, test_features=None):
    """Caches a row (and its test features); a cache that cannot be written is skipped."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if test_features is not None:
            with atomic_io.writing(path[:-len(".json")] + ".npz", suffix=".npz") as tmp:
                np.savez(tmp, x=test_features[0], y=test_features[1])
        atomic_io.write_json(path, row)
    except OSError:
        pass  # computed again next time


def evaluate_with_baselines(model_dir, dataset, config, seed=0, pixels=True, cache_dir=None, log=print):
    """{row name: results} for the trained encoder, random weights and (if `pixels`) raw pixels, and
    the test features {name: (x, y)} of the two encoders. The random-weights and raw-pixel rows come
    from the cache when this machine computed them before (a row then has "cached": its path)."""
    from wmse_tf.data import datasets as data

    meta = data.info(dataset)
    pixel_set = pixel_sets(dataset, config.data_dir, config.limit_train, config.limit_test)
    data_key = data_digest(pixel_set)
    models = {TRAINED: eval_lib.open_model(model_dir), RANDOM: eval_lib.open_model(model_dir, True, seed)}
    random_encoder = models[RANDOM].feature_fn.encoder
    paths = {RANDOM: row_cache_path("random", random_row_parts(
        random_encoder, data_key, models[RANDOM].augment, models[RANDOM].image_size,
        random_encoder.dtype_policy.name), config, cache_dir)}
    if pixels:
        paths[PIXELS] = row_cache_path("pixels", [data_key], config, cache_dir)
    cached = {name: read_row(path, with_features=name == RANDOM) for name, path in paths.items()}
    cached = {name: row for name, row in cached.items() if row is not None}
    sets = {}
    for name, model in models.items():
        if name in cached:
            continue
        log(f"\n[eval] {name}: features of {meta.train_split} and {meta.test_split}")
        sets[name] = (*eval_lib.eval_split(model, dataset, meta.train_split, config, config.limit_train),
                      *eval_lib.eval_split(model, dataset, meta.test_split, config, config.limit_test))
    if pixels and PIXELS not in cached:
        sets[PIXELS] = pixel_set
    log(f"\n[eval] {', '.join(sets)}: linear probes trained together, and k-NN"
        + "".join(f"\n       {name}: cached, {paths[name]}" for name in cached))
    rows = eval_lib.evaluate_feature_sets(sets, config, meta.num_classes)
    for name, (train_x, train_y, _, test_y) in sets.items():
        rows[name].update(num_train=len(train_y), num_test=len(test_y), num_features=int(train_x.shape[1]))
    test_feats = {name: (sets[name][2], sets[name][3]) for name in (TRAINED, RANDOM) if name in sets}
    for name, row in cached.items():
        if name == RANDOM:
            test_feats[RANDOM] = row.pop("test_features")
        rows[name] = dict(row, cached=paths[name])
    for name in set(paths) - set(cached):
        write_row(paths[name], rows[name], test_feats.get(name))
    rows = {name: rows[name] for name in (TRAINED, RANDOM, PIXELS) if name in rows}
    return rows, test_feats


def evaluation_reserve(cfg, config, pixels=True, cache_dir=None):
    """(step_seconds -> estimated seconds of `evaluate_with_baselines` for the run of TrainConfig
    `cfg` here, calibration): a few seconds of probe epochs and k-NN chunks timed now
    (`evaluation.cost`), for the rows not cached."""
    from wmse_tf.core import encoders
    from wmse_tf.evaluation.evaluator import random_weights

    pixel_set = pixel_sets(cfg.dataset, config.data_dir, config.limit_train, config.limit_test)
    train_n, test_n = len(pixel_set[1]), len(pixel_set[3])
    data_key = data_digest(pixel_set)
    encoder = encoders.build(cfg.arch, cfg.stem, cfg.width, cfg.image_size)  # the run's, untrained
    parts = random_row_parts(random_weights(encoder, cfg.seed), data_key, cfg.to_dict().get("augment"),
                             cfg.image_size, cfg.mixed_precision)
    random_cached = read_row(row_cache_path("random", parts, config, cache_dir), with_features=True) is not None
    features = encoder.output.shape[-1]
    dims = [features] + ([] if random_cached else [features])
    pixels_cached = pixels and read_row(row_cache_path("pixels", [data_key], config, cache_dir)) is not None
    if pixels and not pixels_cached:
        dims.append(pixel_set[0].shape[1])
    fixed = cost.calibrate(train_n, test_n, dims, config.probe.epochs if config.probe else 0)
    fixed["cached_rows"] = [name for name, hit in ((RANDOM, random_cached), (PIXELS, pixels_cached)) if hit]
    encoders_run = 1 if random_cached else 2
    images_per_step = cfg.batch_size * cfg.num_views
    return (lambda step_s: cost.estimate(fixed, step_s, encoders_run * (train_n + test_n), images_per_step)), fixed
