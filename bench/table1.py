"""Table 1 of the paper at CPU scale (issue 17): W-MSE and its baselines on Fashion-MNIST.

  python -m bench.table1                   # every cell (resumes; about 2.9 h on the 2-core bf16 CPU)
  python -m bench.table1 --shard=1/2       # every 2nd cell, from the 2nd (another session runs 0/2)
  python -m bench.table1 --rows=wmse2,byol --seeds=0 --budgets=epochs
  python -m bench.table1 --report          # finished cells -> docs/results.md (markers), curves PNG

Every row trains the same encoder with the same augmentation: the demo's recipe of the
table's runs (`--config`, configs/fashion_mnist_emb32.flags, emb 32) plus the row's flags
(method, views). Rows:
W-MSE 2, W-MSE 4 (half the batch, as the reference), NT-Xent contrastive, BYOL, NT-Xent on
whitened embeddings, normalized MSE without whitening (collapses), W-MSE 2 with BatchNorm
per view, and the evaluation-only rows "random weights" and "raw pixels". Two budgets:
equal epochs (`--budget_epochs`) and equal wall-clock seconds (`--budget_seconds`, passed as
the trainer's `--time_budget`; `table1_cell.seconds_budget_flags` is the one place that
falls back to a throughput estimate for a trainer without it). Each seed of `--seeds` is a cell.

A cell is `<out>/<cell>/` (plan.json, segments.json, run/ = the training model_dir,
result.json) and its result is also written to `--results_dir` (committed: run dirs do
not survive a session). Finished cells (same config, train args and probe epochs) are
skipped, a half-trained one resumes from its checkpoints. Evaluation: the reference linear
probe (`--probe_epochs`, 500) and 5-NN (Euclidean, as the reference; cosine too) on the
full test set; the online k-NN monitor of every run uses Euclidean distance
(`--knn_metric=euclidean`) for the curves. Exit code: 0, 1 if a cell failed, 128 + N
when stopped by signal N (the running training checkpoints first).
"""

import glob
import hashlib
import os
import sys

from absl import app, flags

from bench import table1_cell as cell_lib
from bench.table1_grid import BUDGETS, ROW_BY_KEY, ROWS, make_cells, parse_shard
from wmse_tf.demo import command  # noqa: F401 - defines the training flags and --probe_epochs, reused here

FLAGS = flags.FLAGS


def define_flags():
    """The table's own flags; defined when run as a program (as zoo.build does), so importing this
    module beside other entry points (tests) defines no clashing flag such as --train_arg."""
    flags.DEFINE_string("config", "configs/fashion_mnist_emb32.flags", "Flagfile every row starts from (encoder, "
                        "augmentation, optimizer); rows add their method flags.")
    flags.DEFINE_multi_string("train_arg", [], "Extra wmse_tf.train flag for every cell, after the row's, e.g. "
                              "--train_arg=--data_dir=DIR or --train_arg=--mixed_precision=float32.")
    flags.DEFINE_string("out", "runs/table1", "Cell directories <out>/<cell>/ (run/ is the model_dir).")
    flags.DEFINE_string("results_dir", "bench/results/table1", "Results JSON of finished cells (committed).")
    flags.DEFINE_string("results_md", "docs/results.md", "--report: markdown file whose marked sections it fills.")
    flags.DEFINE_string("img_dir", "docs/img", "--report: where the curve PNGs go.")
    flags.DEFINE_list("rows", [r.key for r in ROWS], f"Rows, from: {', '.join(r.key for r in ROWS)}.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds (weights, data order, augmentation, probe); a cell each.")
    flags.DEFINE_list("budgets", list(BUDGETS), "Budgets to run: epochs (equal epochs), seconds (equal wall-clock).")
    flags.DEFINE_integer("budget_epochs", 4, "Equal-epochs budget: epochs of every trained row.")
    flags.DEFINE_float("budget_seconds", 240, "Equal wall-clock budget: training seconds of every trained row.")
    flags.DEFINE_string("shard", "0/1", "i/n: run every n-th cell from the i-th (0-based), to split the table.")
    flags.DEFINE_bool("report", False, "Only gather finished cells into the markdown table and curves.")
    flags.DEFINE_integer("calibration_steps", 30, "Steps of the throughput run of a row when no equal-epochs "
                         "cell of it finished on this machine.")


OWN_FLAGS = ("config", "train_arg", "out", "results_dir", "results_md", "img_dir", "rows", "seeds", "budgets",
             "budget_epochs", "budget_seconds", "shard", "report", "calibration_steps", "probe_epochs")


def flags_sha1(text):
    """sha1 (12 hex digits) of a flagfile's flag lines: its comments and blank lines do not
    change what runs, so editing them keeps the finished cells."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:12]


class Table:
    """The settings of one invocation and the cells' shared state (base config, throughputs)."""

    def __init__(self, config, train_args, out, results_dir, probe_epochs, calibration_steps, seeds,
                 budget_epochs=4):
        self.config = os.path.abspath(config if os.path.exists(config) else os.path.join(cell_lib.ROOT, config))
        self.train_args, self.out = list(train_args), os.path.abspath(out)
        self.results_dir, self.probe_epochs = os.path.abspath(results_dir), probe_epochs
        self.calibration_steps, self.seeds, self.budget_epochs = calibration_steps, seeds, budget_epochs
        with open(self.config) as f:
            digest = flags_sha1(f.read())
        precision_free = [a for a in self.train_args if not a.startswith("--mixed_precision=")]
        self._settings = {"config": config, "config_sha1": digest, "train_args": precision_free,
                          "probe_epochs": probe_epochs}
        self.time_budget_flag = "time_budget" in FLAGS  # defined by wmse_tf.train (else: throughput plan)
        self._base = None

    @property
    def settings(self):
        """What a cell's result depends on besides its row, budget and seed: the flagfile's flag
        lines, the extra train args, the probe, and the dtype policy, whether `auto` resolved it
        or `--train_arg=--mixed_precision=...` pinned it (results of other settings are neither
        reused nor mixed into the table)."""
        return {**self._settings, "mixed_precision": self.base["mixed_precision"]}

    @property
    def base(self):
        """The flagfile's resolved TrainConfig dict (with the train args)."""
        if self._base is None:
            self._base = cell_lib.resolve_config(self.config, self.train_args)
        return self._base

    def finished(self, cell):
        for path in (os.path.join(self.results_dir, cell.name + ".json"),
                     os.path.join(self.out, cell.name, "result.json")):
            rec = cell_lib.read_json(path)
            if rec and rec.get("settings") == self.settings:
                return rec
        return None

    def results(self, row_key, budget):
        """Finished results of a row and budget on this machine (any seed and budget value)."""
        paths = glob.glob(os.path.join(self.results_dir, "*.json")) + glob.glob(
            os.path.join(self.out, "*", "result.json"))
        recs = {}
        for path in paths:
            rec = cell_lib.read_json(path)
            if rec:
                recs.setdefault(rec.get("cell"), rec)
        return [r for r in recs.values() if r.get("row") == row_key and r.get("budget") == budget
                and r.get("status") == "ok" and r.get("settings") == self.settings
                and r.get("machine") == cell_lib.machine()]

    def row_flags(self, row):
        return [f.format(half_batch=self.base["batch_size"] // 2) for f in row.flags]

    def throughput(self, row, seconds):
        """(images/s, batch size, source) of a row on this machine, for a wall-clock plan of `seconds`:
        effective images per wall second of its equal-epochs cells, else of a calibration run
        (its step throughput, discounted by its start-up time over `seconds`)."""
        done = [r for r in self.results(row.key, "epochs") if r["train"].get("images_per_sec")]
        if done:
            ips = sum(r["train"]["images_per_sec"] for r in done) / len(done)
            return ips, done[0]["train"]["batch_size"], "effective throughput of " + ", ".join(
                r["cell"] for r in done)
        return cell_lib.calibrate(self.config, self.row_flags(row) + self.train_args,
                                  os.path.join(self.out, "_calibration", row.key), self.calibration_steps, seconds)

    def measure(self, cell):
        """(images/s, batch, training images, source): the wall-clock plan without --time_budget."""
        from wmse_tf.training import config as config_lib, trainer

        ips, batch, source = self.throughput(cell.row, cell.budget_value)
        return ips, batch, trainer.count_images(config_lib.TrainConfig.from_dict(self.base)), source

    def plan(self, cell, cell_dir):
        """The cell's fixed training command (plan.json), made at its first start."""
        path = os.path.join(cell_dir, "plan.json")
        plan = cell_lib.read_json(path)
        if plan:
            return plan
        plan = {"budget": cell.budget, "budget_value": cell.budget_value}
        if cell.budget == "epochs":  # without the flagfile's own --time_budget (the demo's 8m)
            budget = [f"--epochs={int(cell.budget_value)}"] + ["--time_budget=0"] * self.time_budget_flag
        else:
            budget, plan["throughput"] = cell_lib.seconds_budget_flags(
                cell.budget_value, self.budget_epochs, self.time_budget_flag, lambda: self.measure(cell))
        run_dir = os.path.join(cell_dir, "run")
        plan["command"] = cell_lib.train_command(self.config, [
            *self.row_flags(cell.row), *budget, f"--seed={cell.seed}", f"--model_dir={run_dir}",
            "--knn_metric=euclidean", "--verbose=2", *self.train_args])
        plan["run_dir"] = run_dir
        cell_lib.write_json(path, plan)
        return plan

    def run_cell(self, cell):
        """Runs (or resumes, or skips) one cell; returns its record, or None if it failed."""
        done = self.finished(cell)
        if done:
            print(f"[table1] {cell.name}: finished ({done['status']}), skipped", flush=True)
            return done
        print(f"[table1] {cell.name}", flush=True)
        cell_dir = os.path.join(self.out, cell.name)
        os.makedirs(cell_dir, exist_ok=True)
        probe, seed = self.probe_epochs, cell.seed
        if cell.row.kind == "pixels":
            record = cell_lib.result_record(cell, self.settings, self.base["dataset"], "ok",
                                            eval=cell_lib.evaluate_pixels(self.base, probe, seed))
        elif cell.row.kind == "random":
            run_dir = os.path.join(cell_dir, "run")
            cell_lib.write_random_encoder(self.base, run_dir, seed)
            record = cell_lib.result_record(cell, self.settings, self.base["dataset"], "ok", eval=cell_lib.evaluate_run(
                run_dir, self.base.get("data_dir"), probe, seed))
        else:
            record = self.run_training_cell(cell, cell_dir)
            if record is None:
                return None
        cell_lib.write_json(os.path.join(cell_dir, "result.json"), record)
        cell_lib.write_json(os.path.join(self.results_dir, cell.name + ".json"), record)
        return record

    def run_training_cell(self, cell, cell_dir):
        plan = self.plan(cell, cell_dir)
        run_dir = plan["run_dir"]
        trained = all(os.path.exists(os.path.join(run_dir, n)) for n in ("results.json", "encoder.keras"))
        code = 0 if trained else cell_lib.run_training(plan["command"], cell_dir)
        segments = cell_lib.read_json(os.path.join(cell_dir, "segments.json")) or []
        parts = {"train": cell_lib.training_summary(run_dir, plan, segments),
                 "curve": cell_lib.curve(run_dir, segments)}
        if code == 3:  # NaN/Inf loss: a finished cell without encoder (the report says so)
            return cell_lib.result_record(cell, self.settings, self.base["dataset"], "nan", **parts)
        if code != 0:
            print(f"[table1] {cell.name}: training failed with exit code {code}; not recorded", file=sys.stderr)
            return None
        parts["eval"] = cell_lib.evaluate_run(run_dir, self.base.get("data_dir"), self.probe_epochs, cell.seed)
        return cell_lib.result_record(cell, self.settings, self.base["dataset"], "ok", **parts)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    stray = [n for n in FLAGS if FLAGS[n].present and n not in OWN_FLAGS and n != "flagfile"
             and FLAGS.find_module_defining_flag(n, "").startswith("wmse_tf")]
    if stray:
        raise app.UsageError(f"training flags {stray} go through --train_arg, e.g. --train_arg=--{stray[0]}=...")
    unknown = [r for r in FLAGS.rows if r not in ROW_BY_KEY] + [b for b in FLAGS.budgets if b not in BUDGETS]
    if unknown:
        raise app.UsageError(f"unknown rows/budgets {unknown}; rows: {list(ROW_BY_KEY)}, budgets: {BUDGETS}")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # feature-extraction retracing notices (one per batch shape)
    seeds = [int(s) for s in FLAGS.seeds]
    table = Table(FLAGS.config, FLAGS.train_arg, FLAGS.out, FLAGS.results_dir, FLAGS.probe_epochs,
                  FLAGS.calibration_steps, seeds, FLAGS.budget_epochs)
    rows = [ROW_BY_KEY[k] for k in FLAGS.rows]
    if FLAGS.report:
        from bench import table1_report

        print(table1_report.report(FLAGS.results_dir, table.settings, ROWS, FLAGS.results_md, FLAGS.img_dir,
                                   cell_lib.ROOT))
        return 0
    i, n = parse_shard(FLAGS.shard)
    cells = make_cells(rows, FLAGS.budgets, seeds, FLAGS.budget_epochs, FLAGS.budget_seconds)[i::n]
    print(f"[table1] {len(cells)} cells (shard {i}/{n}), out={FLAGS.out}, results={FLAGS.results_dir}", flush=True)
    failed = []
    for cell in cells:
        try:
            if table.run_cell(cell) is None:
                failed.append(cell.name)
        except cell_lib.TrainingStopped as e:
            print(f"[table1] {cell.name}: {e}; rerun the same command to continue", file=sys.stderr)
            return e.code
    print(f"[table1] done: {len(cells) - len(failed)} of {len(cells)} cells finished"
          + (f"; failed: {', '.join(failed)}" if failed else "") + "; `python -m bench.table1 --report` "
          "gathers them", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
