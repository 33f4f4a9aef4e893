"""A trained encoder against its baselines: the same encoder with random weights, and raw pixels.

`evaluate_with_baselines` is the demo's evaluation: frozen features of both splits for the
trained and the random-weights encoder, raw pixels, then `evaluator.evaluate_feature_sets`
(the linear probes trained in one loop, k-NN specs sharing their matrix products).
Neither baseline depends on the run: raw pixels are the data, and the random weights are the
architecture's initializers under the seed. So both rows are cached per machine (`cache_dir`,
default `$XDG_CACHE_HOME/wmse_tf/baselines`; the random row with its test features, for the 2-D
map), keyed by hashes of the pixels and labels themselves (and of the random weights, the eval
transform and the dtype policy), the evaluation protocol, the TF version and the CPU, and recomputed when any of them
changes: a demo after the first evaluates only its trained encoder. Before computing a row on a
new machine, the rows shipped for the demo's default recipe are looked up (`baseline_rows`: the
same key without the CPU), so a first demo evaluates its trained encoder only, and the random
encoder's test features for the map. `evaluation_reserve` estimates the whole evaluation's seconds
before training (`cost`), for the rows neither cached nor shipped.

Example:
  >>> rows, test_feats = evaluate_with_baselines("runs/fashion_mnist", "fashion_mnist", EvalConfig())
"""

import hashlib
import json
import os

import numpy as np

from wmse_tf import atomic_io
from wmse_tf.demo import baseline_rows, cost
from wmse_tf.evaluation import evaluator as eval_lib

PIXELS = "raw pixels"
TRAINED, RANDOM = "W-MSE encoder", "same encoder, random weights"
EVAL_TRANSFORM = ("image_size", "mean", "std", "eval_resize")  # what of an augment config the features see


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


def protocol(config):
    """What of an EvalConfig the rows depend on: the probe's dataclass (every hyperparameter), the
    k-NN specs and the effective rank's images."""
    return [repr(config.probe), list(config.knn), config.rank_images]


def find_row(kind, parts, config, cache_dir=None, with_features=False, reuse=True):
    """(row, where) of a row computed before: this machine's cache ("cached": its path), else the
    rows shipped with wmse_tf (`baseline_rows`: "shipped": provenance; no test features);
    (None, None) when it must be computed, or when not `reuse`."""
    if not reuse:
        return None, None
    path = row_cache_path(kind, parts, config, cache_dir)
    row = read_row(path, with_features)
    if row is not None:
        return dict(row, cached=path), path
    row = baseline_rows.read(kind, parts, protocol(config))
    if row is not None:
        return row, baseline_rows.path(kind, parts, protocol(config))
    return None, None


def row_cache_path(kind, parts, config, cache_dir=None):
    """Where the row `kind` ("pixels", "random") of these `parts` (JSON: data and weights digests, eval
    transform) under this protocol, TF and machine is cached."""
    from wmse_tf import onednn

    key = json.dumps([kind, parts, protocol(config), onednn.machine_id()], sort_keys=True, default=str)
    name = f"{kind}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"
    return os.path.join(cache_dir or atomic_io.cache_dir("baselines"), name)


def random_row_parts(random_encoder, data_key, augment, image_size, policy):
    """`row_cache_path` parts of the random-weights row: the random weights of the run's architecture
    (`evaluator.random_weights`), its eval transform (the EVAL_TRANSFORM fields of the run's augment
    config: the training views' draws do not change the frozen features), computed under the dtype
    policy `policy` (the run's --mixed_precision)."""
    augment = json.loads(json.dumps(augment, default=list))  # as flags.json holds it: lists, not tuples
    transform = {k: augment.get(k) for k in EVAL_TRANSFORM} if augment else augment
    return [data_key, weights_digest(random_encoder), transform, image_size, policy]


def row_parts(random_model, data_key, pixels=True):
    """{row name: (kind, parts)} of the rows that do not depend on the run, for `find_row`: the
    random-weights row of `random_model` (`evaluator.open_model(run, random_init=True)`) and, if
    `pixels`, the raw-pixel row."""
    encoder = random_model.feature_fn.encoder
    return _rows(random_row_parts(encoder, data_key, random_model.augment, random_model.image_size,
                                  compute_policy(encoder)), data_key, pixels)


def compute_policy(encoder):
    """The dtype policy the encoder's layers compute in (a loaded model reports float32 as its own policy
    even when its layers are mixed_bfloat16): the first layer with weights'."""
    return next((layer.dtype_policy.name for layer in encoder.layers if layer.weights), encoder.dtype_policy.name)


def recipe_row_parts(cfg, data_key, pixels=True):
    """(`row_parts`, feature dim) of TrainConfig `cfg`'s run before it is trained: the random weights
    its evaluation will draw (`evaluator.random_weights` of its architecture under `cfg.seed`), its
    eval transform and precision as its flags.json will hold them."""
    from wmse_tf.core import encoders
    from wmse_tf.evaluation.evaluator import random_weights

    encoder = random_weights(encoders.build(cfg.arch, cfg.stem, cfg.width, cfg.image_size), cfg.seed)
    parts = random_row_parts(encoder, data_key, cfg.to_dict().get("augment"), cfg.image_size, cfg.mixed_precision)
    return _rows(parts, data_key, pixels), encoder.output.shape[-1]


def _rows(random_parts, data_key, pixels):
    """{row name: (kind, parts)}: the random-weights row and, if `pixels`, the raw-pixel row."""
    rows = {RANDOM: ("random", random_parts)}
    if pixels:
        rows[PIXELS] = ("pixels", [data_key])
    return rows


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


def evaluate_with_baselines(model_dir, dataset, config, seed=0, pixels=True, cache_dir=None, log=print,
                            reuse=True):
    """{row name: results} for the trained encoder, random weights and (if `pixels`) raw pixels, and
    the test features {name: (x, y)} of the two encoders. The random-weights and raw-pixel rows come
    from this machine's cache when it computed them before (a row then has "cached": its path), else
    from the rows shipped with wmse_tf ("shipped": provenance; the random encoder's test features
    are then computed, for the 2-D map); the others, and all when not `reuse`, are computed and cached."""
    from wmse_tf.data import datasets as data

    meta = data.info(dataset)
    pixel_set = pixel_sets(dataset, config.data_dir, config.limit_train, config.limit_test)
    data_key = data_digest(pixel_set)
    models = {TRAINED: eval_lib.open_model(model_dir), RANDOM: eval_lib.open_model(model_dir, True, seed)}
    parts = row_parts(models[RANDOM], data_key, pixels)
    found = {name: find_row(kind, part, config, cache_dir, with_features=name == RANDOM, reuse=reuse)
             for name, (kind, part) in parts.items()}
    found = {name: hit for name, hit in found.items() if hit[0] is not None}
    sets, test_feats = {}, {}
    for name, model in models.items():
        if name in found:
            if "test_features" not in found[name][0]:  # a shipped row: the map still needs them
                log(f"\n[eval] {name}: features of {meta.test_split} (for the map)")
                test_feats[name] = eval_lib.eval_split(model, dataset, meta.test_split, config, config.limit_test)
            continue
        log(f"\n[eval] {name}: features of {meta.train_split} and {meta.test_split}")
        sets[name] = (*eval_lib.eval_split(model, dataset, meta.train_split, config, config.limit_train),
                      *eval_lib.eval_split(model, dataset, meta.test_split, config, config.limit_test))
    if pixels and PIXELS not in found:
        sets[PIXELS] = pixel_set
    log(f"\n[eval] {', '.join(sets)}: linear probes trained together, and k-NN"
        + "".join(f"\n       {name}: {'cached' if 'cached' in row else 'shipped with wmse_tf'}, {where}"
                  for name, (row, where) in found.items()))
    rows = eval_lib.evaluate_feature_sets(sets, config, meta.num_classes)
    for name, (train_x, train_y, _, test_y) in sets.items():
        rows[name].update(num_train=len(train_y), num_test=len(test_y), num_features=int(train_x.shape[1]))
    test_feats.update({name: (sets[name][2], sets[name][3]) for name in (TRAINED, RANDOM) if name in sets})
    for name, (row, _) in found.items():
        if "test_features" in row:
            test_feats[name] = row.pop("test_features")
        rows[name] = row
    for name in set(parts) - set(found):
        write_row(row_cache_path(*parts[name], config, cache_dir), rows[name], test_feats.get(name))
    rows = {name: rows[name] for name in (TRAINED, RANDOM, PIXELS) if name in rows}
    return rows, test_feats


def evaluation_reserve(cfg, config, pixels=True, cache_dir=None, reuse=True):
    """(step_seconds -> estimated seconds of `evaluate_with_baselines` for the run of TrainConfig
    `cfg` here, calibration): a few seconds of probe epochs and k-NN chunks timed now
    (`cost`), for the rows neither cached nor shipped (`find_row`)."""
    pixel_set = pixel_sets(cfg.dataset, config.data_dir, config.limit_train, config.limit_test)
    train_n, test_n = len(pixel_set[1]), len(pixel_set[3])
    parts, features = recipe_row_parts(cfg, data_digest(pixel_set), pixels)
    found = {name: find_row(kind, part, config, cache_dir, with_features=name == RANDOM, reuse=reuse)[0]
             for name, (kind, part) in parts.items()}
    random_row, pixels_row = found[RANDOM], found.get(PIXELS)
    dims = [features] + ([] if random_row else [features])
    if pixels and pixels_row is None:
        dims.append(pixel_set[0].shape[1])
    fixed = cost.calibrate(train_n, test_n, dims, config.probe.epochs if config.probe else 0)
    for origin in ("cached", "shipped"):  # fixed["cached_rows"], fixed["shipped_rows"]
        fixed[f"{origin}_rows"] = [name for name, row in found.items() if row and origin in row]
    feature_images = train_n + test_n  # the trained encoder's, and the random one's unless cached
    if random_row is None:
        feature_images += train_n + test_n
    elif "shipped" in random_row:
        feature_images += test_n  # a shipped row has no test features: computed for the map
    images_per_step = cfg.batch_size * cfg.num_views
    return (lambda step_s: cost.estimate(fixed, step_s, feature_images, images_per_step)), fixed
