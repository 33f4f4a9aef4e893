"""The one writer of published files and directories: they appear complete or not at all.

Every file goes to a hidden temp name in its target's directory (`.<name>.tmp-<hex>`),
is flushed and fsynced, and is renamed over the target; the directory is then fsynced
where the file system allows it, so the rename survives a power loss too. A failure
(exception, disk full) removes the temp; a kill leaves the target as it was (old
content, or absent) plus at most one hidden temp.

  write_text / write_bytes / write_json    content you hold in memory
  writing(path)                            a temp path for writers that make the file
                                           themselves (encoder.save, np.savez, savefig)
  publishing_dir(path)                     a temp directory renamed into place (SavedModel)

Remote paths (`gs://...`, any `scheme://`) go through `tf.io.gfile` (TensorFlow is
imported only then): a training `--model_dir` on GCS, as TPU training needs, gets its
flags.json, results.json and encoder.keras this way. Object stores have no fsync and
no atomic rename, but an uploaded object appears whole.

Example:
  >>> from wmse_tf import atomic_io
  >>> atomic_io.write_json("runs/x/results.json", {"top1": 0.81})
  >>> with atomic_io.writing("runs/x/encoder.keras") as tmp:
  ...     encoder.save(tmp)
"""

import contextlib
import json
import os
import shutil
import uuid


def is_remote(path):
    """True for `scheme://...` paths (gs://, s3://, ...): written through tf.io.gfile."""
    return "://" in os.fspath(path)


def temp_path(path, suffix=""):
    """A fresh hidden name beside `path`: `<dir>/.<name>.tmp-<hex><suffix>`."""
    path = os.fspath(path)
    directory, name = path.rsplit("/", 1) if is_remote(path) else os.path.split(os.path.abspath(path))
    return f"{directory}/.{name}.tmp-{uuid.uuid4().hex[:8]}{suffix}"


def fsync_dir(directory):
    """fsyncs a directory (its entries: renames, new files); a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:  # EINVAL / EBADF on file systems without directory fsync
        pass
    finally:
        os.close(fd)


def fsync_file(path):
    """fsyncs a file written by someone else (the data of every descriptor is flushed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path, data):
    """Writes `data` to `path` atomically (temp file, flush, fsync, rename, fsync of the dir)."""
    with writing(path, suffix="") as tmp:
        if is_remote(path):
            import tensorflow as tf

            opener = tf.io.gfile.GFile
        else:
            opener = open
        with opener(tmp, "wb") as f:  # closing flushes; writing() fsyncs before the rename
            f.write(data)
    return path


def write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, sort_keys=False, default=None):
    """Writes `obj` as indented JSON (plus a newline) to `path` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, default=default) + "\n")


def cache_dir(*parts):
    """Where wmse_tf keeps what it measured on this machine: `$XDG_CACHE_HOME/wmse_tf/<parts>`
    (default `~/.cache/wmse_tf`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "wmse_tf", *parts)


def read_json(path, default=None):
    """The JSON at a local `path` (as `write_json` published it), or `default` if it is missing or
    unreadable (a cache that is not there yet)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


@contextlib.contextmanager
def writing(path, suffix=None):
    """Yields a temp path beside `path`; renamed over `path` when the block succeeds.

    For writers that create the file themselves. The temp keeps `path`'s extension
    (or `suffix`), since Keras, NumPy and Matplotlib pick the format from it. On an
    exception the temp is removed and `path` is untouched.

    Example:
      >>> with writing("features.npz") as tmp:
      ...     np.savez(tmp, x=x)
    """
    path = os.fspath(path)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    remote = is_remote(path)
    if not remote:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        if remote:
            import tensorflow as tf

            tf.io.gfile.rename(tmp, path, overwrite=True)
        else:
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        _remove(tmp, remote)


@contextlib.contextmanager
def publishing_dir(path):
    """Yields a new empty temp directory beside `path`; it replaces `path` when the block succeeds.

    Every file under it is fsynced before the rename. An existing `path` is first
    renamed aside and removed after (POSIX has no atomic swap of two directories:
    for that instant `path` is absent, never partial). On an exception the temp
    directory is removed and `path` is untouched. Local paths only.
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = temp_path(path)
    os.mkdir(tmp)
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def fsync_tree(directory):
    """fsyncs every file and directory under `directory`."""
    for root, _, files in os.walk(directory):
        for name in files:
            fsync_file(os.path.join(root, name))
        fsync_dir(root)


def replace_dir(src, dst):
    """Renames directory src to dst; an existing dst is moved aside first, then removed."""
    old = None
    if os.path.exists(dst):
        old = temp_path(dst).replace(".tmp-", ".old-")
        os.rename(dst, old)
    try:
        os.rename(src, dst)
    except OSError:
        if old:
            os.rename(old, dst)  # put the old one back
        raise
    fsync_dir(os.path.dirname(os.path.abspath(dst)))
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _remove(path, remote):
    try:
        if remote:
            import tensorflow as tf

            if tf.io.gfile.exists(path):
                tf.io.gfile.remove(path)
        elif os.path.exists(path):
            os.remove(path)
    except Exception:  # noqa: BLE001 - e.g. a read-only dir: nothing was written anyway
        pass
