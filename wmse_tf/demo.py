"""The CPU demo (`make demo`): train W-MSE on Fashion-MNIST, evaluate, plot, export.

  python -m wmse_tf.demo                                   # configs/fashion_mnist.flags
  python -m wmse_tf.demo --flagfile=configs/smoke.flags --probe_epochs=20   # any train flags

Steps, all in one process:
  1. `wmse_tf.training.trainer.run` with the train flags (default flagfile
     configs/fashion_mnist.flags; any `wmse_tf.train` flag overrides it);
  2. frozen-feature evaluation on the full train/test splits of three feature sets:
     the trained encoder, the same architecture with random weights, raw pixels;
     linear probe (`wmse_tf.evaluation.linear_probe`, `--probe_epochs`) and 5-NN (cosine and
     Euclidean, `wmse_tf.evaluation.knn`), printed as one table with the protocol;
  3. PNGs: training curves and a 2-D map (t-SNE or PCA) of test features by class;
  4. SavedModel export in the zoo layout (`<export_dir>/<name>/<version>/` with
     model_card.json holding the flags and these metrics);
  5. `<model_dir>/demo_results.json` and a summary of where everything went.
A finished run in `--model_dir` is not retrained (trainer.run resumes / skips).
Exit codes: those of `wmse_tf.train` (2 a user error, e.g. bad flags or dataset missing,
printed as one `error:` line; 3 NaN).
"""

import dataclasses
import os
import sys
import time

from absl import flags, logging

from wmse_tf import cli, resources, train as train_cli  # train: defines the training flags
from wmse_tf.training import config as config_lib

FLAGS = flags.FLAGS
DEFAULT_FLAGFILE = resources.flagfile("fashion_mnist")  # the checkout's configs/, or the wheel's copy
flags.DEFINE_integer("probe_epochs", 500, "Linear-probe epochs (500: the reference protocol).")
flags.DEFINE_integer("eval_limit_train", 0, "Use only the first N train images for evaluation (0 = all).")
flags.DEFINE_integer("eval_limit_test", 0, "Use only the first N test images for evaluation (0 = all).")
flags.DEFINE_enum("map", "tsne", ["tsne", "pca"], "2-D map of test features.")
flags.DEFINE_integer("map_points", 2000, "Test images in the 2-D map.")
flags.DEFINE_bool("pixels", True, "Evaluate raw pixels as a baseline.")
flags.DEFINE_enum("baselines", "auto", ["auto", "compute"], "auto: the random-weights and raw-pixel rows from "
                  "this machine's cache or, for the default recipe, the rows shipped with wmse_tf (marked in the "
                  "table), else computed; compute: computed here (and cached for the next demo).")
flags.DEFINE_string("demo_export_dir", "zoo/exports", "Export dir when --export_dir is not given.")
flags.DEFINE_string("demo_budget", "11m", "Wall clock of the whole demo, training and evaluation (the training "
                    "budget is what the evaluation, estimated on this machine, leaves); replaces a --time_budget "
                    "> 0; 0: train for --time_budget. --time_budget=0 trains --epochs.")

INSTALL_HINT = ("Fashion-MNIST not found. On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` "
                "(IDX files in /usr/share/datasets/fashion-mnist/); elsewhere: `tfds build fashion_mnist "
                "--data_dir=DIR` and pass --data_dir=DIR, or put the four *-ubyte.gz files of "
                "github.com/zalandoresearch/fashion-mnist into DIR/fashion-mnist/.")
KNN_SPECS = ("cosine:5", "euclidean:5")


def check_data(cfg):
    """None, or the message saying how to get the dataset."""
    from wmse_tf.data import datasets as data

    try:
        data.prepare(cfg.dataset, cfg.data_dir, cfg.download)  # downloads a missing TFDS dataset
    except data.DatasetNotFoundError as e:
        return f"{INSTALL_HINT} ({e})" if cfg.dataset.startswith("fashion_mnist") else str(e)
    return None


def eval_config(cfg, probe_epochs, limit_train, limit_test):
    """The demo's EvalConfig: full splits (or limits), the reference probe, 5-NN cosine and Euclidean."""
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.evaluation.linear_probe import ProbeConfig

    return eval_lib.EvalConfig(data_dir=cfg.data_dir, probe=ProbeConfig(epochs=probe_epochs, progress=True),
                               knn=KNN_SPECS, limit_train=limit_train or None, limit_test=limit_test or None,
                               progress=True)


def protocol_text(cfg, econf, rows):
    from wmse_tf.evaluation import evaluator as eval_lib

    first = next(iter(rows.values()))
    return (f"{cfg.dataset}: fit on {first['num_train']} train images, scored on {first['num_test']} test "
            f"images; frozen features of the un-augmented {cfg.image_size}x{cfg.image_size} images "
            f"(raw pixels: the stored images, flattened, in [0, 1]). Linear: {eval_lib.protocol(econf.probe)}. "
            "5-NN: k=5, majority vote, cosine (L2-normalized features) and Euclidean (raw features).")


def format_table(rows, protocol):
    """The rows as a text table; a row read from the cache or shipped with wmse_tf is marked and
    its origin given below the table."""
    from wmse_tf.evaluation import reference_rows

    head = ("features", "dim", "linear top-1", "linear top-5", "5-NN cosine", "5-NN Euclid.")
    lines, notes = [head], []
    for name, r in rows.items():
        lin = r.get("linear", {})
        if "reference" in r:
            notes.append(f"{name} (*): shipped with wmse_tf, {reference_rows.describe(r['reference'])}; "
                         "--baselines=compute computes it here")
            name += " (*)"
        elif "cached" in r:
            notes.append(f"{name} (+): computed by an earlier demo on this machine, {r['cached']}")
            name += " (+)"
        lines.append((name, str(r["num_features"]), f"{100 * lin.get('top1', float('nan')):.2f}",
                      f"{100 * lin.get('top5', float('nan')):.2f}",
                      f"{100 * r['knn']['cosine:5']['top1']:.2f}", f"{100 * r['knn']['euclidean:5']['top1']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    fmt = lambda line: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(line, widths)))
    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in lines[1:]]
    return "\n".join(out + notes + ["", "protocol: " + protocol])


def training_text(cfg, results):
    """How long this machine trained: epochs, steps (planned by the budget) and seconds."""
    steps = results.get("steps_done", results.get("step"))
    epochs = results.get("epochs_done", steps / results["steps_per_epoch"])
    text = f"{epochs:g} epochs ({steps} steps of {cfg.batch_size} images) in {results['seconds']:.0f} s"
    if results.get("time_budget_seconds"):
        plan = results.get("plan") or {}
        text += (f", planned by --time_budget={results['time_budget_seconds']:g}s from a measured "
                 f"{plan.get('step_seconds', float('nan')):.3f} s/step")
    from wmse_tf.training import resolve

    return text + f", {cfg.mixed_precision}, on {resolve.cpu_description()}"


def export_model(cfg, export_dir, metrics):
    """SavedModel + model card of the run's encoder.keras; returns the version dir."""
    from wmse_tf.core import encoders
    from wmse_tf.export import saved_model as export

    encoder = encoders.load(os.path.join(cfg.model_dir, "encoder.keras"))
    spec = export.input_spec_from_flags(cfg.to_dict())
    version = cfg.export_version or None
    return export.export_encoder(encoder, export_dir, cfg.export_name_or_default, version,
                                 dataset=cfg.dataset, spec=spec,
                                 card={"flags": cfg.to_dict(), "metrics": metrics},
                                 overwrite=bool(version))


def run(cfg, probe_epochs=500, limit_train=0, limit_test=0, map_method="tsne", map_points=2000,
        pixels=True, export_dir="zoo/exports", export_formats=(), demo_budget=0.0, reuse_baselines=True):
    """The whole demo for a TrainConfig; returns (exit code, results dict or None).

    `export_formats`: [(format, quantize)] written beside the SavedModel (wmse_tf.export.formats).
    `demo_budget`: seconds of the whole demo; with a cfg.time_budget > 0, training gets what the
    evaluation, estimated on this machine before training (`baselines.evaluation_reserve`), leaves.
    `reuse_baselines`: the baseline rows from this machine's cache or the shipped ones when they match
    (`--baselines=auto`); False computes them."""
    from wmse_tf.evaluation import baselines, plots
    from wmse_tf.export import saved_model as export
    from wmse_tf.training import trainer

    t0, started_at, reserve = time.time(), time.perf_counter(), None
    problem = check_data(cfg)
    if problem:
        return cli.fail(problem), None
    export_dir = cfg.export_dir or export_dir
    cfg = dataclasses.replace(cfg, export_dir="")  # exported below, with the evaluation in its card
    econf = eval_config(cfg, probe_epochs, limit_train, limit_test)
    if demo_budget and cfg.time_budget:
        reserve, fixed = baselines.evaluation_reserve(cfg, econf, pixels, reuse=reuse_baselines)
        cfg = dataclasses.replace(cfg, time_budget=float(demo_budget))
        print(f"[plan] demo budget {demo_budget:g} s; the evaluation, timed here: probes "
              f"{fixed['probes_seconds']:.0f} s, k-NN {fixed['knn_seconds']:.0f} s, then features from the "
              "step time" + (f" (cached from an earlier demo here: {', '.join(fixed['cached_rows'])})"
                             if fixed["cached_rows"] else "")
              + (f" (shipped with wmse_tf: {', '.join(fixed['reference_rows'])})" if fixed["reference_rows"] else "")
              + "; training gets the rest", flush=True)
    length = f"a {cfg.time_budget:g} s training budget" if cfg.time_budget else f"{cfg.epochs} epochs"
    print(f"[train] {cfg.method} on {cfg.dataset}: {cfg.arch} width {cfg.width}, {cfg.image_size}px, "
          f"{cfg.num_views} views, batch {cfg.batch_size}, {length}, {cfg.mixed_precision} "
          f"-> {cfg.model_dir}", flush=True)
    code = trainer.run(cfg, started_at=started_at, reserve=reserve)
    if code != 0:
        return code, None
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # k-NN retracing notices (one per query-chunk shape)
    t_train = time.time() - t0
    rows, test_feats = baselines.evaluate_with_baselines(
        cfg.model_dir, cfg.dataset, econf, cfg.seed, pixels, log=lambda text: print(text, flush=True),
        reuse=reuse_baselines)
    protocol = protocol_text(cfg, econf, rows)
    table = format_table(rows, protocol)
    t_eval = time.time() - t0 - t_train

    print("\n[plots]", flush=True)
    plot_dir = os.path.join(cfg.model_dir, "plots")
    rnd = rows["same encoder, random weights"]["knn"]["cosine:5"]["top1"]
    curves = plots.training_curves(cfg.model_dir, os.path.join(plot_dir, "training_curves.png"),
                                   baselines={"random weights (full test set)": rnd})
    names = plots.FASHION_MNIST_CLASSES if cfg.dataset == "fashion_mnist" else None
    fmap = plots.feature_map({k: test_feats[k] for k in ("same encoder, random weights", "W-MSE encoder")},
                             os.path.join(plot_dir, f"feature_map_{map_method}.png"), map_method, names,
                             map_points, cfg.seed)

    train_results = _read_json(os.path.join(cfg.model_dir, "results.json"))
    table += "\ntraining: " + training_text(cfg, train_results)
    metrics = {"protocol": protocol, "rows": rows, "training": train_results}
    print("\n[export]", flush=True)
    version_dir = export_model(cfg, export_dir, metrics)
    if export_formats:
        from wmse_tf.export import formats

        for name, record in formats.export_formats(version_dir, export_formats).items():
            print(f"  {name}: max |diff| {record['parity']['vs_float32_graph']['max_abs']:.2g} to the float32 graph")
    results = {
        "table": table, "protocol": protocol, "rows": rows, "training": train_results,
        "seconds": {"train": round(t_train, 1), "evaluate": round(t_eval, 1),
                    "total": round(time.time() - t0, 1), **estimated(reserve, train_results, demo_budget)},
        "paths": {"model_dir": cfg.model_dir, "checkpoints": cfg.model_dir,
                  "tensorboard": os.path.join(cfg.model_dir, "tb"),
                  "log": os.path.join(cfg.model_dir, "log.csv"),
                  "encoder": os.path.join(cfg.model_dir, "encoder.keras"),
                  "export": version_dir, "model_card": os.path.join(version_dir, export.CARD_NAME),
                  "training_curves": curves, "feature_map": fmap,
                  "metrics": os.path.join(cfg.model_dir, "demo_results.json")},
        "command": " ".join(["python -m wmse_tf.demo", *sys.argv[1:]]),
    }
    export.write_json(results["paths"]["metrics"], results)
    print("\n" + table)
    print(f"\ntime: {results['seconds']['total']:.0f} s (training {t_train:.0f} s, evaluation {t_eval:.0f} s)")
    print("written:")
    for key in ("checkpoints", "tensorboard", "log", "encoder", "export", "model_card", "training_curves",
                "feature_map", "metrics"):
        print(f"  {key:<16} {results['paths'][key]}")
    print(f"  (tensorboard --logdir {results['paths']['tensorboard']}; "
          f"serve: tensorflow_model_server --model_base_path={os.path.abspath(os.path.dirname(version_dir))})")
    return 0, results


def estimated(reserve, train_results, demo_budget):
    """The demo budget and the evaluation's estimate it planned with (at the last planned step time)."""
    step_s = (train_results.get("plan") or {}).get("step_seconds")
    if reserve is None or not step_s:
        return {}
    return {"demo_budget": demo_budget, "evaluate_estimated": round(reserve(step_s), 1)}


def _read_json(path):
    import json

    with open(path) as f:
        return json.load(f)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    cfg, code = train_cli.config_or_exit(argv)
    if cfg is None:
        return code
    from wmse_tf.export import variants

    try:
        demo_budget = config_lib.parse_duration(FLAGS.demo_budget)
    except config_lib.ConfigError as e:
        return cli.fail(str(e).replace("--time_budget", "--demo_budget"))
    code, _ = run(cfg, FLAGS.probe_epochs, FLAGS.eval_limit_train, FLAGS.eval_limit_test, FLAGS.map,
                  FLAGS.map_points, FLAGS.pixels, FLAGS.demo_export_dir, variants.parse(FLAGS.export_formats),
                  demo_budget, FLAGS.baselines == "auto")
    return code


def with_default_flagfile(argv):
    """argv with --flagfile=configs/fashion_mnist.flags first unless a flagfile is given."""
    if any(a.startswith(("--flagfile", "-flagfile")) for a in argv[1:]):
        return argv
    return [argv[0], f"--flagfile={DEFAULT_FLAGFILE}", *argv[1:]]


if __name__ == "__main__":
    cli.run(main, argv=with_default_flagfile(sys.argv))
