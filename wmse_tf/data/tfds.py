"""TFDS datasets: builder, download and prepare on first use, one split as tf.data.

A dataset not prepared in the data dir is downloaded to `<data_dir>/downloads` and prepared in
`<data_dir>/<name>/<version>` through `builder.download_and_prepare` (TFDS shows its own progress
bars), as `tfds.load` does, unless `download=False`. Before TFDS starts, one TCP connect per
download host (`download_host.unreachable`, 5 s) tells an offline machine in seconds instead of
after TFDS's 3.5 minutes of retries. When downloading is off, the host is unreachable or the
download fails, `DatasetNotFoundError` names the dataset, the data dir, `--nodownload` and how to
prepare it elsewhere, and the partial downloads of that attempt are removed.

Example:
    >>> ds = wmse_tf.data.tfds.load("cifar10", "train", data_dir=None, download=True)
"""

import os
import shutil
from typing import Optional

import tensorflow as tf

from wmse_tf.data import download_host
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


def _elsewhere(name: str, root: str) -> str:
    return (f"pass --nodownload to fail at once when offline, or prepare it on a machine with internet with "
            f"`tfds build {name} --data_dir={root}` and copy its {name}/ folder into {root} here")


def _downloads_for_real(b) -> bool:
    """True when `b.download_and_prepare` is TFDS's own, not a stand-in (tfds.testing.mock_data, a fake)."""
    method = getattr(type(b), "download_and_prepare", None)
    return getattr(method, "__module__", "").startswith("tensorflow_datasets.core")


def _tree(root: str, name: str) -> set:
    """Paths a download of `name` may create: two levels of `<root>/downloads` and `<root>/<name>`."""
    tops = [os.path.join(root, "downloads"), os.path.join(root, name)]
    paths = {p for p in tops if os.path.isdir(p)}
    for top in list(paths):
        for entry in os.listdir(top):
            paths.add(os.path.join(top, entry))
            if os.path.isdir(os.path.join(top, entry)) and not entry.startswith("extracted"):
                paths.update(os.path.join(top, entry, e) for e in os.listdir(os.path.join(top, entry)))
    return paths


def _remove_partial(root: str, name: str, before: set) -> None:
    """Removes what a failed download left: TFDS's new `*.tmp.*` download dirs, then new empty dirs."""
    for path in sorted(_tree(root, name) - before, key=len, reverse=True):  # innermost first
        if ".tmp." in os.path.basename(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


def prepared_builder(name: str, data_dir: Optional[str] = None, download: bool = True):
    """The builder of `name`, downloading and preparing the data first when it is missing.

    Raises:
      DatasetNotFoundError: not prepared and `download` is False, the download host cannot be
        reached, or the download failed.
    """
    b = builder(name, data_dir)
    if b.is_prepared():
        return b
    root = data_root(data_dir)
    if not download:
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not prepared in {root} (looked for {b.data_dir}) and downloading is off "
            f"(--nodownload / download=False). Run without --nodownload to download it now, or prepare it "
            f"on a machine with internet with `tfds build {name} --data_dir={root}` and copy its {name}/ folder "
            f"into {root} here.")
    failed = download_host.unreachable(list(getattr(b, "url_infos", None) or ())) if _downloads_for_real(b) else {}
    if failed:
        hosts = "; ".join(f"{host}: {reason}" for host, reason in failed.items())[:300]
        raise DatasetNotFoundError(
            f"Dataset {name!r} is not prepared in {root} and cannot be downloaded: its download host does "
            f"not answer ({hosts}; one TCP connect, {download_host.TIMEOUT_S:g} s timeout). Nothing was written; "
            f"{_elsewhere(name, root)}.")
    downloads = os.path.join(root, "downloads")
    before = _tree(root, name)
    print(f"{name}: not prepared in {root}: downloading it to {downloads} and preparing it in {b.data_dir} "
          "(once; TFDS progress follows)", flush=True)
    try:
        b.download_and_prepare(download_dir=downloads)
    except _download_errors() as e:
        _remove_partial(root, name, before)
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise DatasetNotFoundError(
            f"Dataset {name!r}: downloading into {root} failed ({reason}); partial downloads removed. "
            f"Check the internet connection and rerun, or {_elsewhere(name, root)}.") from None
    return b


def load(name: str, split: str, data_dir: Optional[str] = None, download: bool = True) -> tf.data.Dataset:
    """(image, label) pairs of one TFDS split, in file order; downloads first when allowed."""
    b = prepared_builder(name, data_dir, download)
    return b.as_dataset(split=split, as_supervised=True, shuffle_files=False)
