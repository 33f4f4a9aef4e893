"""Training health (wmse_tf/evaluation/health.py, wmse_tf/training/health.py): the effective rank
against a float64 SVD on constructed spectra, the warning's text, a normalized-MSE run flagged and
stopped (and not resumed as it was), a healthy W-MSE run not flagged, the offline value equal to the
online one. Runs use configs/smoke.flags (16x16 synthetic images, ResNet-18 of width 4)."""

import json
import os

import numpy as np
import pytest

from wmse_tf import train
from wmse_tf.evaluation import health
from wmse_tf.training import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "smoke.flags")


def constructed(spectrum, n=200, seed=0):
    """A matrix [n, len(spectrum)] with exactly these singular values (random orthonormal U, V)."""
    rng = np.random.default_rng(seed)
    d = len(spectrum)
    u, _ = np.linalg.qr(rng.normal(size=(n, d)))
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (u * np.asarray(spectrum, np.float64)) @ v.T


def rankme_reference(s, eps=1e-7):
    p = np.asarray(s, np.float64) / np.sum(s) + eps
    return np.exp(-np.sum(p * np.log(p)))


@pytest.mark.parametrize("spectrum, expected", [
    (np.ones(32), 32.0),  # full rank, flat spectrum
    (np.r_[np.ones(5), np.zeros(27)], 5.0),  # rank 5
    (np.r_[3.0, np.zeros(31)], 1.0),  # collapsed: one direction
    (np.r_[np.ones(4) * 10, np.ones(12) * 1e-4, np.zeros(16)], None),  # rank 4 plus noise
    (2.0 ** -np.arange(32.0), None),  # geometric decay
])
def test_effective_rank_matches_a_float64_svd_on_constructed_spectra(spectrum, expected):
    x = constructed(spectrum)
    got = health.effective_rank(x.astype(np.float32))
    ref_svd = rankme_reference(np.linalg.svd(x, compute_uv=False))
    assert got == pytest.approx(ref_svd, rel=1e-5)
    assert got == pytest.approx(rankme_reference(np.sort(spectrum)[::-1]), rel=1e-5)
    if expected is not None:
        assert got == pytest.approx(expected, rel=1e-4)
    assert np.isnan(health.effective_rank(np.full((8, 4), np.nan)))  # a NaN batch is not "healthy"


def test_std_of_l2_normalized_is_zero_at_collapse_and_one_over_sqrt_d_when_spread():
    rng = np.random.default_rng(0)
    assert health.std_of_l2_normalized(np.tile(rng.normal(size=(1, 16)), (100, 1))) == pytest.approx(0, abs=1e-9)
    spread = health.stats(rng.normal(size=(20000, 64)), rng.normal(size=(20000, 16)))
    assert spread["emb_std_rel"] == pytest.approx(1.0, abs=0.02)
    assert spread["rank_feat"] == pytest.approx(64, rel=0.02) and spread["emb_dim"] == 16


def test_warning_names_what_was_seen_and_the_flags_to_change():
    from wmse_tf.training import health as training_health

    cfg = config_lib.TrainConfig(dataset="digits", emb=32, w_size=128, w_eps=1e-3, batch_size=256, warmup=100)
    t = training_health.Thresholds(after_step=100)
    row = {"step": 338, "rank_feat": 9.0, "rank_emb": 3.0, "emb_dim": 32, "emb_std_rel": 0.7,
           "whiten_cond": 2908.0}
    assert training_health.findings(dict(row, step=100), None, t) == []  # not during warmup
    seen = training_health.findings(row, 20.0, t)
    assert {kind for kind, _ in seen} == {"cond", "rank_emb", "rank_drop"}
    text = training_health.message(cfg, 338, seen, stopped=False)
    assert "\n" not in text and text.startswith("warning: training looks unhealthy at step 338")
    for part in ("2.91e+03", "--emb (now 32)", "--w_size", "--w_eps (now 0.001)", "--warmup (now 100)",
                 "--lr", "--on_unhealthy=stop"):
        assert part in text, part
    normmse = training_health.message(config_lib.TrainConfig(dataset="digits", method="normmse"), 9, seen, True)
    assert "--method=wmse" in normmse and "--force_resume" in normmse


def test_whitened_nt_xent_has_no_embedding_rank_bound_but_keeps_the_others():
    """Its healthy 4-epoch run kept the projector's output at 0.19-0.23 of emb (docs/training.md)."""
    from wmse_tf.training import health as training_health

    white = config_lib.TrainConfig(dataset="digits", method="contrastive", whiten_contrastive=True, emb=32,
                                   warmup=100)
    row = {"step": 234, "rank_feat": 12.9, "rank_emb": 6.1, "emb_dim": 32, "emb_std_rel": 0.82}
    assert training_health.findings(row, None, training_health.thresholds_for(white)) == []
    for cfg in (config_lib.TrainConfig(dataset="digits", method="contrastive", emb=32, warmup=100),
                config_lib.TrainConfig(dataset="digits", emb=32, w_size=128, warmup=100)):
        assert [k for k, _ in training_health.findings(row, None, training_health.thresholds_for(cfg))] == ["rank_emb"]
    collapsed = dict(row, emb_std_rel=0.05, rank_feat=4.0)
    kinds = {k for k, _ in training_health.findings(collapsed, 12.9, training_health.thresholds_for(white))}
    assert kinds == {"std", "rank_drop"}


def test_methods_declare_only_fields_of_thresholds():
    """A method's own health bounds (its registry entry) name fields of Thresholds, for its
    params' values; a misspelled bound fails here, not in the middle of a run."""
    import dataclasses
    from wmse_tf import methods
    from wmse_tf.training import health as training_health

    fields = {f.name for f in dataclasses.fields(training_health.Thresholds)} - {"after_step"}
    for name in methods.METHODS:
        for white in (False, True):
            cfg = config_lib.TrainConfig(dataset="digits", method=name, whiten_contrastive=white)
            assert set(methods.health_bounds(name, cfg)) <= fields, name
    assert methods.health_bounds("contrastive", config_lib.TrainConfig(
        dataset="digits", method="contrastive", whiten_contrastive=True)) == {"min_rank_emb": 0.0}
    assert methods.health_bounds("wmse", config_lib.TrainConfig(dataset="digits")) == {}


def smoke_config(model_dir, *args):
    train.FLAGS.unparse_flags()
    train.FLAGS(["train", f"--flagfile={SMOKE}", f"--model_dir={model_dir}", "--verbose=0", "--eval_every=0",
                 "--health_every=2", "--health_images=256", *args])
    try:
        return train.config_from_flags()
    finally:
        train.FLAGS.unparse_flags()


def _json(path):
    with open(path) as f:
        return json.load(f)


# Normalized MSE (no whitening) at a high learning rate collapses within a few steps of the smoke run.
NORMMSE = ("--method=normmse", "--lr=0.02", "--steps_per_epoch=8", "--epochs=3")


def stopped_normmse_run(run):
    """A normalized-MSE smoke run stopped as unhealthy in `run`."""
    from wmse_tf.training import health as training_health, trainer

    assert trainer.run(smoke_config(run, *NORMMSE, "--on_unhealthy=stop")) == training_health.EXIT_UNHEALTHY


def test_normalized_mse_is_flagged_stopped_and_not_resumed_as_it_was(tmp_path, capsys):
    import tensorflow as tf

    from wmse_tf.training import trainer

    run = tmp_path / "run"
    stopped_normmse_run(run)
    err = capsys.readouterr().err
    assert "warning: training looks unhealthy" in err and "--method=wmse" in err and "stopped" in err
    results = _json(run / "results.json")
    step = results["step"]
    assert results["stopped"] == "unhealthy" and results["health"]["first_unhealthy_step"] == step
    assert 4 < step < 24 and "collapse" in results["reason"]  # after the warmup (4 steps), before the end
    assert tf.train.latest_checkpoint(str(run)).endswith(f"ckpt-{step}")
    assert not os.path.exists(run / "encoder.keras")
    rows = [json.loads(line) for line in open(run / "health.jsonl")]
    assert rows[-1]["step"] == step and rows[-1]["unhealthy"] and not any(r["unhealthy"] for r in rows[:-1])
    with pytest.raises(config_lib.ConfigError, match="stopped as unhealthy.*--force_resume"):
        trainer.run(smoke_config(run, *NORMMSE, "--on_unhealthy=stop"))


@pytest.mark.slow
def test_a_stopped_run_resumes_with_a_changed_flag_or_force_resume(tmp_path):
    """Slow (two more trainings): the refusal itself is in the test above."""
    from wmse_tf.training import health as training_health, trainer

    forced, changed = tmp_path / "forced", tmp_path / "changed"
    stopped_normmse_run(forced)
    assert trainer.run(smoke_config(forced, *NORMMSE, "--on_unhealthy=stop", "--force_resume")) == 0  # warns only
    assert _json(forced / "results.json")["step"] == 24
    stopped_normmse_run(changed)  # a changed flag resumes, and --on_unhealthy=stop still applies
    assert trainer.run(smoke_config(changed, *NORMMSE, "--on_unhealthy=stop", "--lr=0.019")) == \
        training_health.EXIT_UNHEALTHY


def test_healthy_wmse_run_is_not_flagged_and_offline_rank_equals_online(tmp_path, capsys):
    from wmse_tf.evaluation import evaluator, plots
    from wmse_tf.training import trainer

    run = tmp_path / "run"
    assert trainer.run(smoke_config(run, "--on_unhealthy=stop")) == 0
    assert "unhealthy" not in capsys.readouterr().err
    results = _json(run / "results.json")
    final = results["health"]["final"]
    assert results["health"]["first_unhealthy_step"] is None and final["step"] == results["step"] == 12
    assert {"rank_feat", "rank_emb", "emb_std_l2"} <= set(results["final"])  # the last epoch's logs
    header = open(run / "log.csv").readline().strip().split(",")
    assert {"rank_feat", "rank_emb", "emb_std_l2"} <= set(header)
    offline = evaluator.evaluate(str(run), evaluator.EvalConfig(probe=None, knn=("cosine:5",), progress=False,
                                                                rank_images=results["health"]["images"]))
    assert offline["effective_rank"] == pytest.approx(final["rank_feat"], rel=1e-3)
    assert "effective rank (RankMe)" in evaluator.format_table(offline)
    png = plots.training_curves(str(run), str(tmp_path / "curves.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_mid_epoch_budget_replan_after_warmup_checks_at_most_every_fifth_of_the_budget(tmp_path):
    import keras

    from tests import helpers
    from wmse_tf.training import budget, health as training_health
    from wmse_tf.training.loop import LoopState

    encoder = helpers.tiny_encoder()
    model = type("M", (), {"encoder": encoder, "projector": keras.Sequential([keras.layers.Dense(4)])})()
    cfg = config_lib.TrainConfig(dataset="digits", emb=4, w_size=32, batch_size=64, warmup=2)
    state = LoopState(steps_per_epoch=10, epochs=3)
    fake = type("B", (), {"budget": 1e9, "plan": None})()
    mon = training_health.HealthMonitor(model, np.zeros((8, 16, 16, 3), np.float32), state, cfg, budget=fake)
    mon.on_train_begin()

    def replan_at(step):
        fake.plan = budget.Plan(1e9, 30, 30, 0.1, 0.0, step, 1.0, False)
        state.step = step
        mon.on_train_batch_end(0, {})

    replan_at(1)  # during the warmup: nothing to flag yet, no check
    replan_at(3)  # mid-epoch, first check of the run
    replan_at(10)  # an epoch end's re-plan: the epoch end checks it, not the re-plan
    fake.budget = 0.0  # no gap asked: every mid-epoch re-plan checks
    replan_at(14)
    fake.budget = 1e9  # a gap of a fifth of the budget: no check so soon after the last one
    replan_at(15)
    assert [r["step"] for r in mon.rows] == [3, 14]
