"""The command `python -m wmse_tf.evaluate`: a frozen encoder's linear probe and k-NN.

The library behind it is `wmse_tf.evaluation.evaluator` (`evaluate`, `EvalConfig`).

From a training run (`model_dir` holding `encoder.keras` and `flags.json`) or an
exported SavedModel (a version dir, or a `<name>/` dir: its latest version).
Features of the eval transform's images (no augmentation) are computed once
(optionally cached as .npz), then:

  - linear: `wmse_tf.evaluation.linear_probe` (reference protocol: Adam 1e-2 -> 1e-6
    exponentially over 500 epochs, batches of 1000, weight decay 5e-6; top-1, top-5);
  - k-NN: `wmse_tf.evaluation.knn` (reference: Euclidean, k=5, majority vote; options such
    as cosine or weighted k=200 via specs "metric:k[:weighted]");
  - the effective rank (RankMe) of the features of the first `--rank_images` train images,
    computed as in a training run's health checks (`wmse_tf.evaluation.health`).

Prints a table and writes JSON beside the model: `<model_dir>/eval_<dataset>.json`,
or `<name>/eval_<dataset>_v<version>.json` for a SavedModel (its version dir
stays untouched, so its hashes hold).

  python -m wmse_tf.evaluate --model=runs/fmnist --epochs=500
  python -m wmse_tf.evaluate --model=exports/wmse_fmnist --knn=euclidean:5,cosine:200:weighted
"""

import sys

from wmse_tf.evaluation.evaluator import EvalConfig, default_output, evaluate, format_table, open_model
from wmse_tf.evaluation.linear_probe import ProbeConfig


def main(argv):
    from absl import flags, logging

    from wmse_tf import cli, errors
    from wmse_tf.data import datasets as data
    from wmse_tf.export import saved_model as export

    if len(argv) > 1:
        raise errors.UserError(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    logging.set_verbosity(logging.WARNING)
    f = flags.FLAGS
    probe = None if not f.linear else ProbeConfig(
        epochs=f.epochs, batch_size=f.probe_batch_size, weight_decay=f.weight_decay,
        standardize=f.standardize, seed=f.seed)
    with cli.about("knn", ",".join(f.knn), ValueError):
        config = EvalConfig(dataset=f.dataset, data_dir=f.data_dir, train_split=f.train_split,
                            test_split=f.test_split, batch_size=f.batch_size, probe=probe, knn=tuple(f.knn),
                            knn_temperature=f.knn_temperature, limit_train=f.limit_train,
                            limit_test=f.limit_test, cache_dir=f.cache_dir, random_init=f.random_init,
                            progress=f.progress, rank_images=f.rank_images)
    with cli.about("model", f.model):  # a missing path, not a model, an unreadable or corrupt file
        model = open_model(f.model, f.random_init)
    dataset = f.dataset or model.dataset
    if not dataset:
        raise errors.UserError(f"--model={f.model}: records no training dataset; pass --dataset=NAME")
    with cli.about("dataset", dataset):
        meta = data.info(dataset)
    for name in ("train_split", "test_split"):
        if f[name].value and f[name].value not in meta.splits:
            raise errors.UserError(f"--{name}={f[name].value}: not a split of {dataset}; valid: {meta.splits}")
    data.prepare(dataset, f.data_dir, f.download)  # downloads a missing TFDS dataset (unless --nodownload)
    results = evaluate(model, config)
    results["command"] = " ".join(["python -m wmse_tf.evaluate", *sys.argv[1:]])
    print(format_table(results))
    out = f.output or default_output(results)
    with cli.about("output", out, OSError):
        export.write_json(out, results)
    print(f"wrote {out}")


def define_flags():
    from absl import flags

    flags.DEFINE_string("model", None, "Training run dir (encoder.keras), encoder.keras, or SavedModel dir.")
    flags.DEFINE_string("dataset", None, "Registered dataset; default: the model's training dataset.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir / image-folder root.")
    flags.DEFINE_boolean("download", True, "Download and prepare a missing TFDS dataset into --data_dir first.")
    flags.DEFINE_string("train_split", None, "Split the probe and k-NN fit on (default: the dataset's train).")
    flags.DEFINE_string("test_split", None, "Split they are scored on (default: the dataset's test).")
    flags.DEFINE_integer("batch_size", 256, "Images per feature-extraction batch.")
    flags.DEFINE_boolean("linear", True, "Run the linear probe.")
    flags.DEFINE_integer("epochs", 500, "Linear-probe epochs (reference: 500).")
    flags.DEFINE_integer("probe_batch_size", 1000, "Linear-probe batch (reference: 1000).")
    flags.DEFINE_float("weight_decay", 5e-6, "Linear-probe L2 weight decay (reference: 5e-6).")
    flags.DEFINE_boolean("standardize", False, "Standardize features before the probe (reference: no).")
    flags.DEFINE_list("knn", ["euclidean:5"], "k-NN specs metric:k[:weighted], e.g. cosine:200:weighted.")
    flags.DEFINE_float("knn_temperature", 0.07, "Temperature of weighted k-NN votes.")
    flags.DEFINE_integer("limit_train", None, "Use only the first N training images.")
    flags.DEFINE_integer("limit_test", None, "Use only the first N test images.")
    flags.DEFINE_string("cache_dir", None, "Cache features here as .npz.")
    flags.DEFINE_boolean("random_init", False, "Baseline: same architecture, random weights.")
    flags.DEFINE_boolean("progress", True, "Show progress bars.")
    flags.DEFINE_integer("rank_images", 2048, "Effective rank (RankMe) of the features of the first N train "
                         "images (0 = off), as the training run's health checks.")
    flags.DEFINE_integer("seed", 0, "Seed of the probe (and of random_init weights).")
    flags.DEFINE_string("output", None, "Results JSON path (default: beside the model).")
    flags.mark_flag_as_required("model")


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
