"""Computes the baseline rows shipped with wmse_tf (`wmse_tf.demo.baseline_rows`), or checks them.

  python -m bench.baseline_rows                # the demo's default recipe: (re)writes the shipped rows
  python -m bench.baseline_rows --compare      # computes them here and compares with the shipped rows
  python -m bench.baseline_rows --flagfile=configs/smoke.flags --probe_epochs=20 --shipped_dir=/tmp/rows

The rows are computed as a first demo computes them (`baselines.evaluate_with_baselines`, nothing
reused) on a run dir holding the recipe's untrained encoder and its flags; the demo's evaluation
protocol (`wmse_tf.demo.runner.eval_config`) and flags (`--probe_epochs`, `--eval_limit_*`).
`--compare` exits 1 when a figure differs by more than `--tolerance` (0.1 point) from the shipped
row, or none is shipped for this key. Prints the machine line first.
"""

import datetime
import os
import sys
import tempfile
import time

from absl import flags

from wmse_tf import cli, train as train_cli
from wmse_tf.demo import command as demo_command, runner

FLAGS = flags.FLAGS
flags.DEFINE_bool("compare", False, "Compare with the shipped rows instead of writing them.")
flags.DEFINE_string("shipped_dir", "", "Where the rows are written or read (default: the package's).")
flags.DEFINE_float("tolerance", 0.001, "--compare: largest difference of a score (0.001 = 0.1 point).")


def scores(row):
    """{name: value} of a row's accuracies: linear top-1/top-5 and each k-NN spec's top-1."""
    out = {f"linear {k}": v for k, v in (row.get("linear") or {}).items() if k in ("top1", "top5")}
    out.update({f"{spec} top1": r["top1"] for spec, r in row["knn"].items()})
    return out


def compute(cfg, econf, work_dir):
    """{row name: (kind, parts, row)} of the baselines of `cfg`'s recipe, computed here."""
    from wmse_tf.core import encoders
    from wmse_tf.demo import baselines
    from wmse_tf.evaluation import evaluator as eval_lib
    from wmse_tf.training import checkpoint as ckpt_lib

    run_dir = os.path.join(work_dir, "run")
    os.makedirs(run_dir)
    encoder = encoders.build(cfg.arch, cfg.stem, cfg.width, cfg.image_size, policy=cfg.mixed_precision)
    encoder.save(os.path.join(run_dir, "encoder.keras"))  # its layers compute as the run's would
    ckpt_lib.write_json_atomic(os.path.join(run_dir, "flags.json"), cfg.to_dict())  # as trainer.run writes it
    rows, _ = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed, cache_dir=work_dir,
                                                reuse=False, log=lambda text: print(text, flush=True))
    pixel_set = baselines.pixel_sets(cfg.dataset, econf.data_dir, econf.limit_train, econf.limit_test)
    parts = baselines.row_parts(eval_lib.open_model(run_dir, True, cfg.seed), baselines.data_digest(pixel_set))
    return {name: (*parts[name], rows[name]) for name in parts}


def main(argv):
    cfg, code = train_cli.config_or_exit(argv)  # decides oneDNN for the recipe's encoder, before TF's import
    if cfg is None:
        return code
    from bench import machine_line
    from wmse_tf import onednn
    from wmse_tf.demo import baseline_rows, baselines
    from wmse_tf.training import resolve

    print(machine_line(), flush=True)
    econf = runner.eval_config(cfg, FLAGS.probe_epochs, FLAGS.eval_limit_train, FLAGS.eval_limit_test)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work_dir:
        computed = compute(cfg, econf, work_dir)
    seconds = time.perf_counter() - start
    shipped_dir = FLAGS.shipped_dir or None
    protocol = baselines.protocol(econf)
    worst = 0.0
    for name, (kind, parts, row) in computed.items():
        if not FLAGS.compare:
            provenance = {"machine": resolve.cpu_description(), "onednn": onednn.current().line(),
                          "tensorflow": onednn.tf_version(), "command": " ".join(
                              ["python -m bench.baseline_rows", *argv[1:]]),
                          "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                          "seconds": round(seconds, 1)}
            print(f"{name}: written {baseline_rows.write(kind, parts, protocol, row, provenance, shipped_dir)}")
            continue
        shipped = baseline_rows.read(kind, parts, protocol, shipped_dir)
        if shipped is None:
            print(f"{name}: no shipped row for this key ({baseline_rows.path(kind, parts, protocol, shipped_dir)})")
            worst = float("inf")
            continue
        theirs = scores(shipped)
        for metric, value in scores(row).items():
            diff = abs(value - theirs[metric])
            worst = max(worst, diff)
            print(f"{name:<30} {metric:<18} here {100 * value:6.2f}  shipped {100 * theirs[metric]:6.2f}"
                  f"  diff {100 * diff:.2f} point")
    print(f"computed in {seconds:.0f} s")
    if FLAGS.compare and worst > FLAGS.tolerance:
        print(f"largest difference {100 * worst:.2f} point > {100 * FLAGS.tolerance:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    cli.run(main, argv=demo_command.with_default_flagfile(sys.argv))
