"""Builders of the methods "wmse" and "normmse": SSLModel with the W-MSE objective, or with
normalized MSE and no whitening (the collapse ablation). Registered in `wmse_tf.methods`."""

from wmse_tf.core import encoders, objectives
from wmse_tf.core.model import SSLModel


def build(encoder, emb, hidden, params, whiten_across_replicas=False, seed=None):
    """W-MSE: SSLModel(encoder, projector, WMSE(w_size, w_iter, w_eps)); see wmse_tf.methods."""
    objective = objectives.WMSE(w_size=params.w_size, w_iter=params.w_iter, eps=params.w_eps)
    return SSLModel(encoder, encoders.projector(emb, hidden), objective,
                    whiten_across_replicas=whiten_across_replicas, seed=seed, name="wmse")


def build_normmse(encoder, emb, hidden, params=None, whiten_across_replicas=False, seed=None):
    """Normalized MSE without whitening (the collapse ablation); see wmse_tf.methods."""
    del params  # no hyperparameters
    return SSLModel(encoder, encoders.projector(emb, hidden), objectives.NormMSE(),
                    whiten_across_replicas=whiten_across_replicas, seed=seed, name="normmse")
