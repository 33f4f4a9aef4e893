"""The demo's baselines (wmse_tf/demo/baselines.py): computed once per machine, then read back;
the rows shipped with wmse_tf (wmse_tf/demo/baseline_rows.py) read when their key matches."""

import dataclasses
import os

import numpy as np
import pytest

from tests import helpers
from wmse_tf import train
from wmse_tf.core import encoders
from wmse_tf.demo import baseline_rows, baselines, command, report, runner
from wmse_tf.evaluation import evaluator as eval_lib
from wmse_tf.evaluation.linear_probe import ProbeConfig

SMOKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "smoke.flags")


def smoke_cfg(tmp_path, *args):
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", *args])
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def smoke_run(tmp_path):
    """(cfg, run dir of a "trained" smoke encoder, a quick EvalConfig)."""
    cfg = smoke_cfg(tmp_path / "run")
    encoder = encoders.build(cfg.arch, cfg.stem, cfg.width, cfg.image_size)
    encoder.set_weights([w + 0.01 for w in encoder.get_weights()])  # "trained": not the random init
    run_dir = helpers.write_run_dir(tmp_path / "run", encoder, cfg.dataset, **{
        k: v for k, v in cfg.to_dict().items() if k != "dataset"})
    econf = eval_lib.EvalConfig(probe=ProbeConfig(epochs=3), knn=("cosine:5", "euclidean:5"), limit_train=256,
                                limit_test=64, progress=False, rank_images=64)
    return cfg, run_dir, econf


def test_random_and_pixel_rows_are_computed_once_then_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(baseline_rows, "SHIPPED_DIR", str(tmp_path / "none shipped"))
    cfg, run_dir, econf = smoke_run(tmp_path)
    cache = str(tmp_path / "cache")
    _, before = baselines.evaluation_reserve(cfg, econf, cache_dir=cache)
    assert before["cached_rows"] == []
    rows, feats = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed, cache_dir=cache,
                                                    log=lambda _: None)
    assert not any("cached" in r for r in rows.values())
    # The plan made before training finds the rows the evaluation cached: the same keys.
    _, after = baselines.evaluation_reserve(cfg, econf, cache_dir=cache)
    assert after["cached_rows"] == [baselines.RANDOM, baselines.PIXELS]
    again, feats_again = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed,
                                                           cache_dir=cache, log=lambda _: None)
    assert list(again) == list(rows) == [baselines.TRAINED, baselines.RANDOM, baselines.PIXELS]
    for name in (baselines.RANDOM, baselines.PIXELS):
        assert again[name].pop("cached").startswith(cache)
        assert again[name] == rows[name]
    assert "cached" not in again[baselines.TRAINED]  # the run's own row is always computed
    top1 = lambda row: {spec: r["top1"] for spec, r in row["knn"].items()}  # noqa: E731
    assert top1(again[baselines.TRAINED]) == top1(rows[baselines.TRAINED])
    for name in (baselines.TRAINED, baselines.RANDOM):
        np.testing.assert_array_equal(feats_again[name][0], feats[name][0])
        np.testing.assert_array_equal(feats_again[name][1], feats[name][1])
    # The random row is what the random weights give: another seed is another row.
    _, other_seed = baselines.evaluation_reserve(smoke_cfg(tmp_path / "run", "--seed=7"), econf, cache_dir=cache)
    assert other_seed["cached_rows"] == [baselines.PIXELS]
    # ... and another precision is another row (its features are computed under that policy).
    _, other_policy = baselines.evaluation_reserve(smoke_cfg(tmp_path / "run", "--mixed_precision=mixed_bfloat16"),
                                                   econf, cache_dir=cache)
    assert other_policy["cached_rows"] == [baselines.PIXELS]
    # ... and another eval transform too, but not other training views: the features do not see them.
    for change, cached in (({"hue": 0.3, "solarize_p": 0.5}, [baselines.RANDOM, baselines.PIXELS]),
                           ({"mean": (0.4, 0.4, 0.4)}, [baselines.PIXELS])):
        changed = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, **change))
        assert baselines.evaluation_reserve(changed, econf, cache_dir=cache)[1]["cached_rows"] == cached, change


def test_shipped_rows_are_read_when_their_key_matches_and_marked(tmp_path, monkeypatch):
    """A first evaluation on a machine reads the shipped rows of its exact key (not copied to the
    machine's cache), computes the random encoder's test features for the map, and computes what
    another protocol or `reuse=False` asks for."""
    monkeypatch.setattr(baseline_rows, "SHIPPED_DIR", str(tmp_path / "shipped"))
    cfg, run_dir, econf = smoke_run(tmp_path)
    quiet = lambda _: None  # noqa: E731
    computed, feats = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed,
                                                        cache_dir=str(tmp_path / "elsewhere"), log=quiet)
    pixel_set = baselines.pixel_sets(cfg.dataset, None, econf.limit_train, econf.limit_test)
    parts = baselines.row_parts(eval_lib.open_model(run_dir, True, cfg.seed), baselines.data_digest(pixel_set))
    provenance = {"machine": "the test's", "command": "test"}
    for name, (kind, part) in parts.items():
        baseline_rows.write(kind, part, baselines.protocol(econf), computed[name], provenance)
    cache = str(tmp_path / "cache")  # this machine: nothing cached
    _, plan = baselines.evaluation_reserve(cfg, econf, cache_dir=cache)
    assert plan["shipped_rows"] == [baselines.RANDOM, baselines.PIXELS] and plan["cached_rows"] == []
    rows, feats_again = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed, cache_dir=cache,
                                                          log=quiet)
    for name in (baselines.RANDOM, baselines.PIXELS):
        assert rows[name].pop("shipped") == provenance
        assert rows[name] == computed[name]
    np.testing.assert_array_equal(feats_again[baselines.RANDOM][0], feats[baselines.RANDOM][0])
    assert not os.path.exists(cache)  # shipped rows are not copied into the machine's cache
    table = report.format_table(dict(rows, **{baselines.RANDOM: dict(rows[baselines.RANDOM], shipped=provenance)}),
                                "p")
    assert f"{baselines.RANDOM} (*)" in table and "shipped with wmse_tf, computed on the test's" in table
    # Another protocol is another key: computed (and then cached here).
    other = dataclasses.replace(econf, knn=("cosine:5",))
    _, plan = baselines.evaluation_reserve(cfg, other, cache_dir=cache)
    assert plan["shipped_rows"] == plan["cached_rows"] == []
    # --baselines=compute: nothing reused.
    fresh, _ = baselines.evaluate_with_baselines(run_dir, cfg.dataset, econf, cfg.seed, cache_dir=cache, log=quiet,
                                                 reuse=False)
    assert not any("shipped" in r or "cached" in r for r in fresh.values())


def test_the_shipped_rows_are_those_of_the_demo_default_recipe():
    """The rows shipped in wmse_tf/demo/shipped_rows/ have the key a default `make demo` looks up
    (a change of the recipe, the protocol, the random weights or TF makes this fail: recompute them
    with `python -m bench.baseline_rows`)."""
    from wmse_tf.data import datasets as data

    try:
        data.prepare("fashion_mnist", None, False)
    except data.DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (make setup installs it)")
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(command.with_default_flagfile(["demo"]))
        cfg = train.config_from_flags()
        econf = runner.eval_config(cfg, train.FLAGS.probe_epochs, 0, 0)
    finally:
        train.FLAGS.unparse_flags()
    parts, _ = baselines.recipe_row_parts(cfg, baselines.data_digest(baselines.pixel_sets(cfg.dataset, econf.data_dir)))
    for kind, part in parts.values():  # the keys the demo's plan and evaluation look up
        row = baseline_rows.read(kind, part, baselines.protocol(econf))
        assert row is not None, f"no shipped {kind} row for the demo's recipe: python -m bench.baseline_rows"
        assert row["num_train"] == 60000 and row["num_test"] == 10000
        assert {"machine", "onednn", "tensorflow", "command", "date"} <= set(row["shipped"])
        assert 0.5 < row["linear"]["top1"] < 0.95  # a real Fashion-MNIST score, not a placeholder


@pytest.mark.slow
def test_the_shipped_rows_are_what_this_machine_computes():
    """`python -m bench.baseline_rows --compare`: the default recipe's baselines computed here
    (a few minutes) within 0.1 point of the shipped rows."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "bench.baseline_rows", "--compare"], env=helpers.python_env(),
                            cwd=os.path.dirname(os.path.dirname(SMOKE)), capture_output=True, text=True,
                            timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "diff" in result.stdout
