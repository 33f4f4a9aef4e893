"""Training health: effective rank and spread checked while a run trains, a warning, an early stop.

`HealthMonitor` (a Keras callback) computes `wmse_tf.evaluation.health.stats` (RankMe effective
rank of the encoder's features and of the projector's embeddings, std of the L2-normalized
embeddings) on a fixed batch of un-augmented training images (the first `--health_images` of the
training split, through the eval transform) at every epoch end, every `--health_every` steps and
after a mid-epoch re-plan of a `--time_budget` (after warmup, if a fifth of the budget passed since the
last check). Each check is a row of `<model_dir>/health.jsonl` and TensorBoard `health/*` scalars; at epoch ends the values also go into the epoch's logs (log.csv,
log.jsonl, TensorBoard `epoch/*`, the progress bar). After warmup a check is unhealthy when it
crosses a `Thresholds` bound (measured: docs/training.md#training-health); the run then prints one
`warning:` line naming what was seen and the flags to try, and with `--on_unhealthy=stop` it stops:
a last checkpoint, results.json with the reason, exit code `EXIT_UNHEALTHY`. A model_dir stopped
that way is not resumed unless a flag changed or `--force_resume` is given (`check_resume`).
"""

import dataclasses
import json
import math
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from wmse_tf import methods
from wmse_tf.data import pipeline
from wmse_tf.evaluation import health as health_lib
from wmse_tf.training import checkpoint as ckpt_lib

EXIT_UNHEALTHY = 5
STOPPED = "unhealthy"  # LoopState.stop_reason and results.json "stopped"
LOG_KEYS = ("rank_feat", "rank_emb", "emb_std_l2")  # added to the epoch logs
# Flags whose change does not count as "a flag changed" for resuming a stopped-unhealthy run.
NEUTRAL_FLAGS = ("force_resume", "verbose", "model_dir", "download", "data_dir", "print_config")
DOC = "docs/training.md#training-health"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Bounds of a healthy run, checked after `after_step` steps (the warmup).

    Attributes:
      max_cond: largest whitening condition number (`whiten_cond`, epoch mean; whitening methods).
      min_rank_emb: smallest effective rank of the embeddings as a fraction of `--emb`.
      min_std_rel: smallest `emb_std_rel` (std of L2-normalized embeddings x sqrt(emb)).
      max_rank_drop: largest fall of the features' effective rank below its best since warmup,
        as a fraction of that best.
    """

    after_step: int = 0
    max_cond: float = 1000.0
    min_rank_emb: float = 0.25
    min_std_rel: float = 0.2
    max_rank_drop: float = 0.5


def thresholds_for(cfg):
    """The measured bounds for `cfg`'s run, after its warmup: the defaults, with the method's own
    where its registry entry declares them (`methods.health_bounds`; e.g. NT-Xent on whitened
    embeddings has no embedding-rank bound, docs/training.md)."""
    return Thresholds(after_step=cfg.warmup, **methods.health_bounds(cfg.method, cfg))


def findings(row, best_rank_feat, t):
    """What is unhealthy in one check `row`: [(kind, plain phrase)], [] when healthy."""
    if row["step"] <= t.after_step:
        return []
    out = []
    cond = row.get("whiten_cond")
    if cond is not None and not cond <= t.max_cond:
        out.append(("cond", f"whitening condition number {cond:.3g} > {t.max_cond:g}"))
    if not row.get("rank_emb", math.inf) >= t.min_rank_emb * row.get("emb_dim", 0):
        out.append(("rank_emb", f"effective rank of the embeddings {row['rank_emb']:.2f} of {row['emb_dim']} "
                                f"(< {t.min_rank_emb:g} x emb)"))
    if not row.get("emb_std_rel", math.inf) >= t.min_std_rel:
        out.append(("std", f"std of the L2-normalized embeddings x sqrt(emb) {row['emb_std_rel']:.3f} "
                           f"(< {t.min_std_rel:g}; 0 = collapse)"))
    if best_rank_feat and not row["rank_feat"] >= (1 - t.max_rank_drop) * best_rank_feat:
        out.append(("rank_drop", f"effective rank of the features fell to {row['rank_feat']:.2f} from "
                                 f"{best_rank_feat:.2f} (> {t.max_rank_drop:.0%} drop)"))
    return out


def advice(cfg):
    """The flags to try, with their values now."""
    if methods.get(cfg.method).unhealthy_advice:
        return methods.get(cfg.method).unhealthy_advice
    tips = [f"a smaller --emb (now {cfg.emb})"]
    if cfg.uses_whitening_groups:
        tips += [f"--w_size about 4 x emb (now {cfg.w_size})", f"a larger --w_eps (now {cfg.w_eps:g})"]
    tips += [f"a longer --warmup (now {cfg.warmup})", f"a lower --lr (now {cfg.lr:g})"]
    return ", ".join(tips)


def message(cfg, step, seen, stopped):
    """The one warning line of an unhealthy check."""
    then = ("stopped (--on_unhealthy=stop): last checkpoint written; rerun with a changed flag or --force_resume"
            if stopped else "to stop such a run early pass --on_unhealthy=stop")
    note = "" if methods.get(cfg.method).unhealthy_advice else " (--emb and --w_size need a new --model_dir)"
    return (f"warning: training looks unhealthy at step {step}: {'; '.join(text for _, text in seen)}. "
            f"Try {advice(cfg)}{note}; {then}. See {DOC}")


def fixed_images(cfg, count, batch=512):
    """The first `count` training images through the eval transform: a float32 tensor."""
    ds = pipeline.eval_dataset(cfg.dataset, cfg.train_split, batch, cfg.data_dir, cfg.image_size, cfg.augment)
    images, n = [], 0
    for x, _ in ds:
        images.append(x)
        n += int(x.shape[0])
        if n >= count:
            break
    return tf.concat(images, 0)[:count]


class HealthMonitor(keras.callbacks.Callback):
    """Health checks of a run (module doc). Place it before the log writers.

    Args:
      model: the SSLModel (its `encoder` and `projector`).
      images: the fixed batch, normalized float32 [N, S, S, 3].
      state: the LoopState.
      cfg: the TrainConfig (on_unhealthy, health_every, warmup, hints of the warning).
      model_dir: where health.jsonl and tb/ go (None: write nothing, a non-chief worker).
      thresholds: `Thresholds` (default: `thresholds_for(cfg)`, the measured ones).
      budget: the run's `budget.TimeBudget` (its mid-epoch re-plans trigger a check), or None.
      stop: stop the run at the first unhealthy check (default: cfg.on_unhealthy == "stop").
    """

    def __init__(self, model, images, state, cfg, model_dir=None, thresholds=None, budget=None, stop=None):
        super().__init__()
        self.ssl_model, self.images, self.state, self.cfg = model, images, state, cfg
        self.thresholds = thresholds or thresholds_for(cfg)
        self.every, self.budget = cfg.health_every, budget
        self.stop = cfg.on_unhealthy == "stop" if stop is None else stop
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, "health.jsonl") if model_dir else None
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "tb")) if model_dir else None
        self.rows, self.best_rank_feat, self.first_flagged, self.seen = [], None, None, {}
        self._fn = self._plan = None
        self._checked_step, self._checked_at = -1, -math.inf

    def compute(self):
        """(features, embeddings) of the fixed batch as float32 numpy arrays."""
        if self._fn is None:
            encoder, projector = self.ssl_model.encoder, self.ssl_model.projector

            @tf.function(reduce_retracing=True, autograph=False)
            def fn(x):
                feats = encoder(x, training=False)
                return tf.cast(feats, tf.float32), tf.cast(projector(feats, training=False), tf.float32)

            self._fn = fn
        parts = [self._fn(self.images[i:i + 512]) for i in range(0, int(self.images.shape[0]), 512)]
        return tuple(np.concatenate([p[j].numpy() for p in parts]) for j in (0, 1))

    def check(self, logs=None):
        """One health check at the current step; returns its row."""
        step, start = self.state.step, time.perf_counter()
        row = {"step": step, "epoch": round(step / self.state.steps_per_epoch, 3),
               **health_lib.stats(*self.compute())}
        row["seconds"] = round(time.perf_counter() - start, 4)  # the check's cost
        if (logs or {}).get("whiten_cond") is not None:
            row["whiten_cond"] = float(logs["whiten_cond"])
        seen = findings(row, self.best_rank_feat, self.thresholds)
        if step > self.thresholds.after_step and math.isfinite(row["rank_feat"]):
            self.best_rank_feat = max(self.best_rank_feat or 0.0, row["rank_feat"])
        row["unhealthy"] = [kind for kind, _ in seen]
        self.rows.append(row)
        self._checked_step, self._checked_at = step, time.perf_counter()
        self._write(row)
        if seen:
            self._flag(step, seen)
        return row

    def _flag(self, step, seen):
        new = [(kind, text) for kind, text in seen if kind not in self.seen]
        if self.first_flagged is None:
            self.first_flagged = step
        self.seen.update({kind: f"step {step}: {text}" for kind, text in new})
        if self.stop and self.state.stop_reason is None:
            self.state.stop_reason = STOPPED
            self.state.stop_detail = message(self.cfg, step, seen, stopped=True)
            self.ssl_model.stop_training = True
            self._print(self.state.stop_detail)
        elif new:  # one line per kind of finding, not one per check
            self._print(message(self.cfg, step, new, stopped=False))

    def _print(self, text):
        if self.model_dir:
            print(text, file=sys.stderr, flush=True)

    def _write(self, row):
        if not self.model_dir:
            return
        with tf.io.gfile.GFile(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True) + "\n")
        with self.writer.as_default(step=row["step"]):
            for k, v in row.items():
                if k not in ("step", "epoch", "seconds") and isinstance(v, (int, float)):
                    tf.summary.scalar(f"health/{k}", v)
            tf.summary.scalar("health/unhealthy", float(bool(row["unhealthy"])))

    def on_train_begin(self, logs=None):
        if self.path and tf.io.gfile.exists(self.path):  # resumed: drop rows after the checkpoint
            with tf.io.gfile.GFile(self.path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            keep = [r for r in rows if r["step"] <= self.state.step]
            if len(keep) < len(rows):
                ckpt_lib.write_text_atomic(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
            self.rows = keep
            after = [r["rank_feat"] for r in keep if r["step"] > self.thresholds.after_step]
            self.best_rank_feat = max(after) if after else None
        self._plan = getattr(self.budget, "plan", None)

    def on_train_batch_end(self, batch, logs=None):
        step, plan = self.state.step, getattr(self.budget, "plan", None)
        replanned = plan is not None and plan is not self._plan and plan.planned_at_step % self.state.steps_per_epoch
        self._plan = plan
        # A mid-epoch re-plan after warmup checks when a fifth of the budget passed since the last check (the
        # cost stays under 2% of the demo's training: docs/training.md#training-health).
        replanned = (replanned and step > self.thresholds.after_step
                     and time.perf_counter() - self._checked_at >= self.budget.budget / 5)
        if step == self._checked_step or self.state.epoch_done:  # the epoch end checks it
            return
        if (self.every and step % self.every == 0) or replanned:
            self.check(logs)

    def on_epoch_end(self, epoch, logs=None):
        row = self.rows[-1] if self._checked_step == self.state.step else self.check(logs)
        if logs is not None:
            logs.update({k: row[k] for k in LOG_KEYS if k in row})

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.flush()

    def summary(self):
        """Final values, the first unhealthy step and what was seen: for results.json and the model card."""
        last = self.rows[-1] if self.rows else {}
        return {"final": last, "first_unhealthy_step": self.first_flagged, "seen": self.seen,
                "images": int(self.images.shape[0]), "thresholds": dataclasses.asdict(self.thresholds),
                "on_unhealthy": "stop" if self.stop else "warn"}


def monitor(cfg, model, state, chief, force_warn=False):
    """The run's HealthMonitor, or None with --health_images=0."""
    if not cfg.health_images:
        return None
    return HealthMonitor(model, fixed_images(cfg, cfg.health_images), state, cfg,
                         cfg.model_dir if chief else None, stop=False if force_warn else None)


def stopped_results(state, monitor_cb, seconds):
    """results.json of a run stopped unhealthy (no encoder, no export: the run is not done)."""
    return {"stopped": STOPPED, "reason": state.stop_detail, "step": state.step,
            "steps_done": state.step, "epochs_done": round(state.step / state.steps_per_epoch, 2),
            "seconds": round(seconds, 1), "health": monitor_cb.summary() if monitor_cb else None}


def check_resume(cfg, model_dir):
    """Whether a model_dir stopped unhealthy may be resumed: True if it was (forced), raises ConfigError
    when nothing changed, False when it was not stopped unhealthy."""
    from wmse_tf.training import config as config_lib

    results = ckpt_lib.read_json(os.path.join(model_dir, "results.json")) or {}
    if results.get("stopped") != STOPPED:
        return False
    saved = ckpt_lib.read_json(os.path.join(model_dir, "flags.json")) or {}
    now = cfg.to_dict()
    changed = [k for k in now if k not in NEUTRAL_FLAGS and k in saved and saved[k] != now[k]]
    if changed or cfg.force_resume:
        return cfg.force_resume and not changed
    raise config_lib.ConfigError(
        f"--model_dir={model_dir}: this run was stopped as unhealthy at step {results.get('step')} "
        f"(see its results.json); change a flag (e.g. --w_eps, --warmup, --lr; --emb or --w_size with a new "
        "--model_dir) or pass --force_resume to continue it as it is")
