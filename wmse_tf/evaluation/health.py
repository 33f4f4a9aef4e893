"""Health of a representation from one batch of it: effective rank (RankMe) and embedding spread.

The one computation behind the training run's health checks (`wmse_tf.training.health`, online,
on a fixed batch of un-augmented training images) and the evaluator's `effective_rank` column
(`wmse_tf.evaluation.evaluator`, offline, on the frozen features), so the two cannot drift apart.

- `effective_rank(x)`: RankMe (Garrido et al., ICML 2023, arXiv 2210.02885), the exponential of
  the entropy of the normalized singular values of the (uncentered, as in the paper) matrix
  x [N, D]: p_k = s_k / sum(s) + eps, rank = exp(-sum p_k log p_k). D equal singular values give
  D, a rank-k matrix with equal ones k, a collapsed (rank-1) matrix 1.
- `std_of_l2_normalized(z)`: the per-dimension standard deviation over the batch of the
  L2-normalized rows, averaged over dimensions (lightly's `std_of_l2_normalized`): 0 when every
  row points the same way, about 1/sqrt(D) for directions spread over the sphere.

NumPy in float64: a few thousand rows by at most a few thousand columns costs milliseconds.

Example:
  >>> health.stats(features, embeddings)["rank_emb"]
"""

import numpy as np

EPS = 1e-7  # RankMe's epsilon


def singular_values(x):
    """Singular values (descending, float64) of a matrix [N, D]."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or not x.size:
        raise ValueError(f"singular_values: need a non-empty [N, D] matrix, got shape {x.shape}")
    return np.linalg.svd(x, compute_uv=False)


def rank_of_spectrum(s, eps=EPS):
    """RankMe of given singular values: exp of the entropy of s / sum(s) (+ eps)."""
    s = np.asarray(s, np.float64)
    total = s.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan") if not np.isfinite(total) else 1.0
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def effective_rank(x, eps=EPS):
    """RankMe effective rank of features x [N, D] (between 1 and min(N, D); NaN if x is not finite)."""
    x = np.asarray(x, np.float64)
    if not np.all(np.isfinite(x)):
        return float("nan")
    return rank_of_spectrum(singular_values(x), eps)


def std_of_l2_normalized(z):
    """Mean over dimensions of the batch std of the L2-normalized rows of z [N, D]."""
    z = np.asarray(z, np.float64)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.std(z, axis=0)))


def stats(features, embeddings=None):
    """The health values of one batch: {rank_feat, feat_dim[, rank_emb, emb_dim, emb_std_l2, emb_std_rel]}.

    `emb_std_l2` is `std_of_l2_normalized`; `emb_std_rel` is `emb_std_l2 * sqrt(emb_dim)`: about 1
    for embeddings spread over the sphere, 0 at collapse, comparable across embedding sizes.
    """
    features = np.asarray(features)
    out = {"rank_feat": effective_rank(features), "feat_dim": int(features.shape[1])}
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        dim = int(embeddings.shape[1])
        std = std_of_l2_normalized(embeddings)
        out.update(rank_emb=effective_rank(embeddings), emb_dim=dim, emb_std_l2=std,
                   emb_std_rel=std * float(np.sqrt(dim)))
    return out
