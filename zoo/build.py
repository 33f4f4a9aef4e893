"""Build zoo entries: train -> export -> evaluate -> register.

  python -m zoo.build --name=wmse2_fashion_mnist
  python -m zoo.build --all                       # every entry of zoo/models.json
  python -m zoo.build --name=... --skip_train     # reuse <runs_dir>/<name> (encoder.keras)
  python -m zoo.build --name=... --dry_run        # print the training command only

For each entry: `python -m wmse_tf.train --flagfile=<config> --model_dir=<runs_dir>/<name>`
(a subprocess; resumes if interrupted), then `wmse_tf.export.saved_model.export_encoder` to
`<export_dir>/<name>/<version>/` (its graph computes in float32 whatever the training precision,
unless --serving_precision=bfloat16), a check that the SavedModel's features match the Keras
encoder's, the linear probe and k-NN of `wmse_tf.evaluate` on the SavedModel's own features
(protocol flags below, recorded with the numbers in its card), the --export_formats files, and
finally the entry of zoo/models.json is set to "published" with metrics, sha256 of the files,
size and build facts (`publish`; `zoo.reexport` publishes new versions through it too).
"""

import datetime
import json
import os
import subprocess
import sys
import time

from absl import app, flags

import zoo
from wmse_tf import errors

FLAGS = flags.FLAGS


def define_flags():
    """Defines this script's flags (only when run as a script: the modules are importable)."""
    flags.DEFINE_string("name", None, "Zoo entry to build.")
    flags.DEFINE_bool("all", False, "Build every entry of the registry.")
    flags.DEFINE_string("registry", zoo.REGISTRY, "Registry JSON.")
    flags.DEFINE_string("runs_dir", "runs/zoo", "Training runs go to <runs_dir>/<name>.")
    flags.DEFINE_string("export_dir", "zoo/exports", "SavedModels go to <export_dir>/<name>/<version>.")
    flags.DEFINE_string("data_dir", None, "Passed to training and evaluation.")
    flags.DEFINE_bool("download", True, "Download and prepare a missing TFDS dataset into --data_dir first.")
    flags.DEFINE_bool("skip_train", False, "Use the existing run dir (encoder.keras) instead of training.")
    flags.DEFINE_multi_string("train_arg", [], "Extra flag for wmse_tf.train, e.g. --train_arg=--epochs=1.")
    flags.DEFINE_integer("eval_epochs", 500, "Linear-probe epochs (reference protocol: 500).")
    flags.DEFINE_list("knn", ["euclidean:5", "cosine:200:weighted"], "k-NN specs evaluated and registered.")
    flags.DEFINE_integer("limit_train", None, "Evaluate on the first N training images only (quick checks).")
    flags.DEFINE_integer("limit_test", None, "Evaluate on the first N test images only (quick checks).")
    flags.DEFINE_bool("dry_run", False, "Print the training commands and stop.")
    flags.DEFINE_list("export_formats", [], "Also write these beside the SavedModel, with parity on the full "
                      "test split (python -m zoo.export): onnx, litert, litert:float16, litert:int8, onnx:int8.")
    flags.DEFINE_integer("version", None, "Export version (default: the entry's). Above a published entry's, "
                         "the new version is published and the old one kept as superseded.")
    flags.DEFINE_enum("serving_precision", "float32", ["float32", "bfloat16"], "What the SavedModel computes "
                      "in, whatever the training precision; bfloat16 only on request (its model card says so).")


def train_command(entry, run_dir, data_dir=None, extra=()):
    """The training command of an entry. A zoo entry trains the registry's epochs whatever
    the machine: a flagfile's wall-clock budget (the demo's) is turned off."""
    cmd = [sys.executable, "-m", "wmse_tf.train", f"--flagfile={entry['config']}", f"--model_dir={run_dir}",
           "--time_budget=0"]
    if data_dir:
        cmd.append(f"--data_dir={data_dir}")
    return cmd + list(extra)


def train(entry, run_dir, data_dir=None, extra=()):
    """Runs the training subprocess; returns its wall time in seconds."""
    cmd = train_command(entry, run_dir, data_dir, extra)
    print("+", " ".join(cmd), flush=True)
    start = time.time()
    code = subprocess.call(cmd)
    if code == 2:  # wmse_tf.train printed its one-line `error:` (bad flags, dataset missing, ...)
        raise errors.UserError(f"training stopped on the error above: {' '.join(cmd)}")
    if code != 0:
        raise RuntimeError(f"training {entry['name']} failed with exit code {code}: {' '.join(cmd)}")
    return round(time.time() - start, 1)


def check_export(encoder, version_dir, dataset, precision="float32", data_dir=None):
    """`serving_default` of the SavedModel on 64 test images matches the trained Keras encoder run in
    `precision` (float32: to 1e-4)."""
    import numpy as np

    from wmse_tf.export import formats, portable, saved_model
    from zoo import export as zoo_export

    spec = portable.spec_of(saved_model.read_card(version_dir), version_dir)
    images, _ = zoo_export.split_images(dataset, "test", spec.image_size, 64, data_dir)
    keras_encoder = saved_model.with_precision(encoder, precision)
    theirs = keras_encoder(formats.portable_input(images, spec), training=False).numpy().astype(np.float32)
    ours = formats.serving_features(version_dir, images)
    tolerance = formats.TOLERANCE if precision == "float32" else 2e-2
    if not np.allclose(ours, theirs, rtol=tolerance, atol=tolerance):
        raise RuntimeError(f"{version_dir}: SavedModel features differ from the Keras encoder's "
                           f"(max |diff| {np.abs(ours - theirs).max():.3g})")


def build(entry, runs_dir, export_dir, registry_path, data_dir=None, skip_train=False, extra=(),
          eval_config=None, export_formats=(), precision="float32", version=None):
    """Builds one entry; returns the registry entry as updated.

    `export_formats`: [(format, quantize)] written beside the SavedModel (zoo.export), registered too.
    `precision`: what the SavedModel computes in (`export_encoder`): float32, or bfloat16 on request.
    `version`: default the entry's; a higher one is published beside the entry (`publish`)."""
    from wmse_tf.core import encoders
    from wmse_tf.export import saved_model as export
    from wmse_tf.training import run_log

    name = entry["name"]
    run_dir = os.path.join(runs_dir, name)
    wall_seconds = None if skip_train else train(entry, run_dir, data_dir, extra)
    if not os.path.exists(os.path.join(run_dir, "encoder.keras")):
        raise FileNotFoundError(f"{run_dir}/encoder.keras not found: train first (drop --skip_train)")
    with open(os.path.join(run_dir, "flags.json")) as f:
        run_flags = json.load(f)
    if run_flags.get("dataset") != entry["dataset"]:
        raise ValueError(f"{run_dir} was trained on {run_flags.get('dataset')!r}, the entry says {entry['dataset']!r}")
    encoder = encoders.load(os.path.join(run_dir, "encoder.keras"))
    version_dir = export.export_encoder(
        encoder, export_dir, name, version or entry["version"], dataset=entry["dataset"],
        spec=export.input_spec_from_flags(run_flags), overwrite=True, precision=precision,
        card={"method": entry["method"], "views": entry["views"], "config": entry["config"], "flags": run_flags})
    check_export(encoder, version_dir, entry["dataset"], precision, data_dir)
    # the run's own log sums its epochs across interruptions; older logs: this command's wall time
    logged = run_log.training_seconds(run_dir)
    built = {"date": datetime.date.today().isoformat(), "train_seconds": wall_seconds if logged is None else logged,
             "epochs": run_flags.get("epochs"), "command": " ".join(train_command(entry, run_dir)[1:])}
    return publish(entry, version_dir, {"built": built}, registry_path, eval_config, export_formats, data_dir)


def publish(entry, version_dir, fields, registry_path, eval_config=None, export_formats=(), data_dir=None):
    """Evaluates the SavedModel at `version_dir` (the features it serves), records the metrics in its
    card, writes `export_formats` beside it and registers it: `entry` updated, or, for a new version
    of a built entry, added with the old one superseded. Returns the registry entry."""
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.export import saved_model as export

    eval_config = eval_config or eval_lib.EvalConfig(data_dir=data_dir)
    results = eval_lib.evaluate(version_dir, eval_config)
    print(eval_lib.format_table(results), flush=True)
    metrics = zoo.metrics(results, eval_config)
    card = export.read_card(version_dir)
    export.write_json(os.path.join(version_dir, export.CARD_NAME), dict(card, metrics=metrics))
    if export_formats:
        from zoo import export as zoo_export

        by_format = {}
        for fmt, q in export_formats:
            by_format.setdefault(fmt, []).append(q)
        for fmt, quantize in by_format.items():
            zoo_export.export_all(version_dir, [fmt], quantize, evaluate=True, eval_epochs=eval_config.probe.epochs,
                                  data_dir=data_dir)
    files = export.file_hashes(version_dir, skip=())
    fields = dict(fields, status="published", metrics=metrics, files=files, export=_display_path(version_dir),
                  size_bytes=sum(os.path.getsize(os.path.join(version_dir, p)) for p in files),
                  num_features=results["num_features"], exports=export.read_card(version_dir).get("exports", {}))
    if entry["status"] != "planned" and card["version"] != entry["version"]:
        return zoo.publish_version(dict(entry, **fields, version=card["version"]), registry_path)
    return zoo.update(entry["name"], fields, registry_path)


def _display_path(path):
    """Relative to the repository root when inside it (portable registry), else absolute."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.relpath(os.path.abspath(path), root)
    return os.path.abspath(path) if rel.startswith("..") else rel


def main(argv):
    import traceback

    from absl import logging

    from wmse_tf import cli
    from wmse_tf.data import datasets as data
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.evaluation.linear_probe import ProbeConfig

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # SavedModel INFO lines drown the progress
    with cli.about("registry", FLAGS.registry):
        registry = zoo.load(FLAGS.registry)
    if FLAGS.all == bool(FLAGS.name):
        raise app.UsageError("give exactly one of --name=<entry> or --all")
    with cli.about("name", FLAGS.name, KeyError):
        entries = registry["models"] if FLAGS.all else [zoo.find(registry, FLAGS.name)]
    if FLAGS.dry_run:
        for entry in entries:
            print(" ".join(train_command(entry, os.path.join(FLAGS.runs_dir, entry["name"]), FLAGS.data_dir,
                                         FLAGS.train_arg)))
        return 0
    from wmse_tf.export import variants

    export_formats = variants.parse(FLAGS.export_formats)  # checked before any training
    eval_config = eval_lib.EvalConfig(data_dir=FLAGS.data_dir, probe=ProbeConfig(epochs=FLAGS.eval_epochs),
                                      knn=tuple(FLAGS.knn), limit_train=FLAGS.limit_train,
                                      limit_test=FLAGS.limit_test)
    codes = []
    for entry in entries:  # one entry failing (e.g. dataset missing) must not stop --all
        try:
            run_dir = os.path.join(FLAGS.runs_dir, entry["name"])
            if FLAGS.skip_train and not os.path.exists(os.path.join(run_dir, "encoder.keras")):
                raise errors.UserError(f"--skip_train: {run_dir}/encoder.keras not found; train first "
                                       "(drop --skip_train) or set --runs_dir")
            data.prepare(entry["dataset"], FLAGS.data_dir, FLAGS.download)  # download once, here
            done = build(entry, FLAGS.runs_dir, FLAGS.export_dir, FLAGS.registry, FLAGS.data_dir,
                         FLAGS.skip_train, FLAGS.train_arg, eval_config, export_formats, FLAGS.serving_precision,
                         FLAGS.version)
            print(f"published {done['name']} v{done['version']} at {done['export']}", flush=True)
        except errors.UserError as e:
            codes.append(cli.fail(f"{entry['name']}: {e}"))
        except Exception:  # a bug: its traceback, then the next entry
            traceback.print_exc()
            print(f"error: {entry['name']}: failed (traceback above)", file=sys.stderr, flush=True)
            codes.append(1)
    return 1 if 1 in codes else max(codes, default=0)


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
