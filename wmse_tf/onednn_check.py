"""Does TensorFlow's oneDNN compute these convolutions right on this CPU? (run in a subprocess)

  TF_ENABLE_ONEDNN_OPTS=1 python -m wmse_tf.onednn_check '[[1, 2, 4, 8, 16], [3, 1, 8, 8, 28]]'

Each convolution is `[kernel, stride, in_channels, out_channels, size]` (square images, "same"
padding, no bias, as `wmse_tf.core.encoders` builds them). For each, on random data, the forward
output and the gradients to the input and to the filter are computed in float32 inside a
`tf.function` (as training runs them: oneDNN's kernels when its custom ops are on) and in float64
(Eigen's kernels: oneDNN has no float64 convolution), `repeats` times; a result whose largest
error exceeds `TOLERANCE` of its largest entry is wrong. Prints one JSON object:
`{"onednn_on": bool, "tf": version, "results": {key: null | [what, rel_error]}}`.

`wmse_tf.onednn` runs this with oneDNN on and caches the answer; it imports nothing of
wmse_tf but this module's own name, so it is safe before any decision is made.
"""

import json
import sys

# float32 against float64: a right kernel is ~1e-6 off (relative to the largest entry); oneDNN's
# wrong filter gradients were 0.3-0.98 off (docs/training.md).
TOLERANCE = 1e-3
BATCH = 8  # images per check; 2 above 32 px (the float64 reference of a 224-px layer is slow)


def key(conv):
    """`k1s2c4-8@16` for [kernel 1, stride 2, 4 -> 8 channels, 16x16 images]."""
    k, s, cin, cout, size = conv
    return f"k{k}s{s}c{cin}-{cout}@{size}"


def check(convs, repeats=3, batch=BATCH, seed=0):
    """{key(conv): None if right, else (what, relative error)} for each conv, with TF as imported."""
    import numpy as np
    import tensorflow as tf

    @tf.function(reduce_retracing=True, autograph=False)
    def run32(x, w, dy, stride):
        return _outputs(tf, x, w, dy, stride)

    rng = np.random.default_rng(seed)
    results = {}
    for conv in convs:
        k, s, cin, cout, size = (int(v) for v in conv)
        out, n = -(-size // s), batch if size <= 32 else 2
        worst = None
        for _ in range(repeats):
            x = rng.normal(size=(n, size, size, cin))
            w = rng.normal(size=(k, k, cin, cout))
            dy = rng.normal(size=(n, out, out, cout))
            want = _outputs(tf, *(tf.constant(a) for a in (x, w, dy)), s)
            got = run32(*(tf.constant(a, tf.float32) for a in (x, w, dy)), s)
            for what, g, r in zip(("forward", "input gradient", "filter gradient"), got, want):
                r = r.numpy()
                err = float(np.abs(g.numpy() - r).max() / max(np.abs(r).max(), 1e-30))
                if not err <= TOLERANCE and (worst is None or err > worst[1]):
                    worst = (what, err)
        results[key(conv)] = worst
    return results


def _outputs(tf, x, w, dy, stride):
    """(forward, gradient to x, gradient to w) of a "same" convolution, output gradient dy."""
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        y = tf.nn.conv2d(x, w, stride, "SAME")
    dx, dw = tape.gradient(y, [x, w], output_gradients=dy)
    return y, dx, dw


def main(argv):
    convs = json.loads(argv[1])
    repeats = int(argv[2]) if len(argv) > 2 else 3
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port as port  # the one query TF has for it

    results = check(convs, repeats)
    print(json.dumps({"onednn_on": bool(port.IsMklEnabled()), "tf": tf.__version__,
                      "results": {k: list(v) if v else None for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
