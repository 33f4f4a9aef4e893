"""Log writers of a training run: per-epoch CSV and JSON-lines files, TensorBoard scalars.

Keras callbacks reading the logs dict (after `wmse_tf.training.callbacks` added lr,
images_per_sec, knn_acc) and the global step of a `wmse_tf.training.loop.LoopState`.
Only the chief process writes them.
"""

import csv
import json
import os
import time

import keras
import tensorflow as tf

from wmse_tf.evaluation import plots
from wmse_tf.training import checkpoint as ckpt_lib


class MetricsLog(keras.callbacks.Callback):
    """Per-epoch rows in `<dir>/log.csv` and `<dir>/log.jsonl`.

    A row's `seconds` is the wall time of its epoch in this process: from the previous row,
    or from the start of training for the first epoch after a (re)start, evaluation included;
    their sum over the file is the run's training time across interruptions (`training_seconds`).
    On resume the rows of steps after the restored checkpoint (written by the
    interrupted run after its last checkpoint) are dropped, then rows are appended.
    """

    COLUMNS = ("epoch", "step", "time", "seconds", "loss", "knn_acc", "lr", "images_per_sec")

    def __init__(self, directory, state):
        super().__init__()
        self.directory, self.state = directory, state
        self.csv_path = os.path.join(directory, "log.csv")
        self.json_path = os.path.join(directory, "log.jsonl")
        self.columns = None
        self.last = {}
        self._since = time.time()

    def on_train_begin(self, logs=None):
        self._since = time.time()
        self._truncate(self.json_path, lambda line: json.loads(line)["step"])
        self._truncate(self.csv_path, lambda line: int(line.split(",")[1]), header=True)

    def _truncate(self, path, step_of, header=False):
        if not tf.io.gfile.exists(path):
            return
        with tf.io.gfile.GFile(path) as f:
            lines = f.read().splitlines()
        head, rows = (lines[:1], lines[1:]) if header else ([], lines)
        keep = [r for r in rows if r.strip() and step_of(r) <= self.state.step]
        if len(keep) < len(rows):
            ckpt_lib.write_text_atomic(path, "".join(line + "\n" for line in head + keep))

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        row = {"epoch": epoch + 1, "step": self.state.step, "time": round(now, 3),
               "seconds": round(now - self._since, 3), **(logs or {})}
        self._since = now
        self.last = row
        with tf.io.gfile.GFile(self.json_path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        if self.columns is None:
            self.columns = self._header(row)
        with tf.io.gfile.GFile(self.csv_path, "a") as f:
            csv.writer(f).writerow(["" if row.get(c) is None else row.get(c) for c in self.columns])

    def _header(self, row):
        if tf.io.gfile.exists(self.csv_path):
            with tf.io.gfile.GFile(self.csv_path) as f:
                first = f.readline().strip()
            if first:
                return first.split(",")
        columns = list(self.COLUMNS) + sorted(k for k in row if k not in self.COLUMNS)
        with tf.io.gfile.GFile(self.csv_path, "a") as f:
            csv.writer(f).writerow(columns)
        return columns


def training_seconds(directory):
    """Sum of the `seconds` of `<directory>/log.jsonl`: the run's training time across its
    restarts; None if the file is missing or a row has no `seconds` (logs of older versions)."""
    rows = plots.read_epochs(directory)
    if not rows or any("seconds" not in r for r in rows):
        return None
    return round(sum(r["seconds"] for r in rows), 1)


class TensorBoardScalars(keras.callbacks.Callback):
    """Writes every log value as a TensorBoard scalar: `train/*` every `every` steps,
    `epoch/*` at each epoch end, indexed by the global step."""

    def __init__(self, log_dir, state, every=50):
        super().__init__()
        self.state, self.every = state, max(1, every)
        self.writer = tf.summary.create_file_writer(log_dir)
        self._last = -1

    def _write(self, prefix, logs):
        with self.writer.as_default(step=self.state.step):
            for k, v in (logs or {}).items():
                if isinstance(v, (int, float)):
                    tf.summary.scalar(f"{prefix}/{k}", v)

    def on_train_batch_end(self, batch, logs=None):
        if self.state.step // self.every != self._last // self.every:
            self._write("train", logs)
            self._last = self.state.step

    def on_epoch_end(self, epoch, logs=None):
        self._write("epoch", logs)
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()
