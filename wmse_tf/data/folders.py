"""Image folders with one sub-folder per class: listing, validating, decoding.

Bad files (empty, not an image, truncated) are found up front with cheap checks of
their first and last bytes, skipped and counted in ONE warning; `ignore_errors` is a
safety net for anything the checks miss, so an epoch never crashes on a bad file.
Every image comes out RGB uint8, shorter side resized to the size, center-cropped, by
the one eval transform (`wmse_tf.data.eval_transform`) the serving graph also applies.
"""

import logging
import os
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf

from wmse_tf.data import eval_transform
from wmse_tf.data.info import class_names  # noqa: F401 (TF-free, used by datasets_info too)

log = logging.getLogger(__name__)


def image_problem(path: str) -> Optional[str]:
    """Why TF cannot decode this file ("empty", "not an image", "truncated") or None.

    Cheap checks on the first and last bytes; a file whose end marker is missing is
    decoded once with TF to be sure.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError:
        return "unreadable"
    if size == 0:
        return "empty"
    if head.startswith(b"\xff\xd8\xff"):
        complete = b"\xff\xd9" in tail
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        complete = b"IEND" in tail
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        complete = True
    elif head[:2] == b"BM":
        complete = size >= int.from_bytes(head[2:6], "little")
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        complete = size >= int.from_bytes(head[4:8], "little") + 8
    else:
        return "not an image"
    if not complete:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return "truncated"
    return None


def walk(folder: str):
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                yield os.path.join(dirpath, f)


def list_split(split_dir: str, classes: Tuple[str, ...]):
    """(path, label) pairs: <class>/[images/]**/file, or tiny's val_annotations.txt."""
    notes = os.path.join(split_dir, "val_annotations.txt")
    if os.path.exists(notes):
        index = {c: i for i, c in enumerate(classes)}
        with open(notes) as f:
            rows = [line.split("\t")[:2] for line in f if line.strip()]
        return [(os.path.join(split_dir, "images", r[0]), index[r[1]]) for r in rows
                if r[1] in index]
    pairs = []
    for label, c in enumerate(classes):
        folder = os.path.join(split_dir, c)
        if os.path.isdir(os.path.join(folder, "images")):  # tiny: skips <wnid>_boxes.txt.
            folder = os.path.join(folder, "images")
        if os.path.isdir(folder):
            pairs.extend((p, label) for p in walk(folder))
    return pairs


def decoded_dataset(pairs: List[Tuple[str, int]], size: int, where: str) -> tf.data.Dataset:
    """Dataset of (uint8 [size, size, 3], int64 label) from (path, label) pairs; bad files skipped."""
    good, bad = [], {}
    for path, label in pairs:
        problem = image_problem(path)
        if problem:
            bad.setdefault(problem, []).append(path)
        else:
            good.append((path, label))
    if bad:
        n_bad = sum(len(v) for v in bad.values())
        examples = [p for v in bad.values() for p in v][:3]
        log.warning("%s: skipped %d of %d files that are not decodable images (%s), e.g. %s",
                    where, n_bad, n_bad + len(good),
                    ", ".join(f"{k}: {len(v)}" for k, v in sorted(bad.items())), examples)
    if not good:
        raise ValueError(f"{where}: no decodable images among {len(pairs)} files")
    order = np.random.default_rng(0).permutation(len(good))  # Mix classes for shuffle buffers.
    paths = np.array([good[i][0] for i in order])
    labels = np.array([good[i][1] for i in order], np.int64)

    def decode(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, dtype=tf.uint8,
                                   expand_animations=False)
        return fit_image(image, size), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(tf.autograph.experimental.do_not_convert(decode), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.ignore_errors(log_warning=True)  # Safety net: never crash mid-epoch.


def fit_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 [H, W, 3] -> [size, size, 3]: the eval transform's resize + center crop
    (`wmse_tf.data.eval_transform.fit_uint8`); no-op if already size x size.

    Stored images are thus what the eval transform (and a served model) makes of
    the file at resize = size, so evaluating them equals serving the raw file.
    """
    return eval_transform.fit_uint8(image, size)
