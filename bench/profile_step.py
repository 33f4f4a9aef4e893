"""Where the time of one W-MSE training step goes: TensorFlow's profiler, ops grouped.

Run: python -m bench.profile_step [--width 64] [--batch 128] [--views 2] [--policy float32] [--steps 2]
     ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.profile_step      # as on an AVX2-only CPU

Builds the step of bench.train_step (ResNet-18 CIFAR stem, 32x32, W-MSE, Adam), times a few
steps, then records `--steps` steps with `tf.profiler.experimental` and sums the op events
of TensorFlow's compute threads (the XPlane the profiler writes; no TensorBoard needed) by
group: convolution forward, backward to the input, backward to the filter, BatchNorm,
dense layers, whitening (Cholesky, triangular solve), the optimizer's update, the rest.
Shares are of the summed op time (ops of the two inter-op threads overlap, so the sum
exceeds the step's wall time). Prints the machine first, like every benchmark here.
"""

import argparse
import collections
import glob
import tempfile
import time

from bench import decide_onednn, machine_line, width_from_argv

if __name__ == "__main__":
    decide_onednn("resnet18", "cifar", width_from_argv(), 32)  # before TensorFlow's import

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.train_step import Case  # noqa: E402
from wmse_tf.core import objectives  # noqa: E402

GROUPS = (  # (group, substrings of op types), first match wins
    ("conv backprop filter", ("Conv2DBackpropFilter",)),
    ("conv backprop input", ("Conv2DBackpropInput",)),
    ("conv forward", ("Conv2D",)),
    ("batchnorm (fwd + bwd)", ("BatchNorm",)),
    ("whitening (cholesky, solve)", ("Cholesky", "MatrixTriangularSolve", "BatchMatMul")),
    ("dense layers", ("MatMul",)),
    ("optimizer update", ("AssignSubVariableOp", "AssignAddVariableOp", "AssignVariableOp", "Sqrt",
                          "ResourceApply")),
    ("relu, add, grads, rest", ("",)),
)


def op_times(logdir):
    """{op type: seconds} summed over the compute threads of the profile in `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                op = name.rsplit(":", 1)[-1]
                if op != "Process":  # the executor's own span around the ops
                    times[op] += event.duration_ps * 1e-12
    return times


def group(times):
    out = collections.Counter()
    for op, seconds in times.items():
        out[next(name for name, keys in GROUPS if any(k in op for k in keys))] += seconds
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--policy", default="float32")
    parser.add_argument("--steps", type=int, default=2, help="steps recorded by the profiler")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    case = Case(args.policy, False, objectives.WMSE(w_size=args.batch), args.views, args.batch, args.width)
    for _ in range(2):  # the first steps after tracing are slower (oneDNN primitives, allocator)
        case.step()
    times = [case.step() for _ in range(3)]
    print(f"W-MSE {args.views} step, ResNet-18 CIFAR stem width {args.width}, batch {args.batch} x "
          f"{args.views} views, {args.policy}: {np.median(times):.3f} s/step "
          f"({args.batch / np.median(times):.1f} img/s) unprofiled; TF {tf.__version__}")
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(args.steps):
            case.step()
        wall = (time.perf_counter() - start) / args.steps
        tf.profiler.experimental.stop()
        ops = op_times(logdir)
    total = sum(ops.values())
    print(f"profiled: {wall:.3f} s/step wall, {total / args.steps:.3f} s/step of op time on the compute threads")
    for name, seconds in group(ops).most_common():
        print(f"  {name:<30} {1000 * seconds / args.steps:9.1f} ms/step {100 * seconds / total:6.1f}%")
    print("top op types: " + ", ".join(f"{op} {100 * s / total:.1f}%" for op, s in ops.most_common(6)))


if __name__ == "__main__":
    main()
