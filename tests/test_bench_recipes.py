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


def test_a_recipe_timed_as_another_changes_only_values_of_its_flags():
    """A recipe takes another's step time only if it adds value-only flags (lr, schedule, crop scale,
    jitter strength, solarize for invert) to that recipe's flags."""
    by_key = recipes.RECIPE_BY_KEY
    value_only = {"lr", "lr_schedule", "crop_scale_min", "brightness", "contrast", "invert_p", "solarize_p"}
    for recipe in recipes.RECIPES:
        if not recipe.timed_as:
            continue
        timed = by_key[recipe.timed_as]
        assert not timed.timed_as, recipe.key  # timed itself
        ours, theirs = dict(f.split("=") for f in recipe.flags), dict(f.split("=") for f in timed.flags)
        changed = {k.lstrip("-") for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
        assert changed and changed <= value_only, (recipe.key, changed)


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


def test_methods_time_table_and_claims_at_each_budget(tmp_path):
    from bench import methods_time

    recs = [dict(_record(key, 300, seed, linear + 0.01 * seed, linear - 0.02), probe_epochs=500)
            for key, linear in (("p32_erase", 0.86), ("m_byol", 0.80), ("m_wmse4", 0.861)) for seed in (0, 1)]
    recs.append(dict(_record("m_contrastive", 300, 0, 0.87, 0.85), probe_epochs=100))  # pruning probe: left out
    md = tmp_path / "results.md"
    md.write_text("# Results\n\n<!-- methods-time:begin -->\n<!-- methods-time:end -->\n")
    text = methods_time.report(recs, str(md), str(tmp_path / "img"))
    rows = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert "86.50 ± 0.71" in rows["| W-MSE 2"] and "NT-Xent" not in text.split("| claim")[0]
    byol = next(line for line in text.splitlines() if line.startswith("| W-MSE 2 >= BYOL"))
    assert "+6.00 | holds" in byol  # 86.5 against 80.5, spreads 0.71 each
    wmse4 = next(line for line in text.splitlines() if line.startswith("| W-MSE 4 >= W-MSE 2"))
    assert "+0.10 | inconclusive" in wmse4
    assert "NT-Xent" not in text.split("| claim")[1]  # no claim without both cells
    assert os.path.exists(tmp_path / "img" / "methods_time_to_accuracy.png")
