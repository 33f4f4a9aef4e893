"""k-nearest-neighbour classification of frozen features, in TF ops, batched over queries.

The reference's online monitor (htdt/self-supervised eval/knn.py): k = 5 neighbours by
Euclidean distance, majority vote (ties: the smallest label, as torch's
`unique(return_counts=True)` then `argmax`). The training monitor
(`callbacks.KnnMonitor`, `--knn_metric`) uses cosine (L2-normalized features) by
default, or Euclidean distance on raw features as the reference.

Example:
  >>> pred = knn_predict(train_x, train_y, test_x, k=5)
  >>> acc = knn_accuracy(train_x, train_y, test_x, test_y, k=5, metric="cosine")
"""

import tensorflow as tf

METRICS = ("euclidean", "cosine")


def knn_predict(train_feats, train_labels, test_feats, k=5, metric="euclidean", weighted=False,
                temperature=0.07, num_classes=None, batch_size=256):
    """Predicted labels [Q] of the queries `test_feats` [Q, F] from the memory bank.

    Args:
      train_feats: [N, F] memory bank; train_labels: [N] int labels (>= 0).
      test_feats: [Q, F] queries.
      k: neighbours (clipped to N).
      metric: "euclidean" (raw distances) or "cosine" (of the raw features: their dot product over
        both norms, as between L2-normalized features).
      weighted: votes weighted by exp(similarity / temperature), similarity = cosine
        or minus the Euclidean distance (InstDisc-style); else one vote each.
      temperature: of the weighted votes.
      num_classes: number of classes; default max label + 1.
      batch_size: queries per distance matrix ([batch_size, N] floats in memory).

    Returns:
      int64 tensor [Q].
    """
    return knn_predict_many(train_feats, train_labels, test_feats, [(metric, k, weighted)], temperature,
                            num_classes, batch_size)[0]


def knn_predict_many(train_feats, train_labels, test_feats, specs, temperature=0.07, num_classes=None,
                     batch_size=256):
    """`knn_predict` for several (metric, k, weighted) specs at once: [int64 [Q] per spec].

    Every spec ranks the same query-bank dot products (cosine: over both norms; Euclidean:
    |q|^2 - 2 q.b + |b|^2), so they cost one matrix product per query chunk, not one each.
    """
    for metric, k, _ in specs:
        if metric not in METRICS:
            raise ValueError(f"knn_predict: metric must be one of {METRICS}, got {metric!r}")
        if k < 1:
            raise ValueError(f"knn_predict: k must be >= 1, got {k}")
    bank = tf.convert_to_tensor(train_feats, tf.float32)
    queries = tf.convert_to_tensor(test_feats, tf.float32)
    labels = tf.cast(tf.convert_to_tensor(train_labels), tf.int32)
    if bank.shape[0] == 0:
        raise ValueError("knn_predict: empty memory bank")
    classes = int(num_classes or int(tf.reduce_max(labels)) + 1)
    specs = tuple((m, min(int(k), int(bank.shape[0])), bool(w)) for m, k, w in specs)
    bank_sq = tf.reduce_sum(tf.square(bank), axis=-1)
    preds = [[] for _ in specs]
    for start in range(0, int(queries.shape[0]), batch_size):
        chunk = _predict_chunk(bank, bank_sq, labels, queries[start:start + batch_size], specs,
                               float(temperature), classes)
        for out, pred in zip(preds, chunk):
            out.append(pred)
    return [tf.concat(p, axis=0) if p else tf.zeros([0], tf.int64) for p in preds]


@tf.function(reduce_retracing=True, autograph=False)
def _predict_chunk(bank, bank_sq, labels, q, specs, temperature, classes):
    dots = tf.linalg.matmul(q, bank, transpose_b=True)  # [b, N]
    q_sq = tf.reduce_sum(tf.square(q), axis=-1, keepdims=True)
    out = []
    for metric, k, weighted in specs:
        if metric == "cosine":  # as tf.math.l2_normalize: x / sqrt(max(|x|^2, 1e-12))
            sim = dots * tf.math.rsqrt(tf.maximum(q_sq, 1e-12)) * tf.math.rsqrt(tf.maximum(bank_sq, 1e-12))[None, :]
        else:
            sim = -tf.sqrt(tf.maximum(q_sq - 2.0 * dots + bank_sq[None, :], 0.0))
        top_sim, idx = tf.math.top_k(sim, k=k)
        votes = tf.one_hot(tf.gather(labels, idx), classes)  # [b, k, C]
        if weighted:
            votes *= tf.exp(top_sim / temperature)[..., None]
        out.append(tf.argmax(tf.reduce_sum(votes, axis=1), axis=-1, output_type=tf.int64))
    return out


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, **kwargs):
    """Top-1 accuracy of `knn_predict` (same keyword arguments) as a Python float."""
    pred = knn_predict(train_feats, train_labels, test_feats, **kwargs)
    truth = tf.cast(tf.convert_to_tensor(test_labels), tf.int64)
    return float(tf.reduce_mean(tf.cast(tf.equal(pred, truth), tf.float32)))
