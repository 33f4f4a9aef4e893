"""Where the demo's evaluation spends its time: each stage timed on Fashion-MNIST-sized inputs.

  python -m bench.evaluation_cost               # full splits: 60000 train, 10000 test
  python -m bench.evaluation_cost --train=10000 # quicker

Stages, as `wmse_tf.demo` runs them per feature set (the trained encoder, the same encoder with
random weights, raw pixels): frozen features of both splits (the demo's width-8 ResNet-18,
random weights, 28x28), the linear probe (the reference protocol, 500 epochs), 5-NN cosine and
Euclidean, and the t-SNE map of 2000 test points. Features are the encoder's (64-d) and raw
pixels (784-d); accuracy is not the point here, only seconds. Prints the machine line first.
"""

import argparse
import time

import numpy as np

from bench import decide_onednn, machine_line


def timed(label, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    print(f"  {label:<44} {time.perf_counter() - start:7.1f} s", flush=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--probe_epochs", type=int, default=500)
    parser.add_argument("--skip", default="", help="comma-separated stages to skip: features,probe,knn,tsne")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    decide_onednn("resnet18", "cifar", 8, 28)  # the demo's encoder, before TensorFlow's import
    print(machine_line(), flush=True)

    from wmse_tf.core import encoders
    from wmse_tf.evaluation import knn, linear_probe, plots

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, args.train + args.test)
    pixels = rng.uniform(size=(args.train + args.test, 784)).astype(np.float32)
    feats = rng.normal(size=(args.train + args.test, 64)).astype(np.float32)
    feats += 2 * np.eye(10, 64, dtype=np.float32)[labels]
    if "features" not in skip:
        encoder = encoders.build("resnet18", "cifar", 8, 28)
        images = rng.uniform(size=(args.train + args.test, 28, 28, 3)).astype(np.float32)
        timed(f"features, {len(images)} images (width-8 ResNet-18)", encoder.predict, images, batch_size=1000,
              verbose=0)
    splits = {"encoder (64-d)": feats, "raw pixels (784-d)": pixels}
    for name, x in splits.items():
        tr, te = (x[:args.train], labels[:args.train]), (x[args.train:], labels[args.train:])
        if "probe" not in skip:
            timed(f"linear probe {args.probe_epochs} epochs, {name}", linear_probe.linear_probe, *tr, *te, 10,
                  linear_probe.ProbeConfig(epochs=args.probe_epochs))
        if "knn" not in skip:
            for metric in ("cosine", "euclidean"):
                timed(f"5-NN {metric}, {name}", knn.knn_predict, tr[0], tr[1], te[0], k=5, metric=metric)
    if "tsne" not in skip:
        import os
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            test = (feats[args.train:], labels[args.train:])
            timed("t-SNE map, 2 x 2000 points", plots.feature_map, {"a": test, "b": test},
                  os.path.join(tmp, "map.png"), "tsne", None, 2000, 0)


if __name__ == "__main__":
    main()
