"""bench.recipes: the steps a cell's seconds buy, every recipe a valid training config, the report."""

import os

import pytest
from absl import flags

from bench import recipes, recipes_report
from wmse_tf import train as train_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("steps", [50, 900, 1404, 5000])
def test_length_flags_train_the_steps_and_scale_the_schedule(steps):
    args = dict(a.lstrip("-").split("=") for a in recipes.length_flags(steps, 256, 60000, [1]))
    epochs, per_epoch = int(args["epochs"]), int(args["steps_per_epoch"])
    assert per_epoch <= 60000 // 256 and epochs >= recipes.BASE_EPOCHS
    assert abs(epochs * per_epoch - steps) <= epochs / 2 + 1  # rounding of the per-epoch steps only
    assert int(args["lr_drop_epochs"]) == max(1, round(epochs / recipes.BASE_EPOCHS))  # the last sixth
    assert args["time_budget"] == "0"


def test_every_recipe_is_a_valid_training_config():
    for recipe in recipes.RECIPES:
        values = flags.FlagValues()
        train_cli.define_flags(values)
        base = os.path.join(ROOT, "configs", "fashion_mnist_resnet18_w8.flags")
        values(["prog", f"--flagfile={base}", *recipe.flags])
        cfg = train_cli.config_from_flags(values)
        for flag in recipe.flags:
            name, value = flag.lstrip("-").split("=")
            have = getattr(cfg.augment, name, None) if hasattr(cfg.augment, name) else getattr(cfg, name)
            assert str(have) == value or float(have) == float(value), (recipe.key, name, have)


def _record(recipe, seconds, seed, linear, knn):
    return {"cell": f"{recipe}__t{seconds}s__seed{seed}", "recipe": recipe, "lever": "x", "seconds": seconds,
            "seed": seed, "probe_epochs": 500, "timing": {"step_seconds": 0.25}, "mixed_precision": "float32",
            "machine": "CPU, 2 cores", "train": {"step": 960, "batch_size": 256},
            "curve": [{"step": 480, "knn": knn - 0.02}, {"step": 960, "knn": knn}],
            "eval": {"linear_top1": linear, "knn_cosine5": knn, "knn_euclidean5": knn, "num_train": 60000}}


def test_report_gives_mean_and_spread_over_seeds(tmp_path):
    from wmse_tf import atomic_io

    results = tmp_path / "recipes"
    for rec in (_record("demo", 240, 0, 0.80, 0.81), _record("demo", 240, 1, 0.82, 0.83),
                _record("gray", 240, 0, 0.85, 0.84)):
        atomic_io.write_json(str(results / (rec["cell"] + ".json")), rec)
    md = tmp_path / "recipes.md"
    md.write_text("# Study\n\n<!-- recipes:begin -->\nold\n<!-- recipes:end -->\n\nafter\n")
    text = recipes_report.report(str(results), recipes.RECIPES, str(md), str(tmp_path / "img"))
    demo = next(line for line in text.splitlines() if line.startswith("| `demo`"))
    assert "81.00 ± 1.41" in demo and "| 2 |" in demo and "(4.1)" in demo  # mean ± sd; 960 steps x 256 = 4.1 passes
    assert "85.00" in next(line for line in text.splitlines() if line.startswith("| `gray`"))
    written = md.read_text()
    assert "old" not in written and written.endswith("after\n") and "3 cells" in written
    assert os.path.exists(tmp_path / "img" / "recipes_accuracy_vs_seconds.png")
