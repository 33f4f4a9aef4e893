"""Float64 numpy references of the math, shared by the tests."""

import numpy as np


def numpy_whiten(x, eps=0.0):
    """Centre, covariance / (n-1), shrink, Cholesky, W = L^-1, return Xc W^T (float64)."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(axis=0)
    cov = xc.T @ xc / (x.shape[0] - 1)
    cov = (1 - eps) * cov + eps * np.eye(x.shape[1])
    w = np.linalg.inv(np.linalg.cholesky(cov))
    return xc @ w.T


def numpy_normalized_mse(a, b):
    """Mean over rows of ||a/|a| - b/|b|||^2, in float64 whatever the input dtype."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.mean(np.sum((a - b) ** 2, axis=-1))


def covariance(z):
    """Sample covariance over the row axis (-2), in float64."""
    z = np.asarray(z, np.float64)
    zc = z - z.mean(axis=-2, keepdims=True)
    return np.einsum("...nd,...ne->...de", zc, zc) / (z.shape[-2] - 1)
