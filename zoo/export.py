"""Export a SavedModel encoder to ONNX and LiteRT, beside it, with parity and (optionally) accuracy.

  python -m zoo.export --model=zoo/exports/wmse2_fashion_mnist/2 --format=onnx,litert
  python -m zoo.export --model=... --format=litert --quantize=float16,int8 --evaluate

For each format x quantization, `wmse_tf.export.formats.export_format` writes
`<model>/encoder[_<quantize>].<onnx|tflite>` atomically and records it in the model card
(sha256, converter versions, input contract, parity). Parity runs on every image of the
card's dataset test split (`--parity_limit` to cut it; `--parity=random` for 64 random
images). `--evaluate` adds the zoo's protocol on the full splits with the file's features:
the 500-epoch linear probe and 5-NN (Euclidean). When `--registry` holds an entry whose
`export` is `--model`, its `exports`, `files` and `size_bytes` are updated too.
"""

import os

from absl import app, flags

import zoo

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model", None, "SavedModel version dir (or its model dir: the latest version).")
    flags.DEFINE_list("format", ["onnx", "litert"], "Formats: onnx, litert.")
    flags.DEFINE_list("quantize", ["none"], "Quantizations: none, float16 (litert), int8.")
    flags.DEFINE_enum("parity", "test", ["test", "random"], "Parity images: the dataset's test split, or "
                      "64 random uint8 images.")
    flags.DEFINE_integer("parity_limit", None, "Parity on the first N test images only.")
    flags.DEFINE_bool("evaluate", False, "Linear probe (500 epochs) and 5-NN on the full splits with the "
                      "file's features; recorded in the card and registry.")
    flags.DEFINE_integer("eval_epochs", 500, "Linear-probe epochs (the zoo's protocol: 500).")
    flags.DEFINE_string("registry", zoo.REGISTRY, "Registry JSON to update ('' for none).")
    flags.DEFINE_string("data_dir", None, "Dataset dir (as for training).")


def split_images(dataset, split, size, limit=None, data_dir=None):
    """(uint8 [N, S, S, 3], int64 [N]) of a split; images of another size get the eval transform."""
    import numpy as np
    import tensorflow as tf

    from wmse_tf.data import datasets, eval_transform

    ds = datasets.load(dataset, split, data_dir=data_dir, download=False)
    if limit:
        ds = ds.take(limit)
    fit = lambda x, y: (x if x.shape[0] == size and x.shape[1] == size else eval_transform.fit_uint8(x, size), y)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds.map(fit).batch(1000).prefetch(tf.data.AUTOTUNE)])
    return np.concatenate(xs), np.concatenate(ys)


def accuracy(path, dataset, size, epochs=500, data_dir=None):
    """The zoo's protocol on the file's features: linear probe + 5-NN Euclidean, full splits."""
    from wmse_tf.data import info
    from wmse_tf.evaluation import evaluator
    from wmse_tf.evaluation.linear_probe import ProbeConfig
    from wmse_tf.export import formats

    meta = info.info(dataset)
    run = formats.runner(path)
    train_x, train_y = split_images(dataset, meta.train_split, size, data_dir=data_dir)
    test_x, test_y = split_images(dataset, meta.test_split, size, data_dir=data_dir)
    config = evaluator.EvalConfig(probe=ProbeConfig(epochs=epochs), knn=("euclidean:5",))
    results = evaluator.evaluate_features(formats.batched(run, train_x), train_y, formats.batched(run, test_x),
                                          test_y, config, meta.num_classes)
    return {"linear": {k: results["linear"][k] for k in ("top1", "top5")},
            "knn": {k: {"top1": v["top1"]} for k, v in results["knn"].items()},
            "num_train": int(len(train_y)), "num_test": int(len(test_y)), "protocol": zoo.protocol(config)}


def export_all(version_dir, formats_, quantize=("none",), parity="test", parity_limit=None, evaluate=False,
               eval_epochs=500, data_dir=None):
    """Exports every format x quantization it offers; returns {file name: card record}."""
    from wmse_tf import cli
    from wmse_tf.export import formats, portable, saved_model, variants

    for q in quantize:  # each format gets the quantizations it offers; one offered by none is an error
        if not any(q in variants.quantizations(fmt) for fmt in formats_):
            variants.file_name(formats_[0], q)
    names = [(fmt, q, variants.file_name(fmt, q)) for fmt in formats_ for q in quantize
             if q in variants.quantizations(fmt)]
    card = saved_model.read_card(version_dir)
    spec = portable.spec_of(card, version_dir)
    images, images_name = None, None
    if parity == "test":
        dataset = card.get("dataset")
        if not dataset:
            raise app.UsageError(f"{version_dir}: the model card names no dataset; use --parity=random")
        from wmse_tf.data import info

        split = info.info(dataset).test_split
        with cli.about("parity", f"{dataset}:{split}"):
            images, _ = split_images(dataset, split, spec.image_size, parity_limit, data_dir)
        images_name = f"{dataset} {split}, {'first' if parity_limit else 'all'} {len(images)}"
    records = formats.export_formats(version_dir, [(fmt, q) for fmt, q, _ in names], images, images_name)
    for fmt, q, name in names:
        record = records[name]
        if evaluate:
            record["metrics"] = accuracy(os.path.join(version_dir, name), card["dataset"], spec.image_size,
                                         eval_epochs, data_dir)
            card = saved_model.read_card(version_dir)
            card["exports"][name] = record
            saved_model.write_json(os.path.join(version_dir, saved_model.CARD_NAME), card)
        vs = record["parity"]["vs_serving_default"]
        print(f"{name}: {record['size_bytes']} bytes, vs serving_default max abs {vs['max_abs']:.3g}, "
              f"cosine min {vs['cosine_min']:.6f}; vs float32 graph max abs "
              f"{record['parity']['vs_float32_graph']['max_abs']:.3g} on {record['parity']['on']}", flush=True)
    return records


def register(version_dir, registry_path):
    """Copies the card's exports and the version dir's hashes into the entry exported there."""
    from wmse_tf.export import saved_model

    registry = zoo.load(registry_path)
    target = os.path.realpath(version_dir)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for entry in registry["models"]:
        if entry.get("export") and os.path.realpath(os.path.join(root, entry["export"])) == target:
            files = saved_model.file_hashes(version_dir, skip=())
            fields = {"exports": saved_model.read_card(version_dir).get("exports", {}), "files": files,
                      "size_bytes": sum(os.path.getsize(os.path.join(version_dir, p)) for p in files)}
            return zoo.update(entry["name"], fields, registry_path)
    return None


def main(argv):
    from absl import logging

    from wmse_tf import cli
    from wmse_tf.export import saved_model

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.model:
        raise app.UsageError("--model is required: a SavedModel export dir, e.g. zoo/exports/wmse2_fashion_mnist/2")
    logging.set_verbosity(logging.WARNING)
    with cli.about("model", FLAGS.model, OSError, FileNotFoundError):
        version_dir = saved_model.latest_version_dir(FLAGS.model)
    export_all(version_dir, FLAGS.format, FLAGS.quantize, FLAGS.parity, FLAGS.parity_limit, FLAGS.evaluate,
               FLAGS.eval_epochs, FLAGS.data_dir)
    if FLAGS.registry:
        entry = register(version_dir, FLAGS.registry)
        if entry:
            print(f"registered in {FLAGS.registry}: {entry['name']} v{entry['version']}", flush=True)
    return 0


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
