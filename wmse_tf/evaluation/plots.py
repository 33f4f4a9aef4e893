"""PNG figures of a run: training curves and a 2-D map of encoder features coloured by class.

Matplotlib with the Agg backend (no display needed). Inputs are plain arrays and the
run's own logs (`log.jsonl` per epoch, TensorBoard `train/*` scalars per `log_every`
steps), so the figures can be redrawn from any finished run.

Example:
  >>> from wmse_tf import plots
  >>> plots.training_curves("runs/fashion_mnist", "runs/fashion_mnist/plots/curves.png")
  >>> plots.feature_map({"W-MSE": (feats, labels)}, "map.png", method="pca")
"""

import glob
import json
import os

import numpy as np

from wmse_tf import atomic_io

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
MAP_METHODS = ("pca", "tsne")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_epochs(model_dir):
    """Rows of `<model_dir>/log.jsonl` (one dict per epoch), [] if absent."""
    path = os.path.join(model_dir, "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_health(model_dir):
    """The run's health checks: rows of `<model_dir>/health.jsonl`, else the epoch rows holding them."""
    path = os.path.join(model_dir, "health.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    return [r for r in read_epochs(model_dir) if r.get("rank_feat") is not None]


def read_step_scalars(model_dir, tag="train/loss"):
    """(steps, values) of one TensorBoard scalar of `<model_dir>/tb`, sorted by step."""
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2  # TensorBoard's own Event proto (no tf.compat.v1)
    from tensorboard.util import tensor_util

    points = {}
    for path in sorted(glob.glob(os.path.join(model_dir, "tb", "**", "events.out.tfevents.*"),
                                 recursive=True)):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                for value in event.summary.value:
                    if value.tag == tag:
                        arr = tensor_util.make_ndarray(value.tensor) if value.HasField("tensor") else value.simple_value
                        points[int(event.step)] = float(np.asarray(arr).reshape(-1)[0])
        except tf.errors.DataLossError:  # a file still being written: keep what was read
            continue
    steps = sorted(points)
    return np.asarray(steps, np.int64), np.asarray([points[s] for s in steps], np.float64)


def training_curves(model_dir, path, baselines=None, dpi=80):
    """Loss (per logged step and per epoch), online k-NN accuracy per epoch and, when the run
    checked its health (`wmse_tf.training.health`), effective ranks and spread, as one PNG.

    Args:
      model_dir: a training run directory (log.jsonl, tb/).
      path: output PNG.
      baselines: optional {label: accuracy in [0, 1]} drawn as horizontal lines on the
        k-NN panel (e.g. the random-weights encoder).
      dpi: resolution (the figure is 9 x 3.2 inches, 13.5 x 3.2 with the health panel).

    Returns:
      path.
    """
    plt = _pyplot()
    rows = read_epochs(model_dir)
    steps, losses = read_step_scalars(model_dir)
    checks = read_health(model_dir)
    fig, axes = plt.subplots(1, 3 if checks else 2, figsize=(13.5 if checks else 9, 3.2))
    ax_loss, ax_knn = axes[:2]
    spe = rows[0]["step"] / rows[0]["epoch"] if rows and rows[0].get("epoch") else 1.0
    if len(steps):
        ax_loss.plot(steps / spe, losses, lw=0.8, alpha=0.6, label="every logged step")
    ep_loss = [(r["epoch"], r["loss"]) for r in rows if r.get("loss") is not None]
    if ep_loss:
        ax_loss.plot(*zip(*ep_loss), "o-", ms=3, label="epoch mean")
    ax_loss.set(xlabel="epoch", ylabel="W-MSE loss", title="training loss")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(alpha=0.3)
    knn = [(r["epoch"], 100 * r["knn_acc"]) for r in rows if r.get("knn_acc") is not None]
    if knn:
        ax_knn.plot(*zip(*knn), "o-", ms=3, color="C2", label="W-MSE encoder")
    for i, (label, acc) in enumerate((baselines or {}).items()):
        ax_knn.axhline(100 * acc, ls="--", lw=1, color=f"C{3 + i}", label=label)
    ax_knn.set(xlabel="epoch", ylabel="top-1 (%)", title="online 5-NN accuracy (test subset)")
    if knn or baselines:
        ax_knn.legend(fontsize=8)
    ax_knn.grid(alpha=0.3)
    if checks:
        _health_panel(axes[2], checks, spe)
    fig.tight_layout()
    _save(fig, path, dpi)
    plt.close(fig)
    return path


def _health_panel(ax, checks, spe):
    """Effective ranks as fractions of their dimension, spread of the embeddings; the condition number (log)."""
    ep = [r["step"] / spe for r in checks]
    series = (("rank_feat", "feat_dim", "eff. rank of features / dim"),
              ("rank_emb", "emb_dim", "eff. rank of embeddings / emb"),
              ("emb_std_rel", None, "std of L2-normalized emb. x sqrt(emb)"))
    for i, (key, dim, label) in enumerate(series):
        if all(key in r for r in checks):
            values = [r[key] / (r[dim] if dim else 1.0) for r in checks]
            ax.plot(ep, values, "o-", ms=2, color=f"C{i}", label=label)
    ax.set(xlabel="epoch", ylabel="fraction", ylim=(0, 1.05), title="training health (fixed un-augmented batch)")
    cond = [(e, r["whiten_cond"]) for e, r in zip(ep, checks) if r.get("whiten_cond")]
    if cond:
        twin = ax.twinx()
        twin.semilogy(*zip(*cond), "s--", ms=2, lw=0.8, color="C3", label="whitening cond. number")
        twin.axhline(1000, ls=":", lw=0.8, color="C3")  # the warning's bound (training.health.Thresholds)
        twin.set_ylim(1, max(1e4, 3 * max(c for _, c in cond)))
        twin.set_ylabel("condition number (dotted: 1000)", fontsize=8)
        twin.legend(fontsize=7, loc="upper right")
    flagged = [e for e, r in zip(ep, checks) if r.get("unhealthy")]
    if flagged:
        ax.axvline(flagged[0], color="red", lw=1, ls=":", label=f"first unhealthy check (epoch {flagged[0]:.2f})")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)


def embed_2d(features, method="pca", seed=0):
    """[N, 2] coordinates of features [N, F]: PCA, or t-SNE (sklearn) after PCA to 50 dims."""
    if method not in MAP_METHODS:
        raise ValueError(f"embed_2d: method must be one of {MAP_METHODS}, got {method!r}")
    from sklearn.decomposition import PCA

    x = np.asarray(features, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # as the k-NN sees them
    if method == "pca" or len(x) < 5:
        return PCA(2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE

    x = PCA(min(50, x.shape[1], len(x)), random_state=seed).fit_transform(x)
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)


def feature_map(panels, path, method="pca", class_names=None, max_points=2000, seed=0, dpi=80):
    """Scatter plots of 2-D embeddings of features coloured by class, one panel each.

    Args:
      panels: {title: (features [N, F], labels [N])}, e.g. W-MSE vs random weights.
      path: output PNG.
      method: "pca" or "tsne".
      class_names: legend names by label (default the label numbers).
      max_points: a random subset of this many points per panel (t-SNE is O(N^2)).
      seed: of the subset, PCA and t-SNE.
      dpi: resolution.

    Returns:
      path.
    """
    plt = _pyplot()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 1.6, 4.2), squeeze=False)
    handles = []
    for ax, (title, (feats, labels)) in zip(axes[0], panels.items()):
        labels = np.asarray(labels)
        idx = np.arange(len(labels))
        if len(idx) > max_points:
            idx = np.sort(rng.choice(len(idx), max_points, replace=False))
        xy = embed_2d(np.asarray(feats)[idx], method, seed)
        handles = []
        for c in np.unique(labels):
            m = labels[idx] == c
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            handles.append(ax.scatter(xy[m, 0], xy[m, 1], s=3, color=plt.cm.tab10(int(c) % 10), label=name))
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.legend(handles=handles, loc="center right", fontsize=8, markerscale=3, frameon=False)
    fig.suptitle(f"{'t-SNE' if method == 'tsne' else 'PCA'} of test-set features "
                 f"({min(max_points, len(labels))} images), coloured by class", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / fig.get_figwidth(), 1))
    _save(fig, path, dpi)
    plt.close(fig)
    return path


def _save(fig, path, dpi):
    with atomic_io.writing(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
