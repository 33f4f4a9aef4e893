"""TFDS datasets: builder, download and prepare on first use, one split as tf.data.

A dataset not prepared in the data dir is downloaded to `<data_dir>/downloads` and prepared in
`<data_dir>/<name>/<version>` through `builder.download_and_prepare` (TFDS shows its own progress
bars), as `tfds.load` does, unless `download=False`. When downloading is off or fails (offline),
`DatasetNotFoundError` names the dataset, the data dir and how to get it.

Example:
    >>> ds = wmse_tf.data.tfds.load("cifar10", "train", data_dir=None, download=True)
"""

import os
from typing import Optional

import tensorflow as tf

from wmse_tf.errors import DatasetNotFoundError


def data_root(data_dir: Optional[str] = None) -> str:
    """The TFDS data dir: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def builder(name: str, data_dir: Optional[str] = None):
    """`tfds.builder(name, data_dir=data_dir)` (the one place that makes builders)."""
    import tensorflow_datasets as tfds  # Lazy: slow import, only TFDS datasets need it.

    return tfds.builder(name, data_dir=data_dir)


def _download_errors():
    """Exceptions that mean "could not download": network (requests/urllib are OSError), disk, TFDS."""
    import tensorflow_datasets as tfds

    return (OSError, tfds.download.DownloadError)


def prepared_builder(name: str, data_dir: Optional[str] = None, download: bool = True):
    """The builder of `name`, downloading and preparing the data first when it is missing.

    Raises:
      DatasetNotFoundError: not prepared and `download` is False, or the download failed.
    """
    b = builder(name, data_dir)
    if b.is_prepared():
        return b
    root = data_root(data_dir)
    build = f"tfds build {name} --data_dir={root}"
    if not download:
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not prepared in {root} (looked for {b.data_dir}) and downloading is off "
            f"(--nodownload / download=False). Run without --nodownload to download it now, or get it with: "
            f"{build}  (needs internet once), or copy a prepared {name}/ folder into {root}.")
    downloads = os.path.join(root, "downloads")
    print(f"{name}: not prepared in {root}: downloading it to {downloads} and preparing it in {b.data_dir} "
          "(once; TFDS progress follows)", flush=True)
    try:
        b.download_and_prepare(download_dir=downloads)
    except _download_errors() as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise DatasetNotFoundError(
            f"Dataset {name!r}: downloading into {root} failed ({reason}). Check the internet connection and "
            f"rerun (TFDS resumes), or get it elsewhere with: {build}  and copy its {name}/ folder into "
            f"{root}.") from None
    return b


def load(name: str, split: str, data_dir: Optional[str] = None, download: bool = True) -> tf.data.Dataset:
    """(image, label) pairs of one TFDS split, in file order; downloads first when allowed."""
    b = prepared_builder(name, data_dir, download)
    return b.as_dataset(split=split, as_supervised=True, shuffle_files=False)
