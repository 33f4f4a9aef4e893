"""Re-export a built zoo entry as a new version from its trained weights; the old version is kept.

  python -m zoo.reexport --name=wmse4_fashion_mnist
  python -m zoo.reexport --name=wmse2_fashion_mnist --export_formats=onnx,litert

The variables of the entry's SavedModel (its trained weights) go into the encoder its card's
flags describe, built under the float32 policy (`wmse_tf.export.portable.float_encoder`), which
is exported as the next version with the card's method, views, config and flags
(`export_encoder`: a float32 serving graph, or bfloat16 with --serving_precision=bfloat16),
checked against that encoder, evaluated with the entry's registered protocol, given its ONNX /
LiteRT files (parity on the full test split, accuracy of each file) and registered
(`zoo.build.publish`): the new version "published", the old one "superseded" (`superseded_by`),
its files left where they are.
"""

import datetime
import os

from absl import app, flags

import zoo

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ["onnx", "litert", "litert:float16", "litert:int8"]


def define_flags():
    flags.DEFINE_string("name", None, "Zoo entry to re-export (its current version).")
    flags.DEFINE_string("registry", zoo.REGISTRY, "Registry JSON.")
    flags.DEFINE_string("export_dir", "zoo/exports", "SavedModels go to <export_dir>/<name>/<version>.")
    flags.DEFINE_list("export_formats", FORMATS, "Files written beside the SavedModel (python -m zoo.export), "
                      "with parity on the full test split and their accuracy.")
    flags.DEFINE_enum("serving_precision", "float32", ["float32", "bfloat16"], "What the new SavedModel "
                      "computes in; bfloat16 only on request (its model card says so).")
    flags.DEFINE_string("data_dir", None, "Dataset dir (as for training).")


def reexport(entry, export_dir, registry_path, precision="float32", export_formats=(), data_dir=None,
             eval_config=None):
    """Publishes the next version of the built `entry` from its weights; returns the new entry.

    `eval_config`: default the entry's registered protocol (`zoo.evaluate.eval_config_for`)."""
    from wmse_tf.export import formats, portable, saved_model
    from zoo import build, evaluate as zoo_evaluate

    if entry["status"] != "published":
        raise ValueError(f"zoo entry {entry['name']!r} is {entry['status']}: only a published entry is re-exported")
    old_dir = os.path.join(ROOT, entry["export"])
    encoder, spec, card = portable.float_encoder(old_dir)
    version = max(entry["version"] + 1, saved_model.next_version(os.path.join(export_dir, entry["name"])))
    carried = {k: card[k] for k in ("method", "views", "config", "flags") if k in card}
    carried["reexported_from"] = {"version": entry["version"], "serving_precision": formats.serving_precision(card),
                                  "weights": "its variables, unchanged"}
    version_dir = saved_model.export_encoder(encoder, export_dir, entry["name"], version, dataset=card["dataset"],
                                             spec=spec, card=carried, precision=precision)
    build.check_export(encoder, version_dir, card["dataset"], precision, data_dir)
    eval_config = eval_config or zoo_evaluate.eval_config_for(entry["metrics"], data_dir, progress=False)
    built = dict(entry.get("built") or {}, reexported={
        "date": datetime.date.today().isoformat(), "from_version": entry["version"], "serving_precision": precision,
        "command": f"-m zoo.reexport --name={entry['name']}"})
    return build.publish(entry, version_dir, {"built": built}, registry_path, eval_config, export_formats, data_dir)


def main(argv):
    from absl import logging

    from wmse_tf import cli
    from wmse_tf.export import variants

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.name:
        raise app.UsageError("--name=<zoo entry> is required")
    logging.set_verbosity(logging.WARNING)
    export_formats = variants.parse(FLAGS.export_formats)
    with cli.about("registry", FLAGS.registry):
        registry = zoo.load(FLAGS.registry)
    with cli.about("name", FLAGS.name, KeyError):
        entry = zoo.find(registry, FLAGS.name)
    done = reexport(entry, FLAGS.export_dir, FLAGS.registry, FLAGS.serving_precision, export_formats, FLAGS.data_dir)
    print(f"published {done['name']} v{done['version']} at {done['export']} ({FLAGS.serving_precision}); "
          f"v{entry['version']} superseded", flush=True)
    return 0


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
