"""The registry of self-supervised methods: name -> builder, hyperparameters, traits.

Every method is registered ONCE, in `REGISTRY` below, as a `Method`: the
"module:function" of its builder (imported only when a model is built, so this
module and the training config need no TensorFlow), the frozen dataclass of the
`TrainConfig` fields it uses, and what the config must check (`whitens`).

  wmse         SSLModel(encoder, projector, WMSE(w_size, w_iter, w_eps))
  contrastive  SSLModel(encoder, projector + BatchNorm, NTXent(tau, whiten_contrastive, w_eps))
  byol         BYOLModel(encoder, projector, predictor, total_steps, byol_tau)
  normmse      SSLModel(encoder, projector, NormMSE()): normalized MSE between
               views with no whitening, negatives or target network; it
               collapses (the ablation behind the paper's claim)

Adding a method: one module with its builder
`build(encoder, emb, hidden, params, whiten_across_replicas=False, seed=None)`,
its params dataclass here, and one line in `REGISTRY`.

Example:
  >>> model = wmse_tf.methods.build("byol", encoder, emb=64, total_steps=100_000)

Modules: `wmse` (W-MSE and normalized MSE), `contrastive` (NT-Xent), `byol`.
May import: `core` (the builders); this registry itself imports nothing of wmse_tf and no
TensorFlow (the training config reads it).
"""

import dataclasses
import importlib
from typing import Callable, Optional, Tuple

# Arguments every builder takes besides encoder, emb, hidden and params.
COMMON_ARGS = ("whiten_across_replicas", "seed")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """A method without hyperparameters of its own."""


@dataclasses.dataclass(frozen=True)
class WMSEParams:
    """W-MSE: whitening sub-batch size, iterations (permutations) and shrinkage."""

    w_size: int = 128
    w_iter: int = 1
    w_eps: float = 0.0


@dataclasses.dataclass(frozen=True)
class ContrastiveParams:
    """NT-Xent: temperature; optional whitening of each view's batch (and its shrinkage)."""

    tau: float = 0.5
    whiten_contrastive: bool = False
    w_eps: float = 0.0


@dataclasses.dataclass(frozen=True)
class BYOLParams:
    """BYOL: tau_base, the starting EMA coefficient of the target network."""

    byol_tau: float = 0.99


@dataclasses.dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes:
      builder: "module:function" building the Keras model, imported when needed.
      params: frozen dataclass whose fields are the TrainConfig fields the method uses.
      whitens: whitens sub-batches of `w_size` rows, so the config checks w_size
        against emb and the (per-replica) batch.
      run_args: values of the run the builder also needs (byol: total_steps).
      objective: "module:class" of its loss, called as objective(views [V, N, D], seed).
      health: params -> {`training.health.Thresholds` field: value}, the method's own bounds of
        a healthy run where the measured defaults do not hold for it (docs/training.md).
      unhealthy_advice: what an unhealthy run of this method should try instead of the
        default hints (a smaller --emb, --w_size, --w_eps, warmup, lr), e.g. another method.
    """

    builder: str
    objective: str = ""
    params: type = NoParams
    whitens: bool = False
    run_args: Tuple[str, ...] = ()
    health: Optional[Callable] = None
    unhealthy_advice: str = ""

    @property
    def param_names(self):
        return tuple(f.name for f in dataclasses.fields(self.params))

    @property
    def kwargs(self):
        """Every keyword argument `build` accepts for this method."""
        return self.param_names + COMMON_ARGS + self.run_args

    def load_builder(self):
        return _load(self.builder)


def _load(ref):
    """The attribute named by "module:attribute", imported now."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def _contrastive_health(p):
    """NT-Xent on whitened embeddings: no bound on the embeddings' effective rank. Its loss sees the
    whitened batch, and its healthy 4-epoch run (81.5% linear, as plain NT-Xent) kept the
    projector's output at 0.19-0.23 of --emb, under the default bound of 0.25."""
    return {"min_rank_emb": 0.0} if p.whiten_contrastive else {}


REGISTRY = {
    "wmse": Method("wmse_tf.methods.wmse:build", "wmse_tf.core.objectives:WMSE", WMSEParams, whitens=True),
    "contrastive": Method("wmse_tf.methods.contrastive:build", "wmse_tf.methods.contrastive:NTXent",
                          ContrastiveParams, health=_contrastive_health),
    "byol": Method("wmse_tf.methods.byol:build", "wmse_tf.methods.byol:BYOLLoss", BYOLParams,
                   run_args=("total_steps",)),
    "normmse": Method("wmse_tf.methods.wmse:build_normmse", "wmse_tf.core.objectives:NormMSE",
                      unhealthy_advice="--method=wmse (normalized MSE without whitening collapses by design)"),
}
METHODS = tuple(REGISTRY)  # the names, in registry order


def get(method) -> Method:
    """The registered Method; ValueError naming the known ones."""
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[method]


def method_kwargs(method, config):
    """Picks the keyword arguments of `method` out of a config (dataclass, dict or namespace).

    Lets a training script hold every flag in one config and pass only what
    the method uses: `build(method, encoder, emb, hidden, **method_kwargs(method, cfg))`.
    Keys missing from the config keep the method's defaults.
    """
    spec = get(method)
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    elif not isinstance(config, dict):
        config = vars(config)
    return {k: config[k] for k in spec.kwargs if k in config}


def params(method, config):
    """The method's params dataclass filled from a config (e.g. a TrainConfig)."""
    spec = get(method)
    values = method_kwargs(method, config)
    return spec.params(**{k: values[k] for k in spec.param_names if k in values})


def health_bounds(method, config):
    """{Thresholds field: value}: the method's own bounds of a healthy run for `config`'s values
    (`Method.health`), {} where the measured defaults hold."""
    spec = get(method)
    return dict(spec.health(params(method, config))) if spec.health else {}


def build(method, encoder, emb=64, hidden=1024, **kwargs):
    """Builds the Keras model of `method` around `encoder`.

    Args:
      method: a name of REGISTRY ("wmse", "contrastive", "byol", "normmse").
      encoder: functional keras.Model, images -> features [B, F] (see
        `wmse_tf.core.encoders.build`); the same encoder for every method.
      emb: embedding (projector output) size.
      hidden: hidden size of the projector (and of BYOL's predictor).
      **kwargs: the method's own arguments (`REGISTRY[method].kwargs`):
        wmse: w_size, w_iter, w_eps; contrastive: tau, whiten_contrastive,
        w_eps; byol: total_steps (required), byol_tau; all:
        whiten_across_replicas, seed.

    Returns:
      An SSLModel (or BYOLModel), ready for `compile()` and `fit()`.
    """
    spec = get(method)
    unknown = sorted(set(kwargs) - set(spec.kwargs))
    if unknown:
        raise ValueError(f"methods.build({method!r}): unexpected arguments {unknown}; "
                         f"{method} accepts {list(spec.kwargs)}")
    if emb < 1 or hidden < 1:
        raise ValueError(f"methods.build: emb and hidden must be >= 1, got emb={emb}, hidden={hidden}")
    hyper = spec.params(**{k: kwargs.pop(k) for k in spec.param_names if k in kwargs})
    return spec.load_builder()(encoder, emb, hidden, hyper, **kwargs)


def objective(method, **kwargs):
    """The objective of a method, e.g. objective("wmse", w_size=128) or objective("contrastive", tau=0.5)."""
    return _load(get(method).objective)(**kwargs)
