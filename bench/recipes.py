"""Recipe study in wall-clock time: which Fashion-MNIST recipe gives the best encoder in N seconds.

  python -m bench.recipes --time                               # time each recipe's step (quiet machine)
  python -m bench.recipes --recipes=demo,erase --seconds=150   # train + evaluate those cells (resumes)
  python -m bench.recipes --report                             # results -> docs/recipes.md + curves PNG

Every recipe is the demo's recipe before the study (`--config`,
configs/fashion_mnist_resnet18_w8.flags) plus its own flags (`RECIPES`). Wall-clock fairness
without a quiet machine for every cell: `--time` measures each recipe's training step once, alone
(a short run, its steady images/s), into `<results_dir>/steps__<recipe>.json` with the machine
line; a cell of S seconds then trains the steps S buys at that step time (`--epochs` x
`--steps_per_epoch`, the schedule's drops scaled with the epochs), so cells may run while the
machine does other work and keep their budget. A recipe whose flags change only values, not the
computation (lr, crop scale, jitter strength), takes the step time of the recipe it is `timed_as`.
Start-up, tracing, k-NN monitor and checkpoints are not counted: the seconds are training
seconds. Each cell (recipe x seconds x seed) is `<out>/<cell>/`, resumes from its checkpoints,
and writes `<results_dir>/<cell>.json` (committed) with its machine line, steps, epochs,
precision and scores: linear probe (`--probe_epochs`; the reference's 500 for reported cells)
and 5-NN cosine and Euclidean on the full test split.
"""

import dataclasses
import math
import os
import sys

from absl import app, flags

from bench import machine_line, table1_cell as cell_lib

FLAGS = flags.FLAGS
BASE_EPOCHS = 6  # the schedule shape of configs/fashion_mnist.flags (--epochs=6, drop the last 1)


@dataclasses.dataclass(frozen=True)
class Recipe:
    key: str
    lever: str  # what it changes against the demo's recipe
    flags: tuple = ()
    timed_as: str = ""  # a recipe whose step does the same computation (only values differ): its step time


_GRAY = ("--saturation=0", "--hue=0", "--grayscale_p=0")  # no-ops on gray images: not computed
_POOL32 = (*_GRAY, "--arch=resnet10", "--width=32", "--stem=small")
_WIN = (*_POOL32, "--erase_p=0.5")  # the first round's winner; with solarization (win_solarize): the demo's
RECIPES = (
    Recipe("demo", "the base with CIFAR's colour operations computed (no-ops on gray images)",
           ("--saturation=0.4", "--hue=0.1", "--grayscale_p=0.1")),
    Recipe("gray", "the base: ResNet-18, width 8, CIFAR stem, 60-100% crops, brightness/contrast", _GRAY),
    Recipe("crop20", "20-100% crops", (*_GRAY, "--crop_scale_min=0.2")),
    Recipe("crop35_bc8", "35-100% crops, brightness and contrast 0.8", (*_GRAY, "--crop_scale_min=0.35",
                                                                       "--brightness=0.8", "--contrast=0.8")),
    Recipe("erase", "random erasing p=0.5", (*_GRAY, "--erase_p=0.5")),
    Recipe("solarize", "solarization p=0.2", (*_GRAY, "--solarize_p=0.2")),
    Recipe("invert", "inversion p=0.2", (*_GRAY, "--invert_p=0.2")),
    Recipe("blur", "Gaussian blur p=0.3, sigma 0.1-1", (*_GRAY, "--blur_p=0.3", "--blur_sigma_max=1")),
    Recipe("wmse4", "W-MSE 4 (4 views, batch 128)", (*_GRAY, "--num_views=4", "--batch_size=128")),
    Recipe("width16", "width 16 (128-d features)", (*_GRAY, "--width=16")),
    Recipe("resnet10_w16", "ResNet-10, width 16", (*_GRAY, "--arch=resnet10", "--width=16")),
    Recipe("r10w16_erase", "ResNet-10, width 16, random erasing p=0.5",
           (*_GRAY, "--arch=resnet10", "--width=16", "--erase_p=0.5")),
    Recipe("r10w16_wmse4", "ResNet-10, width 16, W-MSE 4 (batch 128)",
           (*_GRAY, "--arch=resnet10", "--width=16", "--num_views=4", "--batch_size=128")),
    Recipe("r10w32", "ResNet-10, width 32 (256-d features)", (*_GRAY, "--arch=resnet10", "--width=32")),
    Recipe("r10w16_emb32", "ResNet-10, width 16, emb 32, w_size 128",
           (*_GRAY, "--arch=resnet10", "--width=16", "--emb=32", "--w_size=128")),
    Recipe("r10w32_pool", "ResNet-10, width 32, stem with 2x2 max pool (14x14 first stage)",
           (*_GRAY, "--arch=resnet10", "--width=32", "--stem=small")),
    Recipe("r18w16_pool", "ResNet-18, width 16, stem with max pool", (*_GRAY, "--width=16", "--stem=small")),
    Recipe("r10w24", "ResNet-10, width 24 (192-d features)", (*_GRAY, "--arch=resnet10", "--width=24")),
    Recipe("p32_erase", "r10w32_pool + random erasing p=0.5", (*_POOL32, "--erase_p=0.5")),
    Recipe("p32_wmse4", "r10w32_pool + W-MSE 4 (batch 128)", (*_POOL32, "--num_views=4", "--batch_size=128")),
    Recipe("p32_emb32", "r10w32_pool + emb 32, w_size 128", (*_POOL32, "--emb=32", "--w_size=128")),
    Recipe("r18w32_pool", "ResNet-18, width 32, stem with max pool", (*_GRAY, "--width=32", "--stem=small")),
    Recipe("r10w48_pool", "ResNet-10, width 48, stem with max pool (384-d features)",
           (*_GRAY, "--arch=resnet10", "--width=48", "--stem=small")),
    # Levers on the first round's winner (r10w32_pool + random erasing); win_solarize is configs/fashion_mnist.flags.
    Recipe("p48_erase", "ResNet-10, width 48, max-pooled stem, random erasing (384-d features)",
           (*_GRAY, "--arch=resnet10", "--width=48", "--stem=small", "--erase_p=0.5")),
    Recipe("r18p32_erase", "ResNet-18, width 32, max-pooled stem, random erasing",
           (*_GRAY, "--width=32", "--stem=small", "--erase_p=0.5")),
    Recipe("win_crop35", "the winner with 35-100% crops", (*_WIN, "--crop_scale_min=0.35"), "p32_erase"),
    Recipe("win_crop20", "the winner with 20-100% crops", (*_WIN, "--crop_scale_min=0.2"), "p32_erase"),
    Recipe("win_bc8", "the winner with brightness and contrast 0.8", (*_WIN, "--brightness=0.8",
                                                                      "--contrast=0.8"), "p32_erase"),
    Recipe("win_emb32", "the winner with emb 32, w_size 128", (*_WIN, "--emb=32", "--w_size=128")),
    Recipe("win_lr4e-3", "the winner with lr 4e-3", (*_WIN, "--lr=4e-3"), "p32_erase"),
    Recipe("win_cosine", "the winner with the cosine schedule", (*_WIN, "--lr_schedule=cosine"), "p32_erase"),
    Recipe("win_batch128", "the winner with batch 128", (*_WIN, "--batch_size=128")),
    Recipe("win_solarize", "the winner with solarization p=0.2", (*_WIN, "--solarize_p=0.2")),
    Recipe("win_invert", "the winner with inversion p=0.2", (*_WIN, "--invert_p=0.2"), "win_solarize"),
    Recipe("win_blur", "the winner with Gaussian blur p=0.3, sigma 0.1-1", (*_WIN, "--blur_p=0.3",
                                                                            "--blur_sigma_max=1")),
    Recipe("win_affine", "the winner with small affine transforms p=0.5 (rotation <= 15, shear <= 10 degrees)",
           (*_WIN, "--affine_p=0.5")),
    Recipe("win_mc2", "the winner + 2 small views (multi-crop: 14x14 px, 20-60% crops)",
           (*_WIN, "--local_views=2", "--local_crop_scale_min=0.2", "--local_crop_scale_max=0.6")),
    Recipe("win_mc4", "the winner + 4 small views (multi-crop: 14x14 px, 20-60% crops)",
           (*_WIN, "--local_views=4", "--local_crop_scale_min=0.2", "--local_crop_scale_max=0.6")),
    # The paper's methods on the demo's winning encoder, for time to accuracy (same flags but the method's).
    Recipe("m_wmse4", "method: W-MSE 4 on the demo's recipe", (*_POOL32, "--erase_p=0.5", "--num_views=4",
                                                               "--batch_size=128")),
    Recipe("m_contrastive", "method: NT-Xent on the demo's recipe", (*_POOL32, "--erase_p=0.5",
                                                                     "--method=contrastive")),
    Recipe("m_byol", "method: BYOL on the demo's recipe", (*_POOL32, "--erase_p=0.5", "--method=byol")),
    Recipe("m_normmse", "method: normalized MSE without whitening on the demo's recipe",
           (*_POOL32, "--erase_p=0.5", "--method=normmse")),
    Recipe("emb32", "emb 32, w_size 128", (*_GRAY, "--emb=32", "--w_size=128")),
    Recipe("lr4e-3", "lr 4e-3", (*_GRAY, "--lr=4e-3")),
    Recipe("cosine", "cosine schedule", (*_GRAY, "--lr_schedule=cosine")),
    Recipe("batch128", "batch 128", (*_GRAY, "--batch_size=128")),
)
RECIPE_BY_KEY = {r.key: r for r in RECIPES}


def define_flags():
    flags.DEFINE_string("config", "configs/fashion_mnist_resnet18_w8.flags", "Flagfile every recipe starts "
                        "from (the demo's recipe before the study).")
    flags.DEFINE_list("recipes", [r.key for r in RECIPES], "Recipes, from: " + ", ".join(RECIPE_BY_KEY))
    flags.DEFINE_list("seconds", ["150"], "Training seconds of a cell (each a cell).")
    flags.DEFINE_list("seeds", ["0"], "Seeds (a cell each).")
    flags.DEFINE_integer("probe_epochs", 500, "Linear probe epochs (the reference's 500).")
    flags.DEFINE_integer("time_steps", 100, "--time: steps of each timing run.")
    flags.DEFINE_bool("time", False, "Time each recipe's step (run it alone on a quiet machine).")
    flags.DEFINE_bool("report", False, "Gather the results into --report_md and its PNG.")
    flags.DEFINE_multi_string("train_arg", [], "Extra wmse_tf.train flag for every cell and timing run.")
    flags.DEFINE_string("out", "runs/recipes", "Cell directories.")
    flags.DEFINE_string("results_dir", "bench/results/recipes", "Result JSON files (committed).")
    flags.DEFINE_string("report_md", "docs/recipes.md", "--report: the markdown file (marked section).")
    flags.DEFINE_string("methods_md", "docs/results.md", "--report: the markdown file of the methods' time to "
                        "accuracy (bench.methods_time; marked section).")
    flags.DEFINE_string("img_dir", "docs/img", "--report: where the PNGs go.")


def config_path(config):
    return config if os.path.isabs(config) else os.path.join(cell_lib.ROOT, config)


def time_recipe(recipe, config, steps, out, results_dir, train_args=()):
    """Times one recipe's step alone: {step_seconds, images_per_sec, batch_size, precision, machine}."""
    path = os.path.join(results_dir, f"steps__{recipe.key}.json")
    done = cell_lib.read_json(path)
    if done and done.get("machine") == cell_lib.machine() and done.get("flags") == list(recipe.flags):
        return done
    cell_dir = os.path.join(out, "_timing", recipe.key)
    ips, batch, source = cell_lib.calibrate(config_path(config), [*recipe.flags, "--time_budget=0", *train_args],
                                            cell_dir, steps, float("inf"))
    flags_json = cell_lib.read_json(os.path.join(cell_dir, "run", "flags.json")) or {}
    record = {"recipe": recipe.key, "flags": list(recipe.flags), "step_seconds": round(batch / ips, 4),
              "images_per_sec": round(ips, 1), "batch_size": batch, "steps": steps, "source": source,
              "mixed_precision": flags_json.get("mixed_precision"), "machine": cell_lib.machine(),
              "machine_line": machine_line()}
    cell_lib.write_json(path, record)
    return record


def length_flags(total_steps, batch_size, num_images, drop_epochs):
    """--epochs, --steps_per_epoch (at most a full pass) and the step schedule's drops scaled from the
    flagfile's 6-epoch shape, so every length drops the lr at the same fractions of its steps."""
    full = max(1, num_images // batch_size)
    epochs = max(BASE_EPOCHS, math.ceil(total_steps / full))
    drops = ",".join(str(max(1, round(int(d) * epochs / BASE_EPOCHS))) for d in drop_epochs)
    return [f"--epochs={epochs}", f"--steps_per_epoch={max(1, round(total_steps / epochs))}",
            f"--lr_drop_epochs={drops}", "--time_budget=0"]


def cell_name(recipe, seconds, seed):
    return f"{recipe.key}__t{seconds:g}s__seed{seed}"


def run_cell(recipe, seconds, seed, args):
    """Trains (or resumes) and evaluates one cell; returns its record (None if training failed)."""
    name = cell_name(recipe, seconds, seed)
    path = os.path.join(args.results_dir, name + ".json")
    done = cell_lib.read_json(path)
    if done and done.get("probe_epochs") == args.probe_epochs:
        print(f"[recipes] {name}: finished, skipped", flush=True)
        return done
    timed = recipe.timed_as or recipe.key
    timing = cell_lib.read_json(os.path.join(args.results_dir, f"steps__{timed}.json"))
    if not timing:
        raise app.UsageError(f"{recipe.key}: no step time; run `python -m bench.recipes --time "
                             f"--recipes={timed}` alone first")
    cell_dir = os.path.join(args.out, name)
    plan = cell_lib.read_json(os.path.join(cell_dir, "plan.json"))
    if not plan:
        base = cell_lib.resolve_config(config_path(args.config), [*recipe.flags, *args.train_arg])
        steps = max(1, round(seconds / timing["step_seconds"]))
        from wmse_tf.training import config as config_lib, trainer

        images = trainer.count_images(config_lib.TrainConfig.from_dict(base))
        length = length_flags(steps, base["batch_size"], images, base["lr_drop_epochs"])
        run_dir = os.path.join(cell_dir, "run")
        plan = {"steps": steps, "step_seconds": timing["step_seconds"], "run_dir": run_dir,
                "command": cell_lib.train_command(config_path(args.config), [
                    *recipe.flags, *length, f"--seed={seed}", f"--model_dir={run_dir}", "--verbose=2",
                    *args.train_arg])}
        cell_lib.write_json(os.path.join(cell_dir, "plan.json"), plan)
    run_dir = plan["run_dir"]
    if not os.path.exists(os.path.join(run_dir, "encoder.keras")):
        code = cell_lib.run_training(plan["command"], cell_dir)
        if code:
            print(f"[recipes] {name}: training failed with exit code {code}", file=sys.stderr)
            return None
    segments = cell_lib.read_json(os.path.join(cell_dir, "segments.json")) or []
    flags_json = cell_lib.read_json(os.path.join(run_dir, "flags.json")) or {}
    record = {"cell": name, "recipe": recipe.key, "config": args.config, "lever": recipe.lever, "flags": list(recipe.flags),
              "seconds": seconds, "seed": seed, "probe_epochs": args.probe_epochs, "timing": timing,
              "mixed_precision": flags_json.get("mixed_precision"), "machine": cell_lib.machine(),
              "train": cell_lib.training_summary(run_dir, plan, segments), "curve": cell_lib.curve(run_dir, segments),
              "eval": cell_lib.evaluate_run(run_dir, None, args.probe_epochs, seed)}
    cell_lib.write_json(path, record)
    ev = record["eval"]
    print(f"[recipes] {name}: linear {ev['linear_top1']:.4f}, 5-NN cosine {ev['knn_cosine5']:.4f}, "
          f"Euclidean {ev['knn_euclidean5']:.4f}", flush=True)
    return record


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    unknown = [r for r in FLAGS.recipes if r not in RECIPE_BY_KEY]
    if unknown:
        raise app.UsageError(f"--recipes: unknown {unknown}; known: {', '.join(RECIPE_BY_KEY)}")
    recipes = [RECIPE_BY_KEY[k] for k in FLAGS.recipes]
    if FLAGS.report:
        from bench import methods_time, recipes_report

        print(recipes_report.report(FLAGS.results_dir, RECIPES, FLAGS.report_md, FLAGS.img_dir))
        print(methods_time.report(recipes_report.load(FLAGS.results_dir), FLAGS.methods_md, FLAGS.img_dir))
        return 0
    if FLAGS.time:
        print(machine_line(), flush=True)
        for recipe in recipes:
            if recipe.timed_as:
                print(f"[recipes] {recipe.key}: the step of {recipe.timed_as} (same computation)", flush=True)
                continue
            t = time_recipe(recipe, FLAGS.config, FLAGS.time_steps, FLAGS.out, FLAGS.results_dir, FLAGS.train_arg)
            print(f"[recipes] {recipe.key}: {t['step_seconds']:.3f} s a step ({t['mixed_precision']})", flush=True)
        return 0
    failed = []
    for seconds in (float(s) for s in FLAGS.seconds):
        for seed in (int(s) for s in FLAGS.seeds):
            for recipe in recipes:
                try:
                    if run_cell(recipe, seconds, seed, FLAGS) is None:
                        failed.append(cell_name(recipe, seconds, seed))
                except cell_lib.TrainingStopped as e:
                    print(f"[recipes] stopped ({e}); rerun the same command to continue", file=sys.stderr)
                    return e.code
    return 1 if failed else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
