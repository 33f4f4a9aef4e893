"""The CPU demo's command (`make demo`): train W-MSE on Fashion-MNIST, evaluate, plot, export.

  python -m wmse_tf.demo                                   # configs/fashion_mnist.flags
  python -m wmse_tf.demo --flagfile=configs/smoke.flags --probe_epochs=20   # any train flags

Steps, all in one process (`wmse_tf.demo.runner.run`):
  1. `wmse_tf.training.trainer.run` with the train flags (default flagfile
     configs/fashion_mnist.flags; any `wmse_tf.train` flag overrides it);
  2. frozen-feature evaluation on the full train/test splits of three feature sets:
     the trained encoder, the same architecture with random weights, raw pixels;
     linear probe (`wmse_tf.evaluation.linear_probe`, `--probe_epochs`) and 5-NN (cosine and
     Euclidean, `wmse_tf.evaluation.knn`), printed as one table with the protocol;
  3. PNGs: training curves and a 2-D map (t-SNE or PCA) of test features by class;
  4. SavedModel export in the zoo layout (`<export_dir>/<name>/<version>/` with
     model_card.json holding the flags and these metrics);
  5. `<model_dir>/demo_results.json` and a summary of where everything went.
A finished run in `--model_dir` is not retrained (trainer.run resumes / skips).
Exit codes: those of `wmse_tf.train` (2 a user error, e.g. bad flags or dataset missing,
printed as one `error:` line; 3 NaN).
"""

from absl import flags, logging

from wmse_tf import cli, resources, train as train_cli  # train: defines the training flags
from wmse_tf.training import config as config_lib

FLAGS = flags.FLAGS
DEFAULT_FLAGFILE = resources.flagfile("fashion_mnist")  # the checkout's configs/, or the wheel's copy
flags.DEFINE_integer("probe_epochs", 500, "Linear-probe epochs (500: the reference protocol).")
flags.DEFINE_integer("eval_limit_train", 0, "Use only the first N train images for evaluation (0 = all).")
flags.DEFINE_integer("eval_limit_test", 0, "Use only the first N test images for evaluation (0 = all).")
flags.DEFINE_enum("map", "tsne", ["tsne", "pca"], "2-D map of test features.")
flags.DEFINE_integer("map_points", 2000, "Test images in the 2-D map.")
flags.DEFINE_bool("pixels", True, "Evaluate raw pixels as a baseline.")
flags.DEFINE_enum("baselines", "auto", ["auto", "compute"], "auto: the random-weights and raw-pixel rows from "
                  "this machine's cache or, for the default recipe, the rows shipped with wmse_tf (marked in the "
                  "table), else computed; compute: computed here (and cached for the next demo).")
flags.DEFINE_string("demo_export_dir", "zoo/exports", "Export dir when --export_dir is not given.")
flags.DEFINE_string("demo_budget", "11m", "Wall clock of the whole demo, training and evaluation (the training "
                    "budget is what the evaluation, estimated on this machine, leaves); replaces a --time_budget "
                    "> 0; 0: train for --time_budget. --time_budget=0 trains --epochs.")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    cfg, code = train_cli.config_or_exit(argv)
    if cfg is None:
        return code
    from wmse_tf.demo import runner
    from wmse_tf.export import variants

    try:
        demo_budget = config_lib.parse_duration(FLAGS.demo_budget)
    except config_lib.ConfigError as e:
        return cli.fail(str(e).replace("--time_budget", "--demo_budget"))
    code, _ = runner.run(cfg, FLAGS.probe_epochs, FLAGS.eval_limit_train, FLAGS.eval_limit_test, FLAGS.map,
                         FLAGS.map_points, FLAGS.pixels, FLAGS.demo_export_dir, variants.parse(FLAGS.export_formats),
                         demo_budget, FLAGS.baselines == "auto")
    return code


def with_default_flagfile(argv):
    """argv with --flagfile=configs/fashion_mnist.flags first unless a flagfile is given."""
    if any(a.startswith(("--flagfile", "-flagfile")) for a in argv[1:]):
        return argv
    return [argv[0], f"--flagfile={DEFAULT_FLAGFILE}", *argv[1:]]

