"""Features of a folder of images or a registry split, from an exported encoder, to .npz.

  python -m zoo.extract_features --model=zoo/exports/wmse2_fashion_mnist --folder=photos/ --output=f.npz
  python -m zoo.extract_features --model=... --dataset=fashion_mnist --split=test --output=f.npz

The .npz holds `features` float32 [N, F], `labels` int64 [N] (a folder's class
sub-directory index in sorted order, or -1 for images directly in the folder;
the dataset's labels for a split), `filenames` [N] (paths relative to the folder,
or "<dataset>/<split>/<index>"), `classes` (sub-directory names) and `model`.
Folders go through the `serving_bytes` signature (decoded and resized inside the
graph); files TF cannot decode are skipped and listed. Batched, with a progress
bar, written atomically.
"""

import os

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def define_flags():
    """Defines this script's flags (only when run as a script: the modules are importable)."""
    flags.DEFINE_string("model", None, "SavedModel version dir, or <name>/ dir (latest version).")
    flags.DEFINE_string("folder", None, "Folder of images (optionally one sub-folder per class).")
    flags.DEFINE_string("dataset", None, "Registered dataset name (instead of --folder).")
    flags.DEFINE_string("split", "test", "Split of --dataset.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir / image-folder root for --dataset.")
    flags.DEFINE_bool("download", True, "Download and prepare a missing TFDS dataset into --data_dir first.")
    flags.DEFINE_string("output", None, "Output .npz path.")
    flags.DEFINE_integer("batch_size", 64, "Images per batch.")
    flags.DEFINE_integer("limit", None, "Only the first N images.")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")


def list_images(folder):
    """(relative paths, labels, class names): class = first sub-directory, -1 at the top level."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    paths, labels = [], []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
                top = rel.split("/")[0]
                paths.append(rel)
                labels.append(classes.index(top) if "/" in rel else -1)
    return paths, np.array(labels, np.int64), classes


def folder_features(loaded, folder, batch_size=64, limit=None, progress=True):
    """Features of every decodable image under `folder`; returns (features, labels, names, skipped, classes)."""
    import tensorflow as tf

    from wmse_tf.evaluation.features import progress_bar

    paths, labels, classes = list_images(folder)
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    sig = loaded.signatures["serving_bytes"]

    def run(blobs):
        return sig(image_bytes=tf.constant(blobs))["feature_vector"].numpy()

    bar = progress_bar(len(paths), "image") if progress else None
    feats, keep, skipped = [], [], []
    for start in range(0, len(paths), batch_size):
        chunk = list(range(start, min(start + batch_size, len(paths))))
        blobs = []
        for i in chunk:
            with open(os.path.join(folder, paths[i]), "rb") as f:
                blobs.append(f.read())
        try:
            feats.append(run(blobs))
            keep += chunk
        except tf.errors.InvalidArgumentError:  # a bad file: retry one by one, skip the bad ones
            for i, blob in zip(chunk, blobs):
                try:
                    feats.append(run([blob]))
                    keep.append(i)
                except tf.errors.InvalidArgumentError:
                    skipped.append(paths[i])
        if bar:
            bar.update(chunk[-1] + 1)
    if not keep:
        raise ValueError(f"none of the {len(paths)} files under {folder} could be decoded")
    names = np.array([paths[i] for i in keep])
    return np.concatenate(feats), labels[keep], names, skipped, classes


def split_features(model_path, dataset, split, data_dir=None, batch_size=64, limit=None, progress=True):
    """Features of a registry split through the SavedModel (path or opened `eval_lib.FeatureSource`);
    returns (features, labels, names)."""
    from wmse_tf.evaluation import evaluator as eval_lib

    config = eval_lib.EvalConfig(data_dir=data_dir, batch_size=batch_size, progress=progress)
    model = model_path if isinstance(model_path, eval_lib.FeatureSource) else eval_lib.open_model(model_path)
    x, y = eval_lib.eval_split(model, dataset, split, config, limit)
    return x, y, np.array([f"{dataset}/{split}/{i}" for i in range(len(y))])


def main(argv):
    from wmse_tf import cli, errors
    from wmse_tf.data import datasets as data
    from wmse_tf.evaluation import evaluator as eval_lib, features
    from wmse_tf.export import saved_model as export

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if bool(FLAGS.folder) == bool(FLAGS.dataset):
        raise app.UsageError("give exactly one of --folder or --dataset")
    with cli.about("model", FLAGS.model):  # a missing path, not a SavedModel, a corrupt one
        version_dir = export.latest_version_dir(FLAGS.model)
        model = features.load_saved_model(version_dir) if FLAGS.folder else eval_lib.open_model(version_dir)
    classes, skipped = [], []
    if FLAGS.folder:
        if not os.path.isdir(FLAGS.folder) or not os.access(FLAGS.folder, os.R_OK | os.X_OK):
            raise errors.UserError(f"--folder={FLAGS.folder}: not a readable folder; give a folder of images "
                                   "(optionally one sub-folder per class)")
        with cli.about("folder", FLAGS.folder, OSError):
            paths = list_images(FLAGS.folder)[0]
        if not paths:
            raise errors.UserError(f"--folder={FLAGS.folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it "
                                   "or its sub-folders")
        with cli.about("folder", FLAGS.folder):  # a file that cannot be read, none decodable
            x, y, names, skipped, classes = folder_features(model, FLAGS.folder, FLAGS.batch_size, FLAGS.limit,
                                                            FLAGS.progress)
    else:
        with cli.about("dataset", FLAGS.dataset):
            meta = data.info(FLAGS.dataset)
        if FLAGS.split not in meta.splits:
            raise errors.UserError(f"--split={FLAGS.split}: not a split of {FLAGS.dataset}; valid: {meta.splits}")
        data.prepare(FLAGS.dataset, FLAGS.data_dir, FLAGS.download)  # downloads a missing TFDS dataset
        x, y, names = split_features(model, FLAGS.dataset, FLAGS.split, FLAGS.data_dir, FLAGS.batch_size,
                                     FLAGS.limit, FLAGS.progress)
    with cli.about("output", FLAGS.output, OSError):
        features.save_npz(FLAGS.output, features=x, labels=y, filenames=names,
                          classes=np.array(classes, dtype=str), model=np.array(version_dir))
    print(f"wrote {FLAGS.output}: features {x.shape}, {len(set(y.tolist()))} label value(s)")
    if skipped:
        print(f"skipped {len(skipped)} undecodable file(s), e.g. {skipped[:3]}")
    return 0


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    flags.mark_flags_as_required(["model", "output"])
    cli.run(main)
