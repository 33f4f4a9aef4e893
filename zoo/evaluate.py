"""Check a SavedModel against its registered metrics (and file hashes).

  python -m zoo.evaluate --model=zoo/exports/wmse2_fashion_mnist
  python -m zoo.evaluate --model=/path/to/1 --name=wmse2_fashion_mnist --tolerance=0.01

Evaluates with the protocol recorded in zoo/models.json (linear-probe epochs and
settings, k-NN specs, splits) and compares each registered accuracy: exit status 1
when a measured value is below the registered one minus `--tolerance` (absolute,
in [0, 1]), or when a file's sha256 differs from the registry (unless
--nocheck_hashes); 0 otherwise. Prints a comparison table and, beside it, the effective rank
(RankMe) of the frozen features (`wmse_tf.evaluation.health`, as a training run's health checks).
"""

import sys

from absl import app, flags, logging

import zoo

FLAGS = flags.FLAGS


def define_flags():
    """Defines this script's flags (only when run as a script: the modules are importable)."""
    flags.DEFINE_string("model", None, "SavedModel version dir, or <name>/ dir (latest version).")
    flags.DEFINE_string("name", None, "Registry entry (default: the name in the model card).")
    flags.DEFINE_string("registry", zoo.REGISTRY, "Registry JSON.")
    flags.DEFINE_float("tolerance", 0.01, "Allowed drop below a registered accuracy (absolute, 0.01 = 1 point).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir / image-folder root.")
    flags.DEFINE_bool("download", True, "Download and prepare a missing TFDS dataset into --data_dir first.")
    flags.DEFINE_bool("check_hashes", True, "Also compare file sha256 with the registry.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")


def eval_config_for(metrics, data_dir=None, progress=True):
    """The EvalConfig reproducing a registered protocol."""
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.evaluation.linear_probe import ProbeConfig

    proto = metrics["protocol"]
    lin = proto["linear"]
    probe = ProbeConfig(epochs=lin["epochs"], batch_size=lin["batch_size"], lr_start=lin["lr_start"],
                        lr_end=lin["lr_end"], weight_decay=lin["weight_decay"],
                        standardize=lin.get("standardize", False))
    num_train, num_test = metrics.get("num_train"), metrics.get("num_test")
    return eval_lib.EvalConfig(dataset=metrics["dataset"], data_dir=data_dir, train_split=metrics["train_split"],
                               test_split=metrics["test_split"], probe=probe, knn=tuple(proto["knn"]),
                               limit_train=num_train, limit_test=num_test, progress=progress)


def compare(registered, measured, tolerance):
    """Rows (metric, registered, measured, ok) for every registered accuracy."""
    rows = []
    for k in ("top1", "top5"):
        if k in registered.get("linear", {}):
            got = measured["linear"][k]
            rows.append((f"linear {k}", registered["linear"][k], got, got >= registered["linear"][k] - tolerance))
    for spec, value in registered.get("knn", {}).items():
        got = measured["knn"][spec]["top1"]
        rows.append((f"k-NN {spec}", value["top1"], got, got >= value["top1"] - tolerance))
    return rows


def check(model_path, name=None, registry_path=zoo.REGISTRY, tolerance=0.01, data_dir=None,
          check_hashes=True, progress=True):
    """Returns (ok, rows, problems); see the module docstring. The rows end with the effective rank
    (registered None, ok True: it is reported, not checked)."""
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.export import saved_model as export

    version_dir = export.latest_version_dir(model_path)
    card = export.read_card(version_dir)
    name = name or card.get("name")
    if not name:
        raise ValueError(f"{version_dir}: no model card name; pass --name")
    entry = zoo.find(zoo.load(registry_path), name, card.get("version") if card.get("name") == name else None)
    if entry["status"] == "planned":
        raise ValueError(f"zoo entry {name!r} is {entry['status']}: it has no registered metrics")
    problems = []
    if check_hashes:
        actual = export.file_hashes(version_dir, skip=())
        bad = sorted(k for k in set(actual) | set(entry["files"]) if actual.get(k) != entry["files"].get(k))
        problems += [f"sha256 differs from the registry: {p}" for p in bad]
    results = eval_lib.evaluate(version_dir, eval_config_for(entry["metrics"], data_dir, progress))
    rows = compare(entry["metrics"], results, tolerance)
    problems += [f"{m}: {got:.4f} < registered {reg:.4f} - {tolerance}" for m, reg, got, ok in rows if not ok]
    if results.get("effective_rank") is not None:
        rows.append((f"effective rank of {results['num_features']} feat.", None, results["effective_rank"], True))
    return not problems, rows, problems


def main(argv):
    from wmse_tf import cli, errors
    from wmse_tf.data import datasets as data
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.export import saved_model as export

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    with cli.about("model", FLAGS.model):  # not a SavedModel, or a corrupt one: one line, before any work
        version_dir = export.latest_version_dir(FLAGS.model)
        eval_lib.open_model(version_dir)  # loads in seconds; the probe below takes minutes
        name = FLAGS.name or export.read_card(version_dir).get("name")
    if not name:
        raise errors.UserError(f"--model={FLAGS.model}: its model card has no name; pass --name=<zoo entry>")
    with cli.about("registry", FLAGS.registry):
        registry = zoo.load(FLAGS.registry)
    with cli.about("name", name, KeyError):
        card = export.read_card(version_dir)
        entry = zoo.find(registry, name, card.get("version") if card.get("name") == name else None)
    if entry["status"] == "planned":
        raise errors.UserError(f"--name={name}: the zoo entry is {entry['status']}: it has no registered metrics")
    data.prepare(entry["metrics"]["dataset"], FLAGS.data_dir, FLAGS.download)  # downloads a missing TFDS dataset
    ok, rows, problems = check(FLAGS.model, FLAGS.name, FLAGS.registry, FLAGS.tolerance, FLAGS.data_dir,
                               FLAGS.check_hashes, FLAGS.progress)
    print(f"{'metric':<28} {'registered':>10} {'measured':>10}")
    for metric, reg, got, good in rows:
        if reg is None:  # reported, not registered: the effective rank of the features
            print(f"{metric:<28} {'-':>10} {got:>10.2f}   (RankMe; reported, not checked)")
            continue
        print(f"{metric:<28} {100 * reg:>9.2f}% {100 * got:>9.2f}%  {'ok' if good else 'WORSE'}")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    print("ok" if ok else "failed")
    return 0 if ok else 1


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("model")
    from wmse_tf import cli

    cli.run(main)
