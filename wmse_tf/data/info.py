"""Dataset metadata by name, without TensorFlow: sizes, classes, splits, statistics.

`wmse_tf.data.datasets` loads the images; this module only says what a name means, so the
training config can validate `--dataset` and `--train_split` without loading TF.
Names: the registered ones (`names()`), ``synthetic[:size=32,classes=10,train=2048,
test=512,seed=0]`` and ``folder:/path[,size=N]`` (an image folder, listed with `os`).

Example:
    >>> wmse_tf.data.info.info("stl10").splits
    ('train', 'test', 'unlabelled', 'ssl')
"""

import dataclasses
import os
from typing import Dict, Tuple

Triple = Tuple[float, float, float]


from wmse_tf.errors import DatasetNotFoundError  # noqa: E402,F401 (TF-free; re-exported)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What ``wmse_tf.data.datasets.load`` yields for one dataset name.

    Attributes:
      name: canonical name (with options, e.g. "synthetic:size=96,...").
      image_size: H = W of the yielded uint8 images.
      num_classes: labels are in [0, num_classes), or -1 for unlabelled images.
      splits: valid split names, always including "ssl".
      mean, std: per-channel statistics of [0, 1] pixels used to normalize.
      source: "tfds", "folder", "idx", "sklearn" or "synthetic".
      train_split, test_split: labelled splits for the linear probe / k-NN.
      colour: False for grayscale images (yielded as 3 equal channels): the augmentation
        recipe then skips the colour-only operations (saturation, hue, grayscale).
    """

    name: str
    image_size: int
    num_classes: int
    splits: Tuple[str, ...]
    mean: Triple
    std: Triple
    source: str
    train_split: str = "train"
    test_split: str = "test"
    colour: bool = True


_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_CIFAR100 = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
_STL10 = ((0.43, 0.42, 0.39), (0.27, 0.26, 0.27))
_TINY = ((0.480, 0.448, 0.398), (0.277, 0.269, 0.282))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_FASHION = ((0.2860,) * 3, (0.3530,) * 3)  # Fashion-MNIST train set, computed.
_DIGITS = ((0.3052,) * 3, (0.3241,) * 3)  # digits train split at 32 px, computed.
_SYNTH = ((0.5,) * 3, (0.25,) * 3)
_BASIC = ("train", "test", "ssl")

REGISTRY: Dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 32, 10, _BASIC, *_CIFAR10, "tfds"),
    "cifar100": DatasetInfo("cifar100", 32, 100, _BASIC, *_CIFAR100, "tfds"),
    "stl10": DatasetInfo("stl10", 96, 10, ("train", "test", "unlabelled", "ssl"), *_STL10,
                         "tfds"),
    "fashion_mnist": DatasetInfo("fashion_mnist", 28, 10, _BASIC, *_FASHION, "idx", colour=False),
    "tiny_imagenet": DatasetInfo("tiny_imagenet", 64, 200, ("train", "val", "ssl"), *_TINY,
                                 "folder", test_split="val"),
    "imagenet100": DatasetInfo("imagenet100", 256, 100, ("train", "val", "ssl"), *_IMAGENET,
                               "folder", test_split="val"),
    "digits": DatasetInfo("digits", 32, 10, _BASIC, *_DIGITS, "sklearn", colour=False),
    "synthetic": DatasetInfo("synthetic", 32, 10, _BASIC, *_SYNTH, "synthetic"),
}
SYNTH_DEFAULTS = {"size": 32, "classes": 10, "train": 2048, "test": 512, "seed": 0}


def names() -> Tuple[str, ...]:
    """Registered dataset names; any image folder is also accepted as ``folder:/path``."""
    return tuple(sorted(REGISTRY))


def info(name: str) -> DatasetInfo:
    """DatasetInfo of a registered name, ``synthetic:k=v,...`` or ``folder:/path[,size=N]``."""
    base, _, rest = name.partition(":")
    if base == "synthetic":
        opts = synthetic_options(rest)
        canon = "synthetic:" + ",".join(f"{k}={v}" for k, v in opts.items()) if rest else base
        return dataclasses.replace(REGISTRY[base], name=canon, image_size=opts["size"],
                                   num_classes=opts["classes"])
    if base == "folder":
        return _folder_info(rest)
    if name not in REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}. Registered: {', '.join(names())}, "
                         "or folder:/path/to/images[,size=N].")
    return REGISTRY[name]


def synthetic_options(rest: str) -> Dict[str, int]:
    """The options of ``synthetic:<rest>`` over SYNTH_DEFAULTS; ValueError when malformed."""
    opts = dict(SYNTH_DEFAULTS)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in opts or not value.isdigit():
            raise ValueError(f"Bad synthetic option {item!r}; use synthetic:size=32,classes=10,"
                             "train=2048,test=512,seed=0 (non-negative integers)")
        opts[key] = int(value)
    if opts["size"] < 8 or opts["classes"] < 1:
        raise ValueError(f"synthetic needs size >= 8 and classes >= 1, got {opts}")
    return opts


def class_names(folder: str) -> Tuple[str, ...]:
    """Sorted names of the visible sub-folders of `folder` (one per class)."""
    return tuple(sorted(d for d in os.listdir(folder)
                        if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))))


def folder_spec(rest: str) -> Tuple[str, int]:
    """(path, image size) of ``folder:<rest>``, rest = ``/path[,size=N]`` (size 64 by default)."""
    path, size = rest, 64
    head, _, tail = rest.rpartition(",size=")
    if head and tail.isdigit():
        path, size = head, int(tail)
    if not path:
        raise ValueError("folder datasets are named folder:/path/to/images[,size=N]")
    return os.path.expanduser(path), size


def short_name(name: str) -> str:
    """A dataset's name for file names: the registered name without options (`synthetic`),
    or an image folder's own name for ``folder:/data/flowers[,size=N]`` (`flowers`)."""
    base, _, rest = name.partition(":")
    if base != "folder" or not rest:
        return base
    return os.path.basename(os.path.normpath(folder_spec(rest)[0]))


def _folder_info(rest: str) -> DatasetInfo:
    path, size = folder_spec(rest)
    if not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"Image folder {path!r} does not exist. Expected layout: {path}/<class>/*.jpg, or "
            f"{path}/{{train,val,test}}/<class>/*.jpg (one sub-folder per class).")
    splits = tuple(s for s in ("train", "val", "test") if os.path.isdir(os.path.join(path, s)))
    train_dir = os.path.join(path, "train") if splits else path
    try:
        num_classes = len(class_names(train_dir))
    except OSError as e:  # e.g. PermissionError
        raise DatasetNotFoundError(f"Image folder {train_dir!r} cannot be read ({e}); check its permissions.") from None
    test = "test" if "test" in splits else "val" if "val" in splits else "train"
    return DatasetInfo(f"folder:{path},size={size}", size, num_classes,
                       (splits or ("train",)) + ("ssl",), *_IMAGENET, "folder", test_split=test)
