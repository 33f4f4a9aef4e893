"""Registry of self-supervised methods: name -> Keras model, sharing everything but the objective.

`build(method, encoder, emb, hidden, **method_kwargs)` returns a compiled-ready
`keras.Model` whose `train_step` consumes the same `(views, labels)` batches:

  wmse         SSLModel(encoder, projector, WMSE(w_size, w_iter, w_eps))
  contrastive  SSLModel(encoder, projector + BatchNorm, NTXent(tau, whiten=whiten_contrastive))
  byol         BYOLModel(encoder, projector, predictor, total_steps, byol_tau)
  normmse      SSLModel(encoder, projector, NormMSE()): normalized MSE between
               views with no whitening, negatives or target network; it
               collapses (the ablation behind the paper's claim)

The projector is always `encoders.projector(emb, hidden)` (the reference's
head: Dense(hidden), BN, ReLU, Dense(emb)). Every model exposes `.encoder`.
"""

import dataclasses

import keras

from wmse_tf import byol, contrastive, encoders, model as model_lib, objectives
from wmse_tf.contrastive import embedding_std


@dataclasses.dataclass(frozen=True)
class NormMSE:
    """Plain normalized MSE between all pairs of views (no whitening): collapses.

    Example:
      >>> loss, stats = wmse_tf.methods.NormMSE()(tf.random.normal([2, 64, 8]))
    """

    stat_names = ("emb_std",)

    def __call__(self, views, seed=None):
        del seed
        views = keras.ops.convert_to_tensor(views)
        objectives.check_views(views)
        return objectives.pairwise_normalized_mse(views), {"emb_std": embedding_std(views)}


objectives.OBJECTIVES.setdefault("normmse", NormMSE)


def _wmse(encoder, emb, hidden, w_size=128, w_iter=1, w_eps=0.0, whiten_across_replicas=False, seed=None):
    objective = objectives.WMSE(w_size=w_size, w_iter=w_iter, eps=w_eps)
    return model_lib.SSLModel(encoder, encoders.projector(emb, hidden), objective,
                              whiten_across_replicas=whiten_across_replicas, seed=seed, name="wmse")


def contrastive_projector(emb, hidden=1024, name="projector"):
    """The projector followed by BatchNorm (float32), as the reference's contrastive head."""
    return keras.Sequential([
        encoders.projector(emb, hidden, name="head"),
        keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype="float32", name="bn_last"),
    ], name=name)


def _contrastive(encoder, emb, hidden, tau=0.5, whiten_contrastive=False, w_eps=0.0,
                 whiten_across_replicas=False, seed=None):
    objective = contrastive.NTXent(tau=tau, whiten=whiten_contrastive, w_eps=w_eps)
    return model_lib.SSLModel(encoder, contrastive_projector(emb, hidden), objective,
                              whiten_across_replicas=whiten_across_replicas, seed=seed, name="contrastive")


def _byol(encoder, emb, hidden, total_steps=None, byol_tau=0.99, whiten_across_replicas=False, seed=None):
    return byol.BYOLModel(encoder, encoders.projector(emb, hidden), byol.predictor_head(emb, hidden),
                          total_steps=total_steps, tau_base=byol_tau,
                          whiten_across_replicas=whiten_across_replicas, seed=seed, name="byol")


def _normmse(encoder, emb, hidden, whiten_across_replicas=False, seed=None):
    return model_lib.SSLModel(encoder, encoders.projector(emb, hidden), NormMSE(),
                              whiten_across_replicas=whiten_across_replicas, seed=seed, name="normmse")


METHODS = {"wmse": _wmse, "contrastive": _contrastive, "byol": _byol, "normmse": _normmse}

# The keyword arguments each method accepts (besides encoder, emb, hidden).
METHOD_KWARGS = {
    "wmse": ("w_size", "w_iter", "w_eps", "whiten_across_replicas", "seed"),
    "contrastive": ("tau", "whiten_contrastive", "w_eps", "whiten_across_replicas", "seed"),
    "byol": ("total_steps", "byol_tau", "whiten_across_replicas", "seed"),
    "normmse": ("whiten_across_replicas", "seed"),
}


def method_kwargs(method, config):
    """Picks the keyword arguments of `method` out of a config (dataclass, dict or namespace).

    Lets a training script hold every flag in one config and pass only what
    the method uses: `build(method, encoder, emb, hidden, **method_kwargs(method, cfg))`.
    Keys missing from the config keep the method's defaults.
    """
    _check(method)
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    elif not isinstance(config, dict):
        config = vars(config)
    return {k: config[k] for k in METHOD_KWARGS[method] if k in config}


def _check(method):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")


def build(method, encoder, emb=64, hidden=1024, **kwargs):
    """Builds the Keras model of `method` around `encoder`.

    Args:
      method: "wmse", "contrastive", "byol" or "normmse".
      encoder: functional keras.Model, images -> features [B, F] (see
        `wmse_tf.encoders.build`); the same encoder for every method.
      emb: embedding (projector output) size.
      hidden: hidden size of the projector (and of BYOL's predictor).
      **kwargs: the method's own arguments (see METHOD_KWARGS):
        wmse: w_size, w_iter, w_eps; contrastive: tau, whiten_contrastive,
        w_eps; byol: total_steps (required), byol_tau; all:
        whiten_across_replicas, seed.

    Returns:
      An SSLModel (or BYOLModel), ready for `compile()` and `fit()`.

    Example:
      >>> model = wmse_tf.methods.build("byol", encoder, emb=64, total_steps=100_000)
    """
    _check(method)
    unknown = sorted(set(kwargs) - set(METHOD_KWARGS[method]))
    if unknown:
        raise ValueError(f"methods.build({method!r}): unexpected arguments {unknown}; "
                         f"{method} accepts {list(METHOD_KWARGS[method])}")
    if emb < 1 or hidden < 1:
        raise ValueError(f"methods.build: emb and hidden must be >= 1, got emb={emb}, hidden={hidden}")
    return METHODS[method](encoder, emb, hidden, **kwargs)
