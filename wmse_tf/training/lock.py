"""One writer per model_dir: an advisory `fcntl.flock` on `<model_dir>/.lock`.

The lock file holds the pid and host of the run holding it. The kernel releases a
flock when its process dies (even by SIGKILL), so a lock file left behind by a dead
run never blocks the next one. Locks on remote paths (`gs://...`) are not
possible and are skipped with a warning.

Example:
  >>> with lock.RunLock("runs/cifar10"):   # raises LockedError when another run holds it
  ...     train()
"""

import fcntl
import json
import logging
import os
import socket

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


class LockedError(RuntimeError):
    """model_dir is locked by another run, or the lock file cannot be written."""


class RunLock:
    """Exclusive, non-blocking lock of a directory; `acquire()` / `release()` or `with`.

    Args:
      directory: the model_dir (must exist).
    """

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd = None

    def acquire(self):
        if "://" in self.directory:
            log.warning("cannot lock %s (not a local path): make sure one run at a time writes there",
                        self.directory)
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise LockedError(f"--model_dir={self.directory}: cannot create the lock file {self.path} "
                              f"({e.strerror}); is the directory writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"--model_dir={self.directory} is in use by another run (pid {holder.get('pid', '?')} "
                f"on host {holder.get('host', '?')}, lock file {self.path}); wait for it to end, stop it, "
                "or use another --model_dir") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n").encode())
        except OSError as e:
            os.close(fd)
            raise LockedError(f"--model_dir={self.directory}: cannot write the lock file {self.path} "
                              f"({e.strerror}); is the disk full or read-only?") from None
        self._fd = fd
        return self

    def release(self):
        """Unlocks (the file stays: removing it would race with a run that just opened it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read_holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}
