"""The demo's run: check the data, plan the budget, train, evaluate with baselines, plot, export.

`run(cfg, ...)` is what `python -m wmse_tf.demo` does for a TrainConfig (`wmse_tf.demo.command`
turns its flags into these arguments). With `demo_budget`, the evaluation's seconds are estimated
on this machine before training (`baselines.evaluation_reserve`, `cost`) and the training budget
keeps them free (`training.budget.TimeBudget(reserve=...)`), counted from the demo's start.

Example:
  >>> code, results = run(cfg, probe_epochs=20, demo_budget=660)
"""

import dataclasses
import os
import sys
import time

from wmse_tf import cli
from wmse_tf.demo import report

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
    from wmse_tf.demo import baselines
    from wmse_tf.evaluation import plots
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
              + (f" (shipped with wmse_tf: {', '.join(fixed['shipped_rows'])})" if fixed["shipped_rows"] else "")
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
    protocol = report.protocol_text(cfg, econf, rows)
    table = report.format_table(rows, protocol)
    t_eval = time.time() - t0 - t_train

    print("\n[plots]", flush=True)
    plot_dir = os.path.join(cfg.model_dir, "plots")
    rnd = rows[baselines.RANDOM]["knn"]["cosine:5"]["top1"]
    curves = plots.training_curves(cfg.model_dir, os.path.join(plot_dir, "training_curves.png"),
                                   baselines={"random weights (full test set)": rnd})
    names = plots.FASHION_MNIST_CLASSES if cfg.dataset == "fashion_mnist" else None
    fmap = plots.feature_map({k: test_feats[k] for k in (baselines.RANDOM, baselines.TRAINED)},
                             os.path.join(plot_dir, f"feature_map_{map_method}.png"), map_method, names,
                             map_points, cfg.seed)

    train_results = _read_json(os.path.join(cfg.model_dir, "results.json"))
    table += "\ntraining: " + report.training_text(cfg, train_results)
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
