"""Every training option, declared once: name, type, default, choices and help.

`TrainOptions` is a frozen dataclass with one field per option; `wmse_tf.training.config.TrainConfig`
extends it (validation, resume keys, JSON) and `wmse_tf.train` defines one absl flag per field
(`--name`, of the field's type; an enum flag where `choices` are declared, a comma list for
tuples, a duration such as `8m` for `time_budget`). The augmentation flags (`--image_size`,
`--crop_scale_min`, ...) are the fields of `wmse_tf.data.augment_config.AugmentConfig`, unset
meaning the dataset's recipe. `stem`, `mixed_precision`, `jit_compile` default to `auto` and
`steps_per_execution` to 0, which `wmse_tf.training.resolve.resolve` replaces from the hardware.
No TensorFlow, no absl.

Example:
  >>> [f.name for f in declared()][:3]
  ['dataset', 'data_dir', 'download']
"""

import dataclasses
from typing import Optional, Tuple, Union

from wmse_tf.core import archs
from wmse_tf.data import augment_config

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("step", "cosine", "constant")
OPTIMIZERS = ("adam", "sgd")
AUTO = "auto"  # resolved by wmse_tf.training.resolve


def option(default, help, choices=None, duration=False):
    """A field of TrainOptions: its default, help text, allowed values (an enum flag) and whether
    the flag is a duration ("8m") read into seconds."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": tuple(choices) if choices else None, "duration": duration})


def declared(cls=None):
    """The fields of `cls` (default TrainOptions) that are options (each one flag), in order."""
    return [f for f in dataclasses.fields(cls or TrainOptions) if "help" in f.metadata]


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """The options of one training run, grouped as `--helpfull` shows them. Batch sizes count
    images (before views) over ALL replicas."""

    # Data.
    dataset: str = option("cifar10", "Dataset: cifar10, cifar100, stl10, tiny_imagenet, imagenet100, "
                          "fashion_mnist, digits, synthetic[:size=..], folder:/path[,size=N].")
    data_dir: Optional[str] = option(None, "TFDS data dir / root of image folders (default $TFDS_DATA_DIR).")
    download: bool = option(True, "Download and prepare a missing TFDS dataset into --data_dir first.")
    train_split: str = option("ssl", "Split trained on ('ssl': the paper's, e.g. STL-10 train+unlabelled).")
    shuffle_buffer: int = option(16384, "Images in the shuffle buffer.")
    cache: str = option("memory", "Decoded-image cache: memory, none, or a file prefix.")
    # Augmentation: one flag per AugmentConfig field (unset: the dataset's recipe).
    augment: Optional[augment_config.AugmentConfig] = None
    # Model and method.
    method: str = option("wmse", "Method, from the wmse_tf.methods registry (wmse, contrastive, byol, ...).")
    num_views: int = option(4, "Views (augmentations) per image, >= 2 (W-MSE 4 / W-MSE 2).")
    arch: str = option("resnet18", "Encoder architecture.", sorted(archs.ARCHS, key=archs.ARCHS.get))
    width: int = option(64, "Channels of the first ResNet stage (64 in the paper).")
    stem: str = option(AUTO, "ResNet stem; auto = per dataset (cifar: 3x3 no pool; stl10/tiny: 3x3 + pool; "
                       "imagenet).", (AUTO, *archs.STEMS))
    emb: int = option(64, "Embedding (projector output) size.")
    hidden: int = option(1024, "Hidden units of the projector.")
    w_size: int = option(128, "Whitening sub-batch size (W-MSE); > emb, divides the per-replica batch.")
    w_iter: int = option(1, "Whitening iterations (random sub-batch splits) per step.")
    w_eps: float = option(0.0, "Covariance shrinkage towards identity, in [0, 1).")
    tau: float = option(0.5, "Temperature of the contrastive baseline.")
    whiten_contrastive: bool = option(False, "Contrastive baseline: whiten before the loss.")
    byol_tau: float = option(0.99, "BYOL: base EMA coefficient of the target network.")
    # Optimization.
    batch_size: int = option(256, "GLOBAL batch: images per step over all replicas, before views.")
    epochs: int = option(1000, "Epochs (passes over the training split); with --time_budget, the shape of "
                         "the lr schedule (warmup, drops at the same fractions), not the length.")
    time_budget: float = option(0.0, "Wall-clock budget of the training loop, e.g. 8m, 90s, 1.5h (0 = off): "
                                "times the first steps, plans the steps that fit and lays the lr schedule over "
                                "them; a resumed run keeps its plan (<model_dir>/plan.json). See "
                                "wmse_tf/training/budget.py.", duration=True)
    steps_per_epoch: int = option(0, "Cap on steps per epoch (0 = the full split), for smoke runs.")
    lr: float = option(3e-3, "Peak learning rate.")
    warmup: int = option(500, "Linear warmup steps (iterations, not epochs).")
    lr_schedule: str = option("step", "Decay after warmup.", SCHEDULES)
    lr_drop_epochs: Tuple[int, ...] = option((50, 25), "Step schedule: drop the lr this many epochs before "
                                             "the end.")
    lr_drop_gamma: float = option(0.2, "Step schedule: factor of each drop.")
    optimizer: str = option("adam", "Optimizer.", OPTIMIZERS)
    weight_decay: float = option(1e-6, "Decoupled weight decay (Keras weight_decay; see schedules.py).")
    momentum: float = option(0.9, "SGD momentum.")
    # Distribution and speed.
    strategy: str = option("default", "default: one device; mirrored: local GPUs; multi_worker: TF_CONFIG; "
                           "tpu.", STRATEGIES)
    devices: Tuple[str, ...] = option((), "Devices for --strategy=mirrored (default: all local GPUs).")
    cpu_replicas: int = option(0, "Split the CPU into N logical devices (tests of --strategy=mirrored).")
    tpu: str = option("", "TPU name or address for --strategy=tpu (default: from the environment).")
    whiten_across_replicas: bool = option(False, "Gather the projections of all replicas so whitening sees "
                                          "the global batch.")
    mixed_precision: str = option(AUTO, "Compute dtype policy; auto: mixed_bfloat16 on CPUs with native bf16 "
                                  "(else float32), mixed_float16 on GPU, mixed_bfloat16 on TPU.",
                                  (AUTO, *PRECISIONS))
    jit_compile: Union[bool, str] = option(AUTO, "XLA for the per-replica train step; auto: on for one GPU "
                                           "and TPU, off on CPU and multi-GPU.", (AUTO, "true", "false"))
    steps_per_execution: int = option(0, "Train steps per tf.function call; 0 = auto: 1 on CPU, 8 on GPU, "
                                      "32 on TPU.")
    # Run.
    model_dir: Optional[str] = option(None, "Checkpoints, logs, flags.json (default runs/<dataset>_<method>).")
    seed: int = option(0, "Seed of weights, data order, augmentation and permutations.")
    eval_every: int = option(20, "k-NN monitor every N epochs (and after the last); 0 = off.")
    knn_k: int = option(5, "Neighbours of the k-NN monitor.")
    knn_train_images: int = option(0, "Cap on the k-NN memory bank (0 = the whole train split).")
    knn_test_images: int = option(0, "Cap on the k-NN queries (0 = the whole test split).")
    checkpoint_every: int = option(100, "Checkpoint every N epochs (also on SIGTERM/SIGINT and at the end).")
    exact_resume: bool = option(False, "On resume, replay the input pipeline up to the checkpoint (augments "
                                "and drops every batch seen so far) so the run continues exactly as if "
                                "uninterrupted; default: reseed the data order.")
    keep_checkpoints: int = option(3, "Checkpoints kept.")
    log_every: int = option(50, "TensorBoard train/* scalars every N steps.")
    export_dir: str = option("", "Also export the encoder as a SavedModel under this dir.")
    export_name: str = option("", "Export model name (default wmse<views>_<dataset> for W-MSE, else "
                              "<method>_<dataset>: the zoo's names).")
    export_version: int = option(0, "Export version (0 = next free).")
    verbose: int = option(1, "0 silent, 1 progress bar, 2 one line per epoch (wmse_tf.train: 2 when its "
                          "output is not a terminal, unless given).")
    bn_per_view: bool = option(False, "Encoder called once per view (BatchNorm statistics per view, as the "
                               "reference) instead of once on all views.")
    knn_metric: str = option("cosine", "k-NN monitor distance: cosine (L2-normalized features) or euclidean "
                             "(the reference's).", ("cosine", "euclidean"))
    # Training health (wmse_tf.training.health).
    on_unhealthy: str = option("warn", "Training health (effective rank, whitening condition number, "
                               "embedding spread) past its thresholds after warmup: warn (one line) or stop "
                               "(last checkpoint, reason in results.json, exit code 5). See "
                               "docs/training.md#training-health.", ("warn", "stop"))
    health_every: int = option(0, "Health checks also every N steps (0: epoch ends and budget re-plans).")
    health_images: int = option(2048, "Fixed batch of un-augmented training images of the health checks "
                                "(0 = no checks).")
    force_resume: bool = option(False, "Resume a run stopped as unhealthy with no flag changed (it then only "
                                "warns).")
