"""Train a self-supervised encoder (W-MSE and baselines): the command-line entry point.

  python -m wmse_tf.train --flagfile=configs/cifar10.flags --model_dir=runs/cifar10
  python -m wmse_tf.train --flagfile=configs/smoke.flags --print_config

The only module that reads absl FLAGS: they become one validated, frozen
`wmse_tf.training.config.TrainConfig` handed to `wmse_tf.training.trainer.run`. A run resumes from
model_dir's newest checkpoint automatically; a missing TFDS dataset is downloaded first
(unless --nodownload). Exit codes: 0 done, 2 a user error, printed as one `error:` line
(bad flags or flagfile, dataset missing, model_dir locked by another run), 3 NaN/Inf loss,
4 a write to model_dir failed (disk full, read-only; the last checkpoint is intact),
5 stopped as unhealthy (--on_unhealthy=stop; last checkpoint written), 128 + N stopped by
signal N (after checkpointing). See docs/training.md, docs/reliability.md.
"""

import dataclasses
import json

from absl import flags, logging

from wmse_tf import cli, onednn
from wmse_tf.core import archs
from wmse_tf.data import augment_config
from wmse_tf.training import config as config_lib, resolve

FLAGS = flags.FLAGS
_AUG_FIELDS = [f for f in dataclasses.fields(augment_config.AugmentConfig) if f.name not in ("mean", "std")]

# Data.
flags.DEFINE_string("dataset", "cifar10", "Dataset: cifar10, cifar100, stl10, tiny_imagenet, imagenet100, "
                    "fashion_mnist, digits, synthetic[:size=..], folder:/path[,size=N].")
flags.DEFINE_string("data_dir", None, "TFDS data dir / root of image folders (default $TFDS_DATA_DIR).")
flags.DEFINE_bool("download", True, "Download and prepare a missing TFDS dataset into --data_dir first.")
flags.DEFINE_string("train_split", "ssl", "Split trained on ('ssl': the paper's, e.g. STL-10 train+unlabelled).")
flags.DEFINE_integer("shuffle_buffer", 16384, "Images in the shuffle buffer.")
flags.DEFINE_string("cache", "memory", "Decoded-image cache: memory, none, or a file prefix.")
# Augmentation: unset = the dataset's recipe (wmse_tf.data.augment_config.recipe).
for _f in _AUG_FIELDS:
    if _f.name in ("image_size", "eval_resize"):
        flags.DEFINE_integer(_f.name, None, f"Augmentation {_f.name} (default: dataset recipe).")
    elif _f.name == "interpolation":
        flags.DEFINE_enum(_f.name, None, ["bicubic", "bilinear"], "Crop resampling (default: recipe).")
    else:
        flags.DEFINE_float(_f.name, None, f"Augmentation {_f.name} (default: dataset recipe).")
# Model and method.
flags.DEFINE_string("method", "wmse", "Method, from the wmse_tf.methods registry (wmse, contrastive, byol, ...).")
flags.DEFINE_integer("num_views", 4, "Views (augmentations) per image, >= 2 (W-MSE 4 / W-MSE 2).")
flags.DEFINE_enum("arch", "resnet18", sorted(archs.ARCHS, key=archs.ARCHS.get), "Encoder architecture.")
flags.DEFINE_integer("width", 64, "Channels of the first ResNet stage (64 in the paper).")
flags.DEFINE_enum("stem", "auto", ["auto", "cifar", "small", "imagenet"],
                  "ResNet stem; auto = per dataset (cifar: 3x3 no pool; stl10/tiny: 3x3 + pool; imagenet).")
flags.DEFINE_integer("emb", 64, "Embedding (projector output) size.")
flags.DEFINE_integer("hidden", 1024, "Hidden units of the projector.")
flags.DEFINE_integer("w_size", 128, "Whitening sub-batch size (W-MSE); > emb, divides the per-replica batch.")
flags.DEFINE_integer("w_iter", 1, "Whitening iterations (random sub-batch splits) per step.")
flags.DEFINE_float("w_eps", 0.0, "Covariance shrinkage towards identity, in [0, 1).")
flags.DEFINE_float("tau", 0.5, "Temperature of the contrastive baseline.")
flags.DEFINE_bool("whiten_contrastive", False, "Contrastive baseline: whiten before the loss.")
flags.DEFINE_float("byol_tau", 0.99, "BYOL: base EMA coefficient of the target network.")
# Optimization.
flags.DEFINE_integer("batch_size", 256, "GLOBAL batch: images per step over all replicas, before views.")
flags.DEFINE_integer("epochs", 1000, "Epochs (passes over the training split); with --time_budget, the "
                     "shape of the lr schedule (warmup, drops at the same fractions), not the length.")
flags.DEFINE_string("time_budget", "0", "Wall-clock budget of the training loop, e.g. 8m, 90s, 1.5h (0 = off): "
                    "times the first steps, plans the steps that fit and lays the lr schedule over them; "
                    "a resumed run keeps its plan (<model_dir>/plan.json). See wmse_tf/training/budget.py.")
flags.DEFINE_integer("steps_per_epoch", 0, "Cap on steps per epoch (0 = the full split), for smoke runs.")
flags.DEFINE_float("lr", 3e-3, "Peak learning rate.")
flags.DEFINE_integer("warmup", 500, "Linear warmup steps (iterations, not epochs).")
flags.DEFINE_enum("lr_schedule", "step", list(config_lib.SCHEDULES), "Decay after warmup.")
flags.DEFINE_list("lr_drop_epochs", ["50", "25"], "Step schedule: drop the lr this many epochs before the end.")
flags.DEFINE_float("lr_drop_gamma", 0.2, "Step schedule: factor of each drop.")
flags.DEFINE_enum("optimizer", "adam", list(config_lib.OPTIMIZERS), "Optimizer.")
flags.DEFINE_float("weight_decay", 1e-6, "Decoupled weight decay (Keras weight_decay; see schedules.py).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
# Distribution and speed.
flags.DEFINE_enum("strategy", "default", list(config_lib.STRATEGIES),
                  "default: one device; mirrored: local GPUs; multi_worker: TF_CONFIG; tpu.")
flags.DEFINE_list("devices", [], "Devices for --strategy=mirrored (default: all local GPUs).")
flags.DEFINE_integer("cpu_replicas", 0, "Split the CPU into N logical devices (tests of --strategy=mirrored).")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu (default: from the environment).")
flags.DEFINE_bool("whiten_across_replicas", False,
                  "Gather the projections of all replicas so whitening sees the global batch.")
flags.DEFINE_enum("mixed_precision", "auto", ["auto", *config_lib.PRECISIONS],
                  "Compute dtype policy; auto: mixed_bfloat16 on CPUs with native bf16 (else float32), "
                  "mixed_float16 on GPU, mixed_bfloat16 on TPU.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA for the per-replica train step; auto: on for one GPU and TPU, off on CPU and multi-GPU.")
flags.DEFINE_integer("steps_per_execution", 0,
                     "Train steps per tf.function call; 0 = auto: 1 on CPU, 8 on GPU, 32 on TPU.")
# Run.
flags.DEFINE_string("model_dir", None, "Checkpoints, logs, flags.json (default runs/<dataset>_<method>).")
flags.DEFINE_integer("seed", 0, "Seed of weights, data order, augmentation and permutations.")
flags.DEFINE_integer("eval_every", 20, "k-NN monitor every N epochs (and after the last); 0 = off.")
flags.DEFINE_integer("knn_k", 5, "Neighbours of the k-NN monitor.")
flags.DEFINE_integer("knn_train_images", 0, "Cap on the k-NN memory bank (0 = the whole train split).")
flags.DEFINE_integer("knn_test_images", 0, "Cap on the k-NN queries (0 = the whole test split).")
flags.DEFINE_integer("checkpoint_every", 100, "Checkpoint every N epochs (also on SIGTERM/SIGINT and at the end).")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_bool("exact_resume", False,
                  "On resume, replay the input pipeline up to the checkpoint (augments and drops every batch "
                  "seen so far) so the run continues exactly as if uninterrupted; default: reseed the data order.")
flags.DEFINE_integer("log_every", 50, "TensorBoard train/* scalars every N steps.")
flags.DEFINE_string("export_dir", "", "Also export the encoder as a SavedModel under this dir.")
flags.DEFINE_string("export_name", "", "Export model name (default wmse<views>_<dataset> for W-MSE, else <method>_<dataset>: the zoo's names).")
flags.DEFINE_integer("export_version", 0, "Export version (0 = next free).")
flags.DEFINE_list("export_formats", [], "Also write these beside the SavedModel export: onnx, litert, "
                  "litert:float16, litert:int8, onnx:int8 (wmse_tf.export.formats; parity on 64 random images; "
                  "python -m zoo.export measures it on the test split).")
flags.DEFINE_integer("verbose", 1, "0 silent, 1 progress bar, 2 one line per epoch.")
flags.DEFINE_bool("bn_per_view", False, "Encoder called once per view (BatchNorm statistics per view, as "
                  "the reference) instead of once on all views.")
flags.DEFINE_enum("knn_metric", "cosine", ["cosine", "euclidean"],
                  "k-NN monitor distance: cosine (L2-normalized features) or euclidean (the reference's).")
flags.DEFINE_enum("on_unhealthy", "warn", ["warn", "stop"],
                  "Training health (effective rank, whitening condition number, embedding spread) past its "
                  "thresholds after warmup: warn (one line) or stop (last checkpoint, reason in results.json, "
                  "exit code 5). See docs/training.md#training-health.")
flags.DEFINE_integer("health_every", 0, "Health checks also every N steps (0: epoch ends and budget re-plans).")
flags.DEFINE_integer("health_images", 2048, "Fixed batch of un-augmented training images of the health checks "
                     "(0 = no checks).")
flags.DEFINE_bool("force_resume", False, "Resume a run stopped as unhealthy with no flag changed (it then "
                  "only warns).")
flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.")


def config_from_flags(values=FLAGS, hardware=None):
    """The validated TrainConfig of parsed flags, auto values resolved (`wmse_tf.training.resolve`)."""
    recipe = config_lib.default_augment(values.dataset)
    overrides = {f.name: values[f.name].value for f in _AUG_FIELDS if values[f.name].value is not None}
    try:
        aug = dataclasses.replace(recipe, **overrides)
    except ValueError as e:
        raise config_lib.ConfigError(f"augmentation flags {overrides}: {e}") from None
    base = values.dataset.partition(":")[0]
    fields = {f.name for f in dataclasses.fields(config_lib.TrainConfig)}
    kwargs = {name: values[name].value for name in fields if name in values and name not in
              ("augment", "model_dir", "lr_drop_epochs", "devices", "time_budget")}
    try:
        drops = tuple(int(x) for x in values.lr_drop_epochs)
    except ValueError:
        raise config_lib.ConfigError(f"--lr_drop_epochs={','.join(values.lr_drop_epochs)}: "
                                     "must be integers") from None
    cfg = config_lib.TrainConfig(
        **kwargs, augment=aug, lr_drop_epochs=drops, devices=tuple(values.devices),
        time_budget=config_lib.parse_duration(values.time_budget),
        model_dir=values.model_dir or f"runs/{base}_{values.method}")
    return resolve.resolve(cfg, hardware)


def config_or_exit(argv):
    """(config, None) to run, or (None, exit code) after an error message or --print_config."""
    if len(argv) > 1:
        return None, cli.fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    try:
        cfg = config_from_flags()
    except config_lib.ConfigError as e:
        return None, cli.fail(e)
    decision = onednn.apply(archs.convolutions(cfg.arch, cfg.stem, cfg.width, cfg.image_size))
    if FLAGS.print_config:
        print(json.dumps(dict(cfg.to_dict(), runtime={"onednn": decision.line()}), indent=2, sort_keys=True))
        return None, 0
    return cfg, None


def export_variants(cfg):
    """[(format, quantize)] of --export_formats, checked; a UserError without --export_dir."""
    from wmse_tf import errors
    from wmse_tf.export import variants

    items = variants.parse(FLAGS.export_formats)
    if items and not cfg.export_dir:
        raise errors.UserError("--export_formats needs --export_dir (the files go beside the SavedModel)")
    return items


def export_formats(export_dir, name, items):
    """ONNX / LiteRT files beside the latest SavedModel version of `<export_dir>/<name>`."""
    import os

    from wmse_tf.export import formats, saved_model

    formats.export_formats(saved_model.latest_version_dir(os.path.join(export_dir, name)), items)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TF's INFO lines (e.g. per checkpoint) drown the progress bar
    cfg, code = config_or_exit(argv)
    if cfg is None:
        return code
    from wmse_tf import errors
    from wmse_tf.data import datasets as data  # imported late: flags and --print_config need no TensorFlow
    from wmse_tf.training import trainer

    try:
        formats = export_variants(cfg)  # a bad --export_formats fails before training
        data.prepare(cfg.dataset, cfg.data_dir, cfg.download)  # downloads a missing TFDS dataset once
        code = trainer.run(cfg)
        if not code and formats:
            export_formats(cfg.export_dir, cfg.export_name_or_default, formats)
        return code
    except errors.UserError as e:  # e.g. ConfigError (model_dir of another run), DatasetNotFoundError
        return cli.fail(e)


if __name__ == "__main__":
    cli.run(main)
