"""Frozen-encoder evaluation: linear probe and k-NN on features of un-augmented images.

`evaluate(path, EvalConfig())` opens a training run (`model_dir` holding `encoder.keras` and
`flags.json`), an `encoder.keras` file or an exported SavedModel (a version dir, or a `<name>/`
dir: its latest version); computes the features of the eval transform's images (no
augmentation) once (optionally cached as .npz), then:

  - linear: `wmse_tf.evaluation.linear_probe` (reference protocol: Adam 1e-2 -> 1e-6
    exponentially over 500 epochs, batches of 1000, weight decay 5e-6; top-1, top-5);
  - k-NN: `wmse_tf.evaluation.knn` (reference: Euclidean, k=5, majority vote; options such
    as cosine or weighted k=200 via specs "metric:k[:weighted]");
  - effective rank: RankMe of the features of the first `rank_images` train images
    (`wmse_tf.evaluation.health`, the function of the training run's health checks).

`format_table` and `default_output` are what the command `python -m wmse_tf.evaluate` prints
and where it writes the JSON.
"""

import dataclasses
import hashlib
import json
import os
import re
import time
from typing import Optional, Tuple

import numpy as np

from wmse_tf.evaluation import features as features_lib, health, linear_probe
from wmse_tf.evaluation.linear_probe import ProbeConfig

KNN_METRICS = ("euclidean", "cosine")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate on and how.

    Attributes:
      dataset: registered dataset name; default the model's training dataset.
      data_dir: as in `wmse_tf.data.datasets.load`.
      train_split, test_split: default the dataset's labelled train/test splits.
      batch_size: images per feature-extraction batch.
      probe: linear-probe settings (None skips the linear probe).
      knn: k-NN specs "metric:k" or "metric:k:weighted" (metric euclidean|cosine).
      knn_temperature: temperature of weighted votes, exp(sim / T).
      limit_train, limit_test: use only the first N images (quick runs).
      cache_dir: cache features there as .npz (keyed by model, dataset, split).
      random_init: evaluate the same architecture with fresh random weights
        (baseline; training runs only).
      progress: show progress bars.
      rank_images: effective rank (RankMe) of the features of the first N train images
        (0: not computed); 2048, as a training run's health checks.
    """

    dataset: Optional[str] = None
    data_dir: Optional[str] = None
    train_split: Optional[str] = None
    test_split: Optional[str] = None
    batch_size: int = 256
    probe: Optional[ProbeConfig] = ProbeConfig()
    knn: Tuple[str, ...] = ("euclidean:5",)
    knn_temperature: float = 0.07
    limit_train: Optional[int] = None
    limit_test: Optional[int] = None
    cache_dir: Optional[str] = None
    random_init: bool = False
    progress: bool = True
    rank_images: int = 2048

    def __post_init__(self):
        for spec in self.knn:
            parse_knn(spec)


def parse_knn(spec):
    """"cosine:200:weighted" -> ("cosine", 200, True); raises ValueError when malformed."""
    parts = spec.split(":")
    ok = 2 <= len(parts) <= 3 and parts[0] in KNN_METRICS and parts[1].isdigit() and int(parts[1]) > 0
    if not ok or (len(parts) == 3 and parts[2] != "weighted"):
        raise ValueError(f"bad k-NN spec {spec!r}: use metric:k[:weighted], metric in {KNN_METRICS}, "
                         "e.g. euclidean:5 or cosine:200:weighted")
    return parts[0], int(parts[1]), len(parts) == 3


@dataclasses.dataclass
class FeatureSource:
    """What `open_model` found at a path (a run, an encoder.keras or a SavedModel): its feature
    function and what the eval pipeline must feed it."""

    kind: str  # "checkpoint" or "saved_model"
    path: str
    feature_fn: object
    dataset: Optional[str]
    image_size: Optional[int]
    raw_input: bool  # True: [0, 1] images (SavedModel normalizes); False: normalized
    key: str
    augment: Optional[dict] = None  # the training run's augmentation config (flags.json)


def _mtime(path):
    return str(os.path.getmtime(path)) if os.path.exists(path) else "?"


def random_weights(encoder, seed=0):
    """The same architecture with fresh weights: its initializers under `keras.utils.set_random_seed(seed)`."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(encoder)


def open_model(path, random_init=False, seed=0):
    """Opens a training run dir (encoder.keras), an encoder.keras file or a SavedModel: a FeatureSource."""
    from wmse_tf.export import saved_model as export

    path = os.path.abspath(path)
    keras_file = path if path.endswith(".keras") else os.path.join(path, "encoder.keras")
    if os.path.exists(keras_file):
        from wmse_tf.core import encoders

        encoder = encoders.load(keras_file)
        if random_init:
            encoder = random_weights(encoder, seed)
        flags_path = os.path.join(os.path.dirname(keras_file), "flags.json")
        run_flags = {}
        if os.path.exists(flags_path):
            with open(flags_path) as f:
                run_flags = json.load(f)
        key = f"keras:{keras_file}:{_mtime(keras_file)}:{'random' + str(seed) if random_init else ''}"
        return FeatureSource("checkpoint", os.path.dirname(keras_file), features_lib.keras_features(encoder),
                     run_flags.get("dataset"), export.encoder_image_size(encoder), False, key,
                     run_flags.get("augment"))
    if random_init:
        raise ValueError("random_init needs a training run (encoder.keras), not a SavedModel")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: neither a training run (encoder.keras) nor a SavedModel")
    version_dir = export.latest_version_dir(path)
    card = export.read_card(version_dir)
    size = card.get("input", {}).get("image_size")
    key = f"saved_model:{version_dir}:{_mtime(os.path.join(version_dir, 'saved_model.pb'))}"
    return FeatureSource("saved_model", version_dir, features_lib.saved_model_features(version_dir),
                 card.get("dataset"), size, True, key, (card.get("flags") or {}).get("augment"))


def eval_split(model, dataset, split, config, limit):
    """(features, labels) of one split, through the cache when configured."""
    from wmse_tf.data import augment, pipeline

    cfg = augment.recipe(dataset)
    if model.augment and dataset == model.dataset:  # the run's own eval transform and mean/std
        cfg = augment.AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in model.augment.items()})
    if model.raw_input:  # the SavedModel normalizes inside its graph
        cfg = dataclasses.replace(cfg, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    ds = pipeline.eval_dataset(dataset, split, config.batch_size, config.data_dir,
                               image_size=model.image_size, aug_cfg=cfg)
    key = f"{model.key}|{dataset}|{split}|{model.image_size}|{limit}"
    cache = None
    if config.cache_dir:
        digest = hashlib.sha1(key.encode()).hexdigest()[:12]
        cache = os.path.join(config.cache_dir, f"features_{safe_name(dataset)}_{split}_{digest}.npz")
    return features_lib.extract(model.feature_fn, ds, progress=config.progress, cache=cache,
                                key=key, limit=limit)


def evaluate_features(train_x, train_y, test_x, test_y, config=EvalConfig(), num_classes=None):
    """Linear probe, k-NN and effective rank on given features: {"linear", "knn"[, "effective_rank"]}."""
    return evaluate_feature_sets({"": (train_x, train_y, test_x, test_y)}, config, num_classes)[""]


def evaluate_feature_sets(sets, config=EvalConfig(), num_classes=None):
    """`evaluate_features` of several feature sets {name: (train_x, train_y, test_x, test_y)}.

    Sets of the same images (equal labels, e.g. an encoder, its random init and raw pixels) train
    their linear probes in one loop (`linear_probe.linear_probes`), each as it would alone; every
    set's k-NN specs share one matrix product per query chunk (`knn.knn_predict_many`)."""
    from wmse_tf.evaluation import knn

    results = {name: {} for name in sets}
    for name, (train_x, train_y, test_x, test_y) in sets.items():
        if config.rank_images:
            rows = np.asarray(train_x[:config.rank_images])
            results[name].update(effective_rank=health.effective_rank(rows), effective_rank_images=len(rows))
    if config.probe is not None:
        for group in _same_labels(sets):
            t = time.time()
            scores = linear_probe.linear_probes([sets[n][0] for n in group], sets[group[0]][1],
                                                [sets[n][2] for n in group], sets[group[0]][3], num_classes,
                                                config.probe)
            for name, score in zip(group, scores):  # the seconds of the probes trained together
                results[name]["linear"] = dict(score, protocol=protocol(config.probe),
                                               seconds=round(time.time() - t, 2), trained_with=len(group))
    specs = [parse_knn(spec) for spec in config.knn]
    for name, (train_x, train_y, test_x, test_y) in sets.items():
        keep, t = np.asarray(train_y) >= 0, time.time()
        preds = knn.knn_predict_many(np.asarray(train_x)[keep], np.asarray(train_y)[keep], test_x, specs,
                                     temperature=config.knn_temperature) if specs else []
        seconds = round(time.time() - t, 2)
        results[name]["knn"] = {spec: {"top1": float(np.mean(np.asarray(pred) == np.asarray(test_y))),
                                       "seconds": seconds} for spec, pred in zip(config.knn, preds)}
    return results


def _same_labels(sets):
    """Names of `sets` grouped by equal (train_y, test_y)."""
    groups = []
    for name, (_, train_y, _, test_y) in sets.items():
        for group in groups:
            first = sets[group[0]]
            if np.array_equal(first[1], train_y) and np.array_equal(first[3], test_y):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def protocol(probe):
    return (f"linear layer on frozen features, Adam lr {probe.lr_start:g}->{probe.lr_end:g} exponential "
            f"over {probe.epochs} epochs, batch {probe.batch_size}, weight decay {probe.weight_decay:g}"
            + (", standardized features" if probe.standardize else ""))


def evaluate(model_path, config=EvalConfig()):
    """Evaluates the model at `model_path` (or its opened `FeatureSource`); returns the results (module doc)."""
    from wmse_tf.data import datasets as data

    start = time.time()
    model = model_path if isinstance(model_path, FeatureSource) else open_model(model_path, config.random_init)
    dataset = config.dataset or model.dataset
    if not dataset:
        raise ValueError(f"{model_path}: no dataset recorded with the model; pass dataset=")
    meta = data.info(dataset)
    train_split = config.train_split or meta.train_split
    test_split = config.test_split or meta.test_split
    train_x, train_y = eval_split(model, dataset, train_split, config, config.limit_train)
    test_x, test_y = eval_split(model, dataset, test_split, config, config.limit_test)
    results = {
        "model": model.path, "kind": model.kind, "random_init": config.random_init,
        "dataset": meta.name, "train_split": train_split, "test_split": test_split,
        "num_train": int(len(train_y)), "num_test": int(len(test_y)),
        "num_features": int(train_x.shape[1]), "image_size": model.image_size,
        "views": "un-augmented eval transform",
    }
    results.update(evaluate_features(train_x, train_y, test_x, test_y, config, meta.num_classes))
    results["seconds"] = round(time.time() - start, 2)
    return results


def format_table(results):
    """A plain-text table of the results."""
    rows = [("protocol", "top-1", "top-5")]
    if "linear" in results:
        lin = results["linear"]
        rows.append(("linear", f"{100 * lin['top1']:.2f}", f"{100 * lin.get('top5', float('nan')):.2f}"))
    for spec, r in results.get("knn", {}).items():
        rows.append((f"k-NN {spec}", f"{100 * r['top1']:.2f}", "-"))
    width = max(len(r[0]) for r in rows)
    head = (f"{results.get('dataset', '?')} {results.get('train_split', '')}->{results.get('test_split', '')}"
            f" ({results.get('num_train', '?')}/{results.get('num_test', '?')} images), {results.get('model', '')}")
    lines = [head] + [f"{a:<{width}}  {b:>7}  {c:>7}" for a, b, c in rows]
    if "linear" in results:
        lines.append(f"linear: {results['linear']['protocol']}")
    if results.get("effective_rank") is not None:
        lines.append(f"effective rank (RankMe) of the features: {results['effective_rank']:.2f} of "
                     f"{results.get('num_features', '?')} (first {results['effective_rank_images']} train images)")
    return "\n".join(lines)


def safe_name(name):
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")


def default_output(results):
    """Where the results JSON goes: beside the model (see module doc)."""
    suffix = "_random" if results.get("random_init") else ""
    name = safe_name(results["dataset"])
    if results["kind"] == "checkpoint":
        return os.path.join(results["model"], f"eval_{name}{suffix}.json")
    version_dir = results["model"].rstrip(os.sep)
    return os.path.join(os.path.dirname(version_dir), f"eval_{name}_v{os.path.basename(version_dir)}.json")
