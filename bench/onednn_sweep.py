"""Which convolutions does TensorFlow's oneDNN compute wrong on this CPU? A sweep against float64.

  ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=1 python -m bench.onednn_sweep   # oneDNN's AVX2 code
  TF_ENABLE_ONEDNN_OPTS=0 python -m bench.onednn_sweep                           # Eigen (control)

The evidence behind `wmse_tf.onednn`'s check (docs/training.md#onednn): every configuration of the
grid below (kernel, stride, in/out channels, image size, batch) is run by
`wmse_tf.onednn_check.check` (forward, input and filter gradients, float32 in a tf.function
against float64), `--repeats` times with fresh data. Prints the machine line, then one line per
wrong configuration and a summary per (kernel, stride, in_channels).
"""

import argparse
import collections
import itertools
import time

from bench import machine_line

CHANNELS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 32, 64)


def grid(quick=False):
    """(kernel, stride, cin, cout, size) configurations: 1x1 stride 2 densely, the rest as controls."""
    sizes = (8, 16) if quick else (4, 7, 8, 14, 16, 28, 32)
    couts = (8, 16) if quick else (8, 16, 64, 128)
    dense = [(1, 2, c, o, s) for c, o, s in itertools.product(CHANNELS, couts, sizes)]
    controls = [(k, st, c, 16, s) for (k, st), c, s in
                itertools.product(((1, 1), (3, 1), (3, 2)), CHANNELS, (8, 16))]
    return dense + controls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", default="8,32", help="comma-separated batch sizes")
    parser.add_argument("--quick", action="store_true", help="a small grid (minutes less)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    from wmse_tf import onednn_check

    start, wrong, total = time.time(), collections.defaultdict(list), 0
    for batch in (int(b) for b in args.batches.split(",")):
        convs = grid(args.quick)
        results = onednn_check.check(convs, args.repeats, batch=batch)
        total += len(convs)
        for conv, result in zip(convs, results.values()):
            if result:
                print(f"wrong: batch {batch} {onednn_check.key(conv)} {result[0]} rel. error {result[1]:.3f}")
                wrong[conv[:3]].append((batch, conv[3], conv[4]))
    print(f"{sum(map(len, wrong.values()))} of {total} configurations wrong ({args.repeats} repeats each, "
          f"{time.time() - start:.0f} s)")
    for (k, s, cin), hits in sorted(wrong.items()):
        print(f"  kernel {k} stride {s} in_channels {cin}: {len(hits)} wrong (batch, out_channels, size): {hits}")


if __name__ == "__main__":
    main()
