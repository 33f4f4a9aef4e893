"""Tests of wmse_tf.methods: the registry, every method learning, and the collapse ablation.

The collapse test is the paper's core claim in miniature: with the same
encoder, data and optimizer, a normalized MSE between views without whitening
(no negatives, no target network) collapses every embedding onto one
direction, while W-MSE keeps the embedding covariance full rank.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from wmse_tf import methods
from wmse_tf.core import model as model_lib, objectives
from wmse_tf.methods import byol, contrastive, wmse as methods_wmse
from wmse_tf.training import config

DIM, NUM_CLASSES = 32, 10


def mlp_encoder(dim=DIM, width=64):
    inputs = keras.Input((dim,), name="x")
    x = keras.layers.Dense(width)(inputs)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.ReLU()(x), name="mlp")


def mixture(n=2048, seed=0):
    """A Gaussian mixture of NUM_CLASSES clusters in DIM dims, float32, with labels."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=[NUM_CLASSES, DIM])
    labels = rng.integers(0, NUM_CLASSES, n)
    return (centers[labels] + 0.5 * rng.normal(size=[n, DIM])).astype(np.float32), labels


def two_view_dataset(x, batch_size=128, noise=1.0, seed=0):
    """Batches ((x + noise, x + noise), labels): additive Gaussian noise as the augmentation."""
    def augment(xb, yb):
        view = lambda: xb + noise * tf.random.normal(tf.shape(xb), seed=None)
        return (view(), view()), yb
    return (tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int64)))
            .shuffle(len(x), seed=seed).repeat().batch(batch_size, drop_remainder=True).map(augment))


def effective_rank(z, rel=1e-3):
    """Number of covariance eigenvalues above rel * the largest."""
    eig = np.linalg.eigvalsh(np.cov(np.asarray(z, np.float64).T))
    return int(np.sum(eig > rel * eig.max()))


def normalized_std(z):
    """Mean over dims of the batch std of L2-normalized embeddings (1/sqrt(D) if spread, 0 if collapsed)."""
    z = np.asarray(z, np.float64)
    return float(np.mean((z / np.linalg.norm(z, axis=1, keepdims=True)).std(axis=0)))


def knn_accuracy(z, labels, k=5):
    """Leave-one-out cosine k-NN accuracy."""
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = zn @ zn.T
    np.fill_diagonal(sim, -np.inf)
    neighbours = labels[np.argsort(-sim, axis=1)[:, :k]]
    votes = np.array([np.bincount(row, minlength=NUM_CLASSES).argmax() for row in neighbours])
    return float(np.mean(votes == labels))


def method_kwargs(method, total_steps):
    return {"wmse": dict(w_size=64), "byol": dict(total_steps=total_steps)}.get(method, {})


def train(method, steps, lr, emb=8, seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    x, labels = mixture(seed=seed)
    model = methods.build(method, mlp_encoder(), emb=emb, hidden=64, seed=seed,
                          **method_kwargs(method, steps), **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(lr))
    epochs = 5
    history = model.fit(two_view_dataset(x, seed=seed), steps_per_epoch=steps // epochs, epochs=epochs, verbose=0,
                        shuffle=False)
    z = model.projector(model.encoder(x[:512], training=False), training=False).numpy()
    return model, history.history, z, labels[:512]


# -- registry --------------------------------------------------------------------------------------

def test_build_every_method():
    expected = {"wmse": objectives.WMSE, "contrastive": contrastive.NTXent, "normmse": objectives.NormMSE}
    for method in methods.REGISTRY:
        model = methods.build(method, mlp_encoder(), emb=8, hidden=16, **method_kwargs(method, 10))
        assert isinstance(model, model_lib.SSLModel) and model.encoder.name == "mlp"
        if method == "byol":
            assert isinstance(model, byol.BYOLModel) and model.total_steps == 10 and model.tau_base == 0.99
        else:
            assert isinstance(model.objective, expected[method])
    model = methods.build("contrastive", mlp_encoder(), emb=8, hidden=16, tau=0.2, whiten_contrastive=True)
    assert model.objective == contrastive.NTXent(tau=0.2, whiten=True)
    assert isinstance(model.projector.layers[-1], keras.layers.BatchNormalization)  # BN after the head


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown method"):
        methods.build("simsiam", mlp_encoder())
    with pytest.raises(ValueError, match="unexpected arguments.*tau"):
        methods.build("wmse", mlp_encoder(), emb=8, tau=0.5)
    with pytest.raises(ValueError, match="total_steps"):
        methods.build("byol", mlp_encoder(), emb=8)


def test_method_kwargs_picks_from_a_config():
    @dataclasses.dataclass(frozen=True)
    class Config:
        method: str = "byol"
        w_size: int = 128
        tau: float = 0.5
        byol_tau: float = 0.99
        total_steps: int = 100

    assert methods.method_kwargs("byol", Config()) == {"byol_tau": 0.99, "total_steps": 100}
    assert methods.method_kwargs("wmse", {"w_size": 64, "tau": 0.1}) == {"w_size": 64}
    assert set(objectives.OBJECTIVES) == {"wmse", "normmse"}
    assert methods.params("contrastive", {"tau": 0.2, "w_size": 64}) == methods.ContrastiveParams(tau=0.2)


def test_registry_entries_name_config_fields_and_builders():
    """Each method: builder and objective importable, params = TrainConfig fields."""
    fields = {f.name for f in dataclasses.fields(config.TrainConfig)}
    for name, spec in methods.REGISTRY.items():
        assert callable(spec.load_builder()) and spec.objective, name
        assert set(spec.param_names) <= fields, (name, spec.param_names)
        assert dataclasses.is_dataclass(spec.params) and spec.params.__dataclass_params__.frozen
    assert [n for n, spec in methods.REGISTRY.items() if spec.whitens] == ["wmse"]
    assert methods.REGISTRY["wmse"].param_names == ("w_size", "w_iter", "w_eps")
    assert methods.REGISTRY["normmse"].param_names == ()
    assert isinstance(methods.objective("normmse"), objectives.NormMSE)
    assert isinstance(methods.objective("contrastive", tau=0.2), contrastive.NTXent)


@dataclasses.dataclass(frozen=True)
class TinyParams:
    w_size: int = 128
    tau: float = 0.5


TINY_LOSS = "wmse_tf.core.objectives:WMSE"


def build_tiny(encoder, emb, hidden, params, whiten_across_replicas=False, seed=None):
    """A test method: W-MSE with a given w_size, named "tiny" (params.tau unused)."""
    return methods_wmse.build(encoder, emb, hidden, methods.WMSEParams(w_size=params.w_size),
                              whiten_across_replicas, seed)


def test_adding_a_method_is_one_registry_line(monkeypatch):
    """A new entry is buildable, known to the config, and its `whitens` drives validation."""
    tiny = methods.Method("tests.test_methods:build_tiny", TINY_LOSS, TinyParams, whitens=True)
    monkeypatch.setitem(methods.REGISTRY, "tiny", tiny)
    cfg = config.TrainConfig(dataset="digits", method="tiny", emb=8, w_size=32, batch_size=64, tau=0.1).validate()
    model = methods.build("tiny", mlp_encoder(), emb=8, hidden=16, **methods.method_kwargs("tiny", cfg))
    assert isinstance(model.objective, objectives.WMSE) and model.objective.w_size == 32
    with pytest.raises(config.ConfigError, match="--w_size=8"):  # a whitening method: w_size must exceed emb
        dataclasses.replace(cfg, w_size=8).validate()
    monkeypatch.setitem(methods.REGISTRY, "tiny", dataclasses.replace(tiny, whitens=False))
    dataclasses.replace(cfg, w_size=8).validate()  # not whitening: no w_size check


# -- every method learns ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["wmse", "contrastive", "byol"])
def test_each_method_lowers_its_loss(method):
    _, history, _, _ = train(method, steps=100, lr=3e-3)
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and min(history["step_ok"]) == 1.0
    assert losses[-1] < losses[0], losses


def test_normmse_lowers_its_loss_by_collapsing():
    """Without whitening the loss falls because the embeddings collapse (the documented
    behaviour): the spread of the normalized projections falls with it."""
    keras.utils.set_random_seed(0)
    x, _ = mixture(seed=0)
    before = methods.build("normmse", mlp_encoder(), emb=8, hidden=64, seed=0)
    z0 = before.projector(before.encoder(x[:512], training=False), training=False).numpy()
    _, history, z, _ = train("normmse", steps=100, lr=3e-3)
    losses = history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert normalized_std(z) < 0.5 * normalized_std(z0), (normalized_std(z0), normalized_std(z))


# -- the paper's claim: no whitening -> collapse ---------------------------------------------------

def test_normalized_mse_collapses_while_wmse_keeps_full_rank():
    emb = 8
    _, _, z_mse, _ = train("normmse", steps=500, lr=3e-2, emb=emb)
    _, history, z_wmse, labels = train("wmse", steps=500, lr=3e-2, emb=emb)
    # Spread embeddings have normalized std ~ 1/sqrt(emb) = 0.35; collapsed ones ~ 0.
    assert normalized_std(z_mse) < 0.02, normalized_std(z_mse)
    assert effective_rank(z_mse) <= emb // 2, effective_rank(z_mse)
    assert normalized_std(z_wmse) > 0.25, normalized_std(z_wmse)
    assert effective_rank(z_wmse) == emb, effective_rank(z_wmse)
    assert history["whiten_ok"][-1] == 1.0
    assert knn_accuracy(z_wmse, labels) > 0.9


# -- configs: a fair comparison ----------------------------------------------------------------------

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
METHOD_FIELDS = {"method", "model_dir", "tau", "whiten_contrastive", "byol_tau", "w_size", "w_iter", "w_eps"}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10", "tiny_imagenet"])
def test_baseline_configs_share_everything_but_the_objective(dataset):
    """Each baseline flagfile resolves to its dataset's W-MSE 2 config except for method fields."""
    reference_path = os.path.join(CONFIG_DIR, f"{dataset}_wmse2.flags")
    if not os.path.exists(reference_path):
        pytest.skip(f"{reference_path} not written yet")
    reference = helpers.parse_flagfile(reference_path)
    for method, own in (("contrastive", {"tau": 0.5}), ("byol", {"byol_tau": 0.99})):
        cfg = helpers.parse_flagfile(os.path.join(CONFIG_DIR, f"{dataset}_{method}.flags"))
        assert cfg["method"] == method and cfg["model_dir"] == f"runs/{dataset}_{method}"
        assert {k: cfg[k] for k in own} == own
        shared = {k: v for k, v in reference.items() if k not in METHOD_FIELDS}
        assert {k: cfg[k] for k in shared} == shared
