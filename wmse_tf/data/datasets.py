"""Dataset registry: name -> tf.data of (uint8 image [S, S, 3], int64 label).

Sources: TFDS (cifar10, cifar100, stl10, fashion_mnist), image folders (tiny_imagenet,
imagenet100, ``folder:/path[,size=N]``), Debian's Fashion-MNIST IDX files, scikit-learn's
digits and a deterministic ``synthetic[:size=32,classes=10,train=2048,test=512,seed=0]``.
Every dataset yields RGB: grayscale sources are tiled to 3 channels at load time.
Every dataset has an ``"ssl"`` split, the one the paper trains on (STL-10: train +
unlabelled, unlabelled images with label -1). TFDS datasets are downloaded and prepared
on first use unless ``download=False`` (``wmse_tf.data.tfds``). What a name means (`info`,
`names`) is `wmse_tf.data.info`, which needs no TensorFlow.

Example:
    >>> ds = wmse_tf.data.datasets.load("fashion_mnist", "train")
"""

import functools
import gzip
import logging
import os
import struct
from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from wmse_tf.data import folders as image_folder, tfds as tfds_source
# Metadata (names, splits, sizes) lives in the TF-free datasets_info; re-exported here.
from wmse_tf.data.info import (DatasetInfo, DatasetNotFoundError, folder_spec, info, names,  # noqa: F401
                               synthetic_options)

log = logging.getLogger(__name__)
IDX_DIR = "/usr/share/datasets/fashion-mnist"
UNLABELLED = -1


def load(name: str, split: str, data_dir: Optional[str] = None,
         download: bool = True) -> tf.data.Dataset:
    """Dataset of (uint8 image [S, S, 3], int64 label), S = info(name).image_size.

    Args:
      name: a registered name (see ``names()``), ``synthetic:...`` or ``folder:/path``.
      split: one of ``info(name).splits``; "ssl" is the self-supervised training split.
      data_dir: TFDS data dir, also the root holding image folders; defaults to
        $TFDS_DATA_DIR or ~/tensorflow_datasets.
      download: download and prepare a missing TFDS dataset in data_dir (TFDS's
        ``download_and_prepare``); False raises DatasetNotFoundError instead.

    Raises:
      ValueError: unknown name or split. DatasetNotFoundError: data not available here.
    """
    meta = info(name)
    if split not in meta.splits:
        raise ValueError(f"Unknown split {split!r} for {meta.name}; valid: {meta.splits}")
    if meta.source == "tfds":
        ds = _load_tfds(meta.name, split, data_dir, download)
    elif meta.name == "fashion_mnist":
        ds = _load_fashion_mnist(split, data_dir, download)
    elif meta.source == "folder":
        ds = _load_folder(meta, split, _root(data_dir))
    else:
        images, labels = (_digits if meta.name == "digits" else _synthetic)(meta, split)
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return ds.map(tf.autograph.experimental.do_not_convert(_to_rgb), num_parallel_calls=tf.data.AUTOTUNE)


def prepare(name: str, data_dir: Optional[str] = None, download: bool = True) -> None:
    """Makes sure ``load(name, ...)`` finds its data, downloading a missing TFDS dataset.

    Cheap when the data is there (no file is read). Raises DatasetNotFoundError as ``load``.
    """
    meta = info(name)
    if meta.source == "tfds":
        tfds_source.prepared_builder(meta.name, data_dir, download)
    elif meta.name == "fashion_mnist":
        _fashion_mnist_source("train", data_dir, download)
    elif meta.source == "folder":
        _folder_base(meta, _root(data_dir))


def _to_rgb(image, label):
    if image.shape[-1] == 1:
        image = tf.tile(image, [1, 1, 3])
    return image, tf.cast(label, tf.int64)


def _root(data_dir: Optional[str]) -> str:
    return tfds_source.data_root(data_dir)


# ------------------------------------------------------------------------------------ TFDS
def _load_tfds(name: str, split: str, data_dir: Optional[str], download: bool) -> tf.data.Dataset:
    if split == "ssl":
        if name != "stl10":
            return _load_tfds(name, "train", data_dir, download)
        return _load_tfds(name, "train", data_dir, download).concatenate(
            _load_tfds(name, "unlabelled", data_dir, download))
    ds = tfds_source.load(name, split, data_dir, download)
    if split == "unlabelled":
        ds = ds.map(lambda x, y: (x, tf.constant(UNLABELLED, tf.int64)))
    return ds


# -------------------------------------------------------------------------- Fashion-MNIST
def _fashion_mnist_source(split: str, data_dir: Optional[str], download: bool):
    """("tfds", builder) if prepared, else ("idx", folder) of IDX files, else ("tfds", builder)
    downloaded with TFDS when allowed; else DatasetNotFoundError."""
    root, prefix = _root(data_dir), "train" if split == "train" else "t10k"
    if os.path.isdir(os.path.join(root, "fashion_mnist")):
        builder = tfds_source.builder("fashion_mnist", data_dir)
        if builder.is_prepared():
            return "tfds", builder
    candidates = [os.path.join(root, "fashion-mnist"), IDX_DIR]
    for folder in candidates:
        if all(os.path.exists(f"{folder}/{prefix}-{k}-ubyte.gz") for k in ("images-idx3", "labels-idx1")):
            return "idx", folder
    where = (f"fashion_mnist not found: not prepared for TFDS in {root}, and no IDX files {prefix}-"
             f"{{images-idx3,labels-idx1}}-ubyte.gz in {' or '.join(candidates)}")
    hint = "sudo apt-get install dataset-fashion-mnist  (Debian/Ubuntu)"
    try:
        return "tfds", tfds_source.prepared_builder("fashion_mnist", data_dir, download)
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(f"{where}. {e} Or: {hint}") from None


def _load_fashion_mnist(split: str, data_dir: Optional[str], download: bool) -> tf.data.Dataset:
    """TFDS if prepared, else IDX files in <data_dir>/fashion-mnist or Debian's, else TFDS download."""
    split = "train" if split == "ssl" else split
    kind, source = _fashion_mnist_source(split, data_dir, download)
    if kind == "tfds":
        return source.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte.gz"))
    return tf.data.Dataset.from_tensor_slices((images[..., None], labels.astype(np.int64)))


def idx_header(path: str) -> Tuple[int, ...]:
    """Shape stored in an (optionally gzipped) IDX file's header, read without the data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic = struct.unpack(">I", f.read(4))[0]
        if magic >> 8 != 0x08:  # 0x08 = unsigned byte data.
            raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {magic:#x})")
        ndim = magic & 0xFF
        return struct.unpack(f">{ndim}I", f.read(4 * ndim))


def read_idx(path: str) -> np.ndarray:
    """An unsigned-byte IDX file (MNIST format) as a uint8 array."""
    shape = idx_header(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * len(shape))
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


# ------------------------------------------------------------------- digits and synthetic
@functools.lru_cache(maxsize=None)
def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # Lazy: only the digits dataset needs it.

    d = load_digits()
    x = (d.images.astype(np.float32) * (255.0 / 16.0))[..., None]
    x = tf.image.resize(x, [32, 32], method="bilinear").numpy()
    return np.clip(np.round(x), 0, 255).astype(np.uint8), d.target.astype(np.int64)


def _digits(meta: DatasetInfo, split: str):
    """scikit-learn's 1797 8x8 digits at 32x32; every 5th image is the test split."""
    images, labels = _digits_arrays()
    test = np.arange(len(labels)) % 5 == 0
    keep = test if split == "test" else ~test
    return images[keep], labels[keep]


def _synthetic(meta: DatasetInfo, split: str):
    """Deterministic images: class = hue + stripe frequency/orientation; per-image noise."""
    opts = synthetic_options(meta.name.partition(":")[2])
    size, classes = opts["size"], opts["classes"]
    n = opts["test"] if split == "test" else opts["train"]
    rng = np.random.default_rng([opts["seed"], 1 if split == "test" else 0])
    labels = rng.permutation(np.arange(n) % classes).astype(np.int64)
    c = np.arange(classes)
    hue = (c / classes)[:, None] + np.array([0.0, 1 / 3, 2 / 3])[None, :]
    colours = (0.5 + 0.35 * np.cos(2 * np.pi * hue)).astype(np.float32)  # [C, 3]
    freq = (2 + c % 3).astype(np.float32)  # stripes per image.
    angle = (np.pi * c / classes).astype(np.float32)
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    images = np.empty((n, size, size, 3), np.uint8)
    for lo in range(0, n, 256):  # chunks keep the float temporaries small.
        y = labels[lo:lo + 256]
        phase = rng.uniform(0, 2 * np.pi, (len(y), 1, 1)).astype(np.float32)
        proj = (np.cos(angle[y])[:, None, None] * grid[None, None, :]
                + np.sin(angle[y])[:, None, None] * grid[None, :, None])
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq[y][:, None, None] * proj + phase)
        img = colours[y][:, None, None, :] * (0.55 + 0.45 * stripes[..., None])
        img = img + rng.normal(0, 0.04, img.shape).astype(np.float32)
        images[lo:lo + 256] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return images, labels


# ---------------------------------------------------------------------------- image folders
_FOLDER_CANDIDATES = {"tiny_imagenet": ("tiny-imagenet-200", "tiny_imagenet"),
                      "imagenet100": ("imagenet100", "imagenet-100")}
_FOLDER_HELP = {
    "tiny_imagenet": "Get it with: wget http://cs231n.stanford.edu/tiny-imagenet-200.zip && "
                     "unzip tiny-imagenet-200.zip -d {root}  (layout train/<wnid>/images/"
                     "*.JPEG, val/images/*.JPEG + val/val_annotations.txt)",
    "imagenet100": "Create {root}/imagenet100/{{train,val}}/<wnid>/*.JPEG holding the 100 "
                   "ImageNet classes of CMC (Tian et al. 2019), e.g. with symlinks into an "
                   "ImageNet copy",
}


def _folder_base(meta: DatasetInfo, root: str) -> str:
    """The folder holding a folder dataset (its train/, val/, ... or its class folders)."""
    if meta.name.startswith("folder:"):
        return folder_spec(meta.name.partition(":")[2])[0]
    tried = [os.path.join(root, c) for c in _FOLDER_CANDIDATES[meta.name]]
    base = next((t for t in tried if os.path.isdir(os.path.join(t, "train"))), None)
    if base is None:
        raise DatasetNotFoundError(
            f"{meta.name} not found: no train/ folder in {' or '.join(tried)}. "
            + _FOLDER_HELP[meta.name].format(root=root))
    return base


def _load_folder(meta: DatasetInfo, split: str, root: str) -> tf.data.Dataset:
    """Decoded, RGB, S x S images of a class-per-folder tree; bad files skipped, counted."""
    split = "train" if split == "ssl" else split
    base = _folder_base(meta, root)
    has_splits = os.path.isdir(os.path.join(base, "train"))
    split_dir = os.path.join(base, split) if has_splits else base
    if not os.path.isdir(split_dir):
        raise DatasetNotFoundError(f"{meta.name}: split folder {split_dir} does not exist")
    classes = image_folder.class_names(os.path.join(base, "train") if has_splits else base)
    pairs = image_folder.list_split(split_dir, classes)
    return image_folder.decoded_dataset(pairs, meta.image_size, f"{meta.name}/{split}")
