"""One training run from a TrainConfig: strategy, model, data, callbacks, loop, export.

`run(cfg)` returns a process exit code (see EXIT_*); `wmse_tf/train.py` is the absl
front end. Order of a run: `auto` values resolved (`wmse_tf.training.resolve`) -> strategy
(first TF call) -> batch split checked -> model_dir checked against its flags.json
(resume refused if key values differ) -> model + optimizer built under the strategy ->
newest good checkpoint restored -> flags.json written -> training -> encoder.keras
(+ SavedModel export) -> results.json.

Example:
  >>> code = trainer.run(config.TrainConfig(dataset="digits", ...).validate())
"""

import logging
import os
import sys
import time

import keras
import tensorflow as tf

from wmse_tf import atomic_io, methods
from wmse_tf.core import encoders
from wmse_tf.data import datasets as data, pipeline
from wmse_tf.training import (budget as budget_lib, callbacks as cb, checkpoint as ckpt_lib, config as config_lib,
                              distribute, health, lock as lock_lib, resolve, run_log, schedules)
from wmse_tf.training.loop import LoopState, TrainLoop

log = logging.getLogger(__name__)
EXIT_OK, EXIT_CONFIG, EXIT_NAN, EXIT_IO = 0, 2, 3, 4  # 5 unhealthy (health.EXIT_UNHEALTHY), 128 + signal


def build_model(cfg, total_steps=None):
    """The method's Keras model (encoder + heads) of a config; call under strategy.scope()."""
    # Multi-crop calls the encoder on views of two sizes: its input side is then left open.
    encoder = encoders.build(cfg.arch, cfg.stem, cfg.width, None if cfg.augment.local_views else cfg.image_size)
    kwargs = methods.method_kwargs(cfg.method, dict(cfg.to_dict(), total_steps=total_steps))
    model = methods.build(cfg.method, encoder, cfg.emb, cfg.hidden, **kwargs)
    model.bn_per_view = cfg.bn_per_view  # read when train_step is traced (SSLModel.embed_views)
    return model


def count_images(cfg, cache_dir=None):
    """Images in the training split (cardinality, else counted once and cached)."""
    ds = data.load(cfg.dataset, cfg.train_split, cfg.data_dir)
    n = int(ds.cardinality())
    if n >= 0:
        return n
    cache = os.path.join(cache_dir, "dataset_size.json") if cache_dir else None
    saved = ckpt_lib.read_json(cache) if cache else None
    key = f"{cfg.dataset}/{cfg.train_split}"
    if saved and key in saved:
        return int(saved[key])
    log.info("counting the images of %s (once)...", key)
    n = int(ds.reduce(tf.constant(0, tf.int64), lambda c, _: c + 1))
    if cache:
        ckpt_lib.write_json_atomic(cache, {**(saved or {}), key: n})
    return n


def steps_per_epoch(cfg, num_images):
    """Full batches per epoch (the reference drops the last partial batch), capped."""
    full = num_images // cfg.batch_size
    if full < 1:
        raise config_lib.ConfigError(
            f"--batch_size={cfg.batch_size}: larger than the {num_images} images of "
            f"{cfg.dataset}/{cfg.train_split}")
    return min(full, cfg.steps_per_epoch) if cfg.steps_per_epoch else full


def check_resume(cfg, model_dir):
    """Raises ConfigError when model_dir holds checkpoints of a run with other key values."""
    if tf.train.latest_checkpoint(model_dir) is None:
        return False
    saved = ckpt_lib.read_json(os.path.join(model_dir, "flags.json"))
    if saved is None:
        log.warning("%s holds checkpoints but no flags.json: resuming without checking flags", model_dir)
        return True
    saved = config_lib.TrainConfig.from_dict(saved).key_values()
    diffs = config_lib.key_differences(saved, cfg.key_values())
    if diffs:
        listed = ", ".join(f"--{k}={now} (saved: {old})" for k, old, now in diffs)
        raise config_lib.ConfigError(
            f"--model_dir={model_dir}: holds checkpoints of a run with other key flags: {listed}; "
            "use another --model_dir or the saved values")
    return True


def ssl_input(cfg, strategy, step=0):
    """Distributed endless multi-view dataset; each input pipeline makes its own shard.

    Resuming at `step`: with cfg.exact_resume the stream of an uninterrupted run is
    replayed (its first `step` batches are made and dropped), else the data order is
    reseeded (no replay cost, but other batches than an uninterrupted run's).
    """
    cache = {"memory": True, "none": False, "": False}.get(cfg.cache, cfg.cache)
    seed = cfg.seed if step == 0 or cfg.exact_resume else cfg.seed + 7919 * step
    skip = step if cfg.exact_resume else 0

    def dataset_fn(ctx):
        ds = pipeline.ssl_dataset(cfg.dataset, cfg.train_split, cfg.batch_size, cfg.num_views,
                                  cfg.augment, seed, data_dir=cfg.data_dir, input_context=ctx,
                                  shuffle_buffer=cfg.shuffle_buffer, cache=cache, repeat=True)
        per_pipeline = ctx.num_replicas_in_sync // ctx.num_input_pipelines  # batches per step
        return ds.skip(skip * per_pipeline) if skip else ds

    return strategy.distribute_datasets_from_function(dataset_fn)


def knn_monitor(cfg, encoder, state=None):
    """The KnnMonitor callback on the dataset's labelled train/test splits (or None)."""
    meta = data.info(cfg.dataset)
    if not cfg.eval_every or meta.test_split == meta.train_split:
        return None

    def split(name):
        return pipeline.eval_dataset(cfg.dataset, name, 256, cfg.data_dir, cfg.image_size, cfg.augment)

    return cb.KnnMonitor(encoder, split(meta.train_split), split(meta.test_split), cfg.eval_every,
                         cfg.epochs, cfg.knn_k, cfg.knn_train_images, cfg.knn_test_images,
                         jit_compile=cfg.jit_compile, state=state, metric=cfg.knn_metric)


def save_encoder(encoder, model_dir):
    """model_dir/encoder.keras, written atomically (wmse_tf.atomic_io.writing)."""
    path = os.path.join(model_dir, "encoder.keras")
    with atomic_io.writing(path) as tmp:
        encoder.save(tmp)
    return path


def export(cfg, encoder, results):
    """SavedModel export (wmse_tf.export.saved_model) with the run's eval transform, as the demo's."""
    from wmse_tf.export import saved_model as export_lib

    flags = cfg.to_dict()
    return export_lib.export_encoder(
        encoder, cfg.export_dir, cfg.export_name_or_default, cfg.export_version or None, dataset=cfg.dataset,
        spec=export_lib.input_spec_from_flags(flags),
        card={"flags": flags, "metrics": results, "runtime": resolve.runtime()},
        overwrite=bool(cfg.export_version))


def make_callbacks(cfg, model, state, checkpointer, chief, scratch_dir, schedule, spe, plan=None, force_warn=False,
                   started_at=None, reserve=None):
    """The run's CallbackList (order matters, see wmse_tf.training.callbacks; with --time_budget it
    holds a budget.TimeBudget; health.HealthMonitor unless --health_images=0) and its KnnMonitor."""
    hints = dict(w_eps=cfg.w_eps, w_size=cfg.w_size, emb=cfg.emb, lr=cfg.lr)
    callbacks = [cb.Throughput(state, cfg.batch_size, schedule),
                 cb.NaNGuard(state, hints, cfg.steps_per_execution)]
    monitor = knn_monitor(cfg, model.encoder, state)
    if monitor is not None:
        callbacks.append(monitor)
    checks = health.monitor(cfg, model, state, chief, force_warn)  # before the log writers: adds its keys
    callbacks += [checks] if checks else []
    if chief:
        callbacks += [run_log.MetricsLog(cfg.model_dir, state),
                      run_log.TensorBoardScalars(os.path.join(cfg.model_dir, "tb"), state, cfg.log_every)]
    # After the log writers: a kill between the two then leaves a log row past the checkpoint
    # (dropped on resume), never a checkpoint whose epoch row is missing from log.jsonl.
    callbacks.append(cb.CheckpointSaver(checkpointer, state, cfg.checkpoint_every, scratch_dir))
    if cfg.time_budget:  # after the epoch-end work it measures, before the progress bar
        plan_path = os.path.join(cfg.model_dir, budget_lib.PLAN_NAME) if chief else None
        callbacks.append(budget_lib.TimeBudget(cfg.time_budget, schedule, state, plan_path, plan,
                                               started_at=started_at, reserve=reserve))
        if checks:  # its mid-epoch re-plans trigger a health check
            checks.budget = callbacks[-1]
    verbose = cfg.verbose if chief else 0
    if verbose:
        callbacks.append(keras.callbacks.ProgbarLogger())
    return keras.callbacks.CallbackList(callbacks, model=model, verbose=verbose, epochs=cfg.epochs,
                                        steps=spe), monitor


def run(cfg, started_at=None, reserve=None):
    """Trains as `cfg` says; returns the exit code (0 done, 2 config/locked, 3 NaN, 4 write failed, 5 unhealthy,
    128+sig). A --time_budget counts from `started_at` (`time.perf_counter()`; default: now) and keeps
    `reserve(step_seconds)` seconds free for after the run (budget.TimeBudget)."""
    started_at = time.perf_counter() if started_at is None else started_at
    cfg = resolve.resolve(cfg)  # a config built in code may hold "auto" values
    strategy = distribute.make_strategy(cfg.strategy, cfg.devices, cfg.cpu_replicas, cfg.tpu)
    cfg.validate_replicas(strategy.num_replicas_in_sync)
    chief = distribute.is_chief(strategy)
    scratch = distribute.worker_dir(cfg.model_dir, strategy)
    tf.io.gfile.makedirs(cfg.model_dir)
    run_lock = lock_lib.RunLock(cfg.model_dir)
    if chief:  # one writer per model_dir, taken before anything is written there
        try:
            run_lock.acquire()
        except lock_lib.LockedError as e:
            raise config_lib.ConfigError(str(e)) from None
    try:
        return _run(cfg, strategy, chief, scratch, started_at, reserve)
    except Exception as e:  # noqa: BLE001 - only failed writes (disk full, read-only) are handled
        if not ckpt_lib.is_write_error(e):
            raise
        latest = tf.train.latest_checkpoint(cfg.model_dir)
        reason = ckpt_lib.write_error_reason(e)
        print(f"error: cannot write to --model_dir={cfg.model_dir}: {reason}. The last complete "
              f"checkpoint is {latest} (intact; the next run resumes from it). Free disk space or make "
              "the directory writable, then rerun the same command.", file=sys.stderr, flush=True)
        return EXIT_IO
    finally:
        run_lock.release()


def _run(cfg, strategy, chief, scratch, started_at=None, reserve=None):
    """The body of `run`, with model_dir locked."""
    resuming = check_resume(cfg, cfg.model_dir)
    forced = resuming and health.check_resume(cfg, cfg.model_dir)  # refuses a stopped-unhealthy run as it was
    spe = steps_per_epoch(cfg, count_images(cfg, cfg.model_dir if chief else None))
    total = cfg.epochs * spe
    plan = budget_lib.read_plan(cfg.model_dir) if resuming and cfg.time_budget else None
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy(cfg.mixed_precision)
    try:
        keras.utils.set_random_seed(cfg.seed)
        with strategy.scope():
            schedule = schedules.schedule_for(cfg, spe)  # its planned length is a (mirrored) variable
            model = build_model(cfg, total)
            model.compile(optimizer=schedules.make_optimizer(cfg.optimizer, schedule, cfg.weight_decay,
                                                             cfg.momentum))  # builds its variables
        checkpointer = ckpt_lib.Checkpointer(scratch, model, cfg.keep_checkpoints, restore_dir=cfg.model_dir)
        step = checkpointer.restore() if resuming else 0
        state = LoopState(spe, cfg.epochs, step=step, batch_size=cfg.batch_size,
                          planned_steps=plan.planned_steps if plan else None)
        if chief:
            ckpt_lib.write_json_atomic(os.path.join(cfg.model_dir, "flags.json"),
                                       dict(cfg.to_dict(), runtime=resolve.runtime()))
            length = f"{cfg.epochs} epochs"
            if cfg.time_budget:
                planned = f"planned: {plan.planned_steps} steps" if plan else "planned after the first steps"
                length = f"a {cfg.time_budget:g} s budget ({planned})"
            print(f"{'resuming at step ' + str(step) if step else 'starting'}: {cfg.method} on "
                  f"{cfg.dataset}, {strategy.num_replicas_in_sync} replica(s), {spe} steps/epoch, "
                  f"{length}, model_dir={cfg.model_dir}", flush=True)
        done = [os.path.join(cfg.model_dir, n) for n in ("results.json", "encoder.keras")]
        if (not cfg.time_budget or plan) and step >= state.total_steps and all(tf.io.gfile.exists(p) for p in done):
            print(f"already trained: step {step} >= {state.total_steps} planned steps; "
                  f"see {done[0]}", flush=True)
            return EXIT_OK
        loop = TrainLoop(model, strategy, ssl_input(cfg, strategy, step), spe,
                         cfg.steps_per_execution, cfg.jit_compile)
        callbacks, monitor = make_callbacks(cfg, model, state, checkpointer, chief,
                                            None if chief else scratch, schedule, spe, plan, forced,
                                            started_at, reserve)
        start = time.time()
        logs = loop.run(cfg.epochs, callbacks, initial_step=step, state=state) if step < state.total_steps else {}
        budget = next((c for c in callbacks.callbacks if isinstance(c, budget_lib.TimeBudget)), None)
        checks = next((c for c in callbacks.callbacks if isinstance(c, health.HealthMonitor)), None)
        return finish(cfg, model, state, logs, monitor, chief, time.time() - start, budget, checks)
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)


def finish(cfg, model, state, logs, monitor, chief, seconds, budget=None, checks=None):
    """Reports the stop reason; on success saves/exports the encoder and results.json."""
    if state.stop_reason == health.STOPPED:  # checkpoint written; results.json says why, no encoder
        if chief:
            ckpt_lib.write_json_atomic(os.path.join(cfg.model_dir, "results.json"),
                                       health.stopped_results(state, checks, seconds))
        return health.EXIT_UNHEALTHY
    if state.stop_reason == "nan":
        print(f"error: {state.stop_detail}", file=sys.stderr, flush=True)
        return EXIT_NAN
    if state.stop_reason == "signal":
        print(state.stop_detail, file=sys.stderr, flush=True)
        return 128 + int(state.signal)
    results = {"step": state.step, "epochs": cfg.epochs, "steps_per_epoch": state.steps_per_epoch,
               "seconds": round(seconds, 1), "final": {k: v for k, v in logs.items()},
               "knn_acc": None if monitor is None else monitor.last, "knn_k": cfg.knn_k,
               "steps_done": state.step, "epochs_done": round(state.step / state.steps_per_epoch, 2)}
    if budget is not None:
        results.update(budget.summary())
    if checks is not None:
        results["health"] = checks.summary()
    if not chief:
        return EXIT_OK
    results["encoder"] = save_encoder(model.encoder, cfg.model_dir)
    if cfg.export_dir:
        results["export"] = export(cfg, model.encoder, results)
    ckpt_lib.write_json_atomic(os.path.join(cfg.model_dir, "results.json"), results)
    print(f"done: step {state.step}, loss {logs.get('loss', float('nan')):.4f}"
          + (f", k-NN acc {monitor.last:.4f}" if monitor is not None and monitor.last is not None else "")
          + f"; encoder at {results['encoder']}", flush=True)
    return EXIT_OK
