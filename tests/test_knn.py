"""Tests of wmse_tf/evaluation/knn.py against a brute-force float64 numpy k-NN: Euclidean and cosine
neighbours, majority and weighted votes, ties (votes: the smallest label; equal distances:
the earlier bank row), batching of the queries, and the argument checks."""

import numpy as np
import pytest

from wmse_tf.evaluation import knn


def numpy_knn(bank, labels, queries, k, metric="euclidean", weighted=False, temperature=0.07, classes=None):
    """Brute force in float64: all distances, a stable sort (equal distances: the earlier bank
    row first), then votes; np.argmax takes the first (smallest) label of a tied vote."""
    bank, queries = np.asarray(bank, np.float64), np.asarray(queries, np.float64)
    if metric == "cosine":
        bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        sim = queries @ bank.T
    else:
        sim = -np.linalg.norm(queries[:, None] - bank[None], axis=-1)
    k = min(k, len(bank))
    classes = classes or int(labels.max()) + 1
    out = []
    for row in sim:
        idx = np.argsort(-row, kind="stable")[:k]
        weights = np.exp(row[idx] / temperature) if weighted else np.ones(k)
        out.append(np.argmax(np.bincount(labels[idx], weights, minlength=classes)))
    return np.array(out)


def data(seed=0, n=300, q=70, dims=6, classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dims)), rng.integers(0, classes, n), rng.normal(size=(q, dims))


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 4, 5, 20])
def test_matches_brute_force(metric, k):
    bank, labels, queries = data(k)
    pred = knn.knn_predict(bank, labels, queries, k=k, metric=metric, batch_size=32).numpy()
    np.testing.assert_array_equal(pred, numpy_knn(bank, labels, queries, k, metric))
    assert pred.dtype == np.int64 and pred.shape == (70,)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_weighted_votes_match_brute_force(metric):
    bank, labels, queries = data(1, dims=3)
    for temperature in (0.05, 0.5):
        pred = knn.knn_predict(bank, labels, queries, k=15, metric=metric, weighted=True, temperature=temperature)
        np.testing.assert_array_equal(pred.numpy(), numpy_knn(bank, labels, queries, 15, metric, True, temperature))
    # one very close neighbour of class 3 outvotes four distant ones only when votes are weighted
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([3, 1, 1, 1, 1])
    q = np.array([[1.0, 0.05]])
    assert int(knn.knn_predict(bank, labels, q, k=5, metric=metric)[0]) == 1
    assert int(knn.knn_predict(bank, labels, q, k=5, metric=metric, weighted=True, temperature=0.05)[0]) == 3


def test_euclidean_and_cosine_differ_where_they_should():
    """Cosine ignores the norm: a far point on the query's ray is its nearest cosine neighbour."""
    bank = np.array([[10.0, 0.0], [0.9, 0.5]])
    labels = np.array([0, 1])
    q = np.array([[1.0, 0.0]])
    assert int(knn.knn_predict(bank, labels, q, k=1)[0]) == 1
    assert int(knn.knn_predict(bank, labels, q, k=1, metric="cosine")[0]) == 0
    scaled = bank * np.array([[0.01], [7.0]])  # positive rescaling of bank rows: same cosine neighbours
    bank2, labels2, queries2 = data(2)
    np.testing.assert_array_equal(
        knn.knn_predict(bank2 * np.linspace(0.1, 10, 300)[:, None], labels2, queries2 * 3, metric="cosine"),
        knn.knn_predict(bank2, labels2, queries2, metric="cosine"))
    assert int(knn.knn_predict(scaled, labels, q, k=1, metric="cosine")[0]) == 0


def test_vote_ties_go_to_the_smallest_label():
    # query at 0; four neighbours at distances 1, 2, 3, 4 with labels 2, 1, 1, 2: two votes each
    bank = np.array([[1.0], [2.0], [3.0], [4.0], [50.0]])
    q = np.zeros((1, 1))
    assert int(knn.knn_predict(bank, np.array([2, 1, 1, 2, 0]), q, k=4)[0]) == 1
    assert int(knn.knn_predict(bank, np.array([1, 2, 2, 1, 0]), q, k=4)[0]) == 1
    assert int(knn.knn_predict(bank, np.array([5, 3, 5, 3, 0]), q, k=4)[0]) == 3
    # k = 5 adds a vote for label 0 (one vote) : still the 2-2 tie between 1 and 2 decides
    assert int(knn.knn_predict(bank, np.array([2, 1, 1, 2, 0]), q, k=5)[0]) == 1


def test_equal_distances_take_the_earlier_bank_rows():
    # duplicated points with different labels: exactly equal distances
    bank = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [5.0, 5.0]])
    q = np.array([[0.0, 0.0], [0.0, 2.0]])
    for labels in (np.array([2, 0, 1, 1]), np.array([1, 2, 0, 0])):
        for k in (1, 2):
            pred = knn.knn_predict(bank, labels, q, k=k).numpy()
            np.testing.assert_array_equal(pred, numpy_knn(bank, labels, q, k))
            assert pred[0] == (labels[0] if k == 1 else min(labels[:2]))


def test_batching_k_clipping_and_classes():
    bank, labels, queries = data(3)
    full = knn.knn_predict(bank, labels, queries, k=5, batch_size=1000).numpy()
    for batch_size in (1, 7, 69, 70):
        np.testing.assert_array_equal(knn.knn_predict(bank, labels, queries, k=5, batch_size=batch_size), full)
    small = bank[:3]
    np.testing.assert_array_equal(knn.knn_predict(small, labels[:3], queries, k=50),
                                  numpy_knn(small, labels[:3], queries, 3))
    np.testing.assert_array_equal(knn.knn_predict(bank, labels, queries, k=5, num_classes=10), full)
    assert knn.knn_predict(bank, labels, queries[:0]).shape == (0,)


def test_accuracy_is_the_mean_of_correct_predictions():
    bank, labels, queries = data(4)
    truth = np.random.default_rng(5).integers(0, 4, len(queries))
    pred = numpy_knn(bank, labels, queries, 5, "cosine")
    assert knn.knn_accuracy(bank, labels, queries, truth, k=5, metric="cosine") == pytest.approx(np.mean(pred == truth))
    assert knn.knn_accuracy(bank, labels, bank[:40], labels[:40], k=1) == 1.0  # each point is its own neighbour


def test_bad_arguments_raise():
    bank, labels, queries = data(0)
    with pytest.raises(ValueError, match="metric must be one of"):
        knn.knn_predict(bank, labels, queries, metric="manhattan")
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn.knn_predict(bank, labels, queries, k=0)
    with pytest.raises(ValueError, match="empty memory bank"):
        knn.knn_predict(bank[:0], labels[:0], queries)


def test_many_specs_share_one_product_and_match_each_alone():
    bank, labels, queries = data(3, dims=5)
    specs = [("cosine", 5, False), ("euclidean", 5, False), ("euclidean", 20, True), ("cosine", 1, False)]
    many = knn.knn_predict_many(bank, labels, queries, specs, temperature=0.5, batch_size=16)
    for (metric, k, weighted), pred in zip(specs, many):
        np.testing.assert_array_equal(pred.numpy(), numpy_knn(bank, labels, queries, k, metric, weighted, 0.5))
