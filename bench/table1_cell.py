"""One cell (row x budget x seed) of `bench.table1`: train, evaluate, write its results JSON.

A trained cell runs `python -m wmse_tf.train` as a subprocess in `<out>/<cell>/run` (the
trainer resumes a half-trained run from its checkpoints; the command is fixed in
`plan.json` at the first start, so a resumed run gets the same key flags), then evaluates
the encoder in this process with `wmse_tf.evaluate` (reference linear probe, 5-NN Euclidean
and cosine, full test set). "random" cells evaluate a freshly initialized encoder of the
same architecture, "pixels" cells the raw pixels (`wmse_tf.baselines.pixel_features`).
Wall-clock segments of every training subprocess go to `segments.json`, so the curves
can be drawn against seconds even across kills.
"""

import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNN_SPECS = ("euclidean:5", "cosine:5")  # euclidean:5 is the reference's k-NN
FINAL_KEYS = ("loss", "emb_std", "whiten_cond", "whiten_ok", "step_ok", "knn_acc", "rank_feat", "rank_emb", "emb_std_l2")


class TrainingStopped(Exception):
    """The training subprocess was stopped by a signal (exit code 128 + N): stop the table."""

    def __init__(self, code):
        super().__init__(f"training stopped by signal (exit code {code})")
        self.code = code


def read_json(path):
    from wmse_tf import atomic_io

    return atomic_io.read_json(path)


def write_json(path, obj):
    from wmse_tf import atomic_io

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_io.write_json(path, obj, sort_keys=True)


def machine():
    """CPU model and core count (throughputs are only reused on the same machine)."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def python_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def train_command(config, flags):
    return [sys.executable, "-m", "wmse_tf.train", f"--flagfile={config}", *flags]


def display(cmd):
    """A command as a readable string: `python`, paths relative to the repository."""
    return " ".join(["python", *cmd[1:]]).replace(ROOT + os.sep, "")


def resolve_config(config, flags=()):
    """The TrainConfig dict `wmse_tf.train` resolves from the flagfile and flags (--print_config)."""
    proc = subprocess.run(train_command(config, [*flags, "--print_config"]), cwd=ROOT, env=python_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"wmse_tf.train rejects the flags {list(flags)} with {config}: "
                         f"{proc.stderr.strip().splitlines()[-1:]}")
    resolved = json.loads(proc.stdout)
    resolved.pop("runtime", None)  # the machine's oneDNN state: not a setting of the cell
    return resolved


def run_training(cmd, cell_dir):
    """Runs one training subprocess (own session: a signal reaches it once, forwarded from here).

    Appends [start, end, exit code] to `<cell_dir>/segments.json`; returns the exit code;
    raises TrainingStopped when the table itself or the run was stopped by a signal.
    """
    path = os.path.join(cell_dir, "segments.json")
    segments = read_json(path) or []
    segments.append([time.time(), None, None])
    write_json(path, segments)
    print("+", display(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=python_env(), start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signum)
        proc.send_signal(signum)  # the trainer checkpoints and exits with 128 + signum

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        segments[-1][1:] = [time.time(), proc.returncode]
        write_json(path, segments)
    if received or code >= 128:
        raise TrainingStopped(128 + received[0] if received else code)
    return code


def segment_bounds(segments, times):
    """[(start, end)] of the training segments; a segment without end (the table was killed
    with it) ends at its last logged time before the next segment."""
    bounds = []
    for k, (start, end, _) in enumerate(segments):
        if end is None:
            nxt = segments[k + 1][0] if k + 1 < len(segments) else float("inf")
            end = max([t for t in times if start <= t < nxt], default=start)
        bounds.append((start, end))
    return bounds


def elapsed(times, segments):
    """Training wall seconds at each unix time in `times`, summed over the segments before it."""
    bounds = segment_bounds(segments, times)
    out = []
    for t in times:
        total = 0.0
        for start, end in bounds:
            if t > end:
                total += end - start
            elif t >= start:
                total += t - start
                break
        out.append(round(total, 1))
    return out


def curve(run_dir, segments):
    """[{epoch, step, elapsed, knn, loss}] from the run's log.jsonl (online k-NN per epoch)."""
    from wmse_tf.evaluation import plots

    rows = plots.read_epochs(run_dir)
    seconds = elapsed([r["time"] for r in rows], segments)
    return [{"epoch": r["epoch"], "step": r["step"], "elapsed": s, "loss": r.get("loss"),
             "knn": r.get("knn_acc_euclidean", r.get("knn_acc")),
             "knn_metric": "euclidean" if "knn_acc_euclidean" in r else "cosine" if "knn_acc" in r else None}
            for r, s in zip(rows, seconds)]


def seconds_budget_flags(seconds, shape_epochs, time_budget_flag, measure):
    """THE switch for the equal wall-clock budget: (training flags of a `seconds` budget, provenance).

    With `wmse_tf.train --time_budget` (`time_budget_flag` True): `--time_budget=<seconds>s`; the
    trainer times its own steps, plans the steps that fit in the training loop's budget and lays
    the lr schedule over them (`--epochs=shape_epochs` gives only the schedule's shape). Without
    it: epochs and a steps-per-epoch cap from a measured throughput, `measure()` -> (images/s,
    batch size, training images, source).
    """
    if time_budget_flag:
        return [f"--time_budget={seconds:g}s", f"--epochs={shape_epochs}"], {"source": "wmse_tf.train --time_budget"}
    ips, batch, images, source = measure()
    return throughput_flags(seconds, ips, images, batch), {"images_per_sec": ips, "batch_size": batch,
                                                          "source": source}


def throughput_flags(seconds, images_per_sec, num_images, batch_size):
    """--epochs and --steps_per_epoch that train `seconds` at `images_per_sec` (before views)."""
    total_steps = max(1, round(seconds * images_per_sec / batch_size))
    full = max(1, num_images // batch_size)
    epochs = max(1, math.ceil(total_steps / full))
    return [f"--epochs={epochs}", f"--steps_per_epoch={min(full, math.ceil(total_steps / epochs))}"]


def calibrate(config, flags, cell_dir, steps, seconds):
    """(images/s, batch, source) from a short run of `flags` (cached in cell_dir/run): its step
    throughput, discounted by its start-up time (process, data, tracing) over `seconds`."""
    from wmse_tf.evaluation import plots

    run_dir = os.path.join(cell_dir, "run")
    if not os.path.exists(os.path.join(run_dir, "results.json")):
        extra = ["--epochs=1", f"--steps_per_epoch={steps}", "--eval_every=0", "--checkpoint_every=0",
                 "--verbose=0", f"--model_dir={run_dir}"]
        if run_training(train_command(config, [*flags, *extra]), cell_dir):
            raise RuntimeError(f"calibration run {run_dir} failed")
    ips = [r["images_per_sec"] for r in plots.read_epochs(run_dir) if r.get("images_per_sec")]
    if not ips:
        raise RuntimeError(f"calibration run {run_dir} logged no throughput; raise --calibration_steps")
    batch = read_json(os.path.join(run_dir, "flags.json"))["batch_size"]
    done = read_json(os.path.join(run_dir, "results.json"))["step"]
    start, end, _ = (read_json(os.path.join(cell_dir, "segments.json")) or [[0, 0, 0]])[-1]
    startup = max(0.0, (end or start) - start - done * batch / ips[-1])
    return (ips[-1] * max(0.1, 1 - startup / seconds), batch,
            f"{steps}-step calibration run: {ips[-1]:.0f} img/s, {startup:.0f} s start-up")


def training_summary(run_dir, plan, segments):
    """What the table keeps of a finished run. `images_per_sec` is effective: images trained
    (before views) per wall second of the training processes (start-up, k-NN monitor and
    checkpoints included), the throughput an equal wall-clock budget is planned with."""
    from wmse_tf.evaluation import plots

    res = read_json(os.path.join(run_dir, "results.json")) or {}
    flags = read_json(os.path.join(run_dir, "flags.json")) or {}
    rows = plots.read_epochs(run_dir)
    wall = sum(end - start for start, end in segment_bounds(segments, [r["time"] for r in rows]))
    images = res.get("step", 0) * flags.get("batch_size", 0)
    steps_ips = [r["images_per_sec"] for r in rows if r.get("images_per_sec")]
    return {"command": display(plan["command"]), "epochs": res.get("epochs"), "step": res.get("step"),
            "steps_per_epoch": res.get("steps_per_epoch"), "batch_size": flags.get("batch_size"),
            "num_views": flags.get("num_views"), "method": flags.get("method"),
            "bn_per_view": flags.get("bn_per_view", False), "wall_seconds": round(wall, 1),
            "images_per_sec": round(images / wall, 1) if wall > 0 else None,
            "step_images_per_sec": round(sum(steps_ips) / len(steps_ips), 1) if steps_ips else None,
            "final": {k: v for k, v in (res.get("final") or {}).items() if k in FINAL_KEYS},
            "health": health_record(res.get("health")),
            "plan": {k: v for k, v in plan.items() if k != "command"}}


def health_record(summary):
    """What the table keeps of the run's training-health summary (results.json): the first unhealthy
    step and what was seen, or None when the run predates the checks or ran with them off."""
    if not summary:
        return None
    return {"first_unhealthy_step": summary.get("first_unhealthy_step"), "seen": summary.get("seen") or {}}


def evaluate_run(run_dir, data_dir, probe_epochs, seed):
    """Linear probe + 5-NN of a run dir's encoder.keras on the full train/test splits."""
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.evaluation.linear_probe import ProbeConfig

    conf = eval_lib.EvalConfig(data_dir=data_dir, probe=ProbeConfig(epochs=probe_epochs, seed=seed),
                               knn=KNN_SPECS, progress=False)
    return summarize_eval(eval_lib.evaluate(run_dir, conf), conf)


def evaluate_pixels(cfg, probe_epochs, seed):
    from wmse_tf.data import datasets as data
    from wmse_tf.demo import baselines
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.evaluation.linear_probe import ProbeConfig

    meta = data.info(cfg["dataset"])
    conf = eval_lib.EvalConfig(probe=ProbeConfig(epochs=probe_epochs, seed=seed), knn=KNN_SPECS, progress=False)
    start = time.time()
    train = baselines.pixel_features(cfg["dataset"], meta.train_split, cfg.get("data_dir"), 0)
    test = baselines.pixel_features(cfg["dataset"], meta.test_split, cfg.get("data_dir"), 0)
    res = eval_lib.evaluate_features(*train, *test, conf, meta.num_classes)
    res.update(num_train=len(train[1]), num_test=len(test[1]), num_features=int(train[0].shape[1]),
               seconds=round(time.time() - start, 1))
    return summarize_eval(res, conf)


def write_random_encoder(cfg, run_dir, seed):
    """`run_dir` holding a freshly initialized encoder of the config's architecture (+ flags.json)."""
    import keras

    from wmse_tf.core import encoders
    from wmse_tf.training import config as config_lib, trainer

    if os.path.exists(os.path.join(run_dir, "encoder.keras")):
        return
    tcfg = config_lib.TrainConfig.from_dict(dict(cfg, seed=seed))
    keras.utils.set_random_seed(seed)
    encoder = encoders.build(tcfg.arch, tcfg.stem, tcfg.width, tcfg.image_size,
                             policy=tcfg.mixed_precision)  # the trained encoders' dtype policy
    os.makedirs(run_dir, exist_ok=True)
    write_json(os.path.join(run_dir, "flags.json"), tcfg.to_dict())
    trainer.save_encoder(encoder, run_dir)


def summarize_eval(res, conf):
    from wmse_tf.evaluation import evaluator as eval_lib

    lin = res.get("linear", {})
    return {"linear_top1": lin.get("top1"), "linear_top5": lin.get("top5"),
            **{f"knn_{spec.replace(':', '')}": res["knn"][spec]["top1"] for spec in conf.knn},
            "num_train": res.get("num_train"), "num_test": res.get("num_test"),
            "num_features": res.get("num_features"), "seconds": res.get("seconds"),
            "effective_rank": res.get("effective_rank"),  # RankMe of the frozen features (wmse_tf.evaluation.health)
            "protocol": f"frozen features of the un-augmented test-time images; linear: "
                        f"{eval_lib.protocol(conf.probe)}; k-NN: {', '.join(conf.knn)} (majority vote)"}


def result_record(cell, settings, dataset, status, **parts):
    return {"cell": cell.name, "dataset": dataset, "row": cell.row.key, "label": cell.row.label, "budget": cell.budget,
            "budget_value": cell.budget_value, "seed": cell.seed, "kind": cell.row.kind, "status": status,
            "settings": settings, "machine": machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **parts}
