"""The demo's baselines (wmse_tf.evaluation.baselines): computed once per machine, then read back."""

import os

import numpy as np

from tests import helpers
from wmse_tf import train
from wmse_tf.core import encoders
from wmse_tf.evaluation import baselines, evaluator as eval_lib
from wmse_tf.evaluation.linear_probe import ProbeConfig

SMOKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "smoke.flags")


def smoke_cfg(tmp_path, *args):
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", f"--flagfile={SMOKE}", f"--model_dir={tmp_path}", *args])
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def test_random_and_pixel_rows_are_computed_once_then_read_back(tmp_path):
    cfg = smoke_cfg(tmp_path / "run")
    encoder = encoders.build(cfg.arch, cfg.stem, cfg.width, cfg.image_size)
    encoder.set_weights([w + 0.01 for w in encoder.get_weights()])  # "trained": not the random init
    run_dir = helpers.write_run_dir(tmp_path / "run", encoder, cfg.dataset, **{
        k: v for k, v in cfg.to_dict().items() if k != "dataset"})
    econf = eval_lib.EvalConfig(probe=ProbeConfig(epochs=3), knn=("cosine:5", "euclidean:5"), limit_train=256,
                                limit_test=64, progress=False, rank_images=64)
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
