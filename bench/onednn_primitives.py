"""oneDNN's time per primitive in one W-MSE 2 step, wmse_tf's beside the PyTorch reference's.

Run: python -m bench.onednn_primitives [--reference_python PY] [--steps 2] [--width 64] [--batch 128]
     ONEDNN_MAX_CPU_ISA=AVX2 python -m bench.onednn_primitives ...   # as on an AVX2-only CPU

Both frameworks run their convolutions, and TensorFlow its BatchNorm, in oneDNN (when oneDNN is on
for wmse_tf: the machine line says). Each side's step (bench.train_step's, and
bench/reference_torch.py's) runs in a subprocess with ONEDNN_VERBOSE=1 after a warm-up step, and the
execution times oneDNN reports are summed per primitive (convolution forward, gradient to the input,
gradient to the filter, reorders, BatchNorm, the rest) and per step, with the implementations oneDNN
chose. wmse_tf's side runs with one inter-op thread, so that its primitives do not overlap and their
times add up to the step (TensorFlow's default runs some at once: the step is then a little
shorter). "outside oneDNN" is the step's wall time less oneDNN's: the rest of the framework (the
reference's BatchNorm, element-wise ops, the optimizer).
"""

import argparse
import collections
import os
import subprocess
import sys

from bench import machine_line, objective_emb, reference_process, width_from_argv

MARK = "onednn_primitives: timed steps follow"
OTHER = "other oneDNN primitives"
GROUPS = (  # (row, primitive kind, propagation kinds)
    ("conv gradient to the filter", "convolution", ("backward_weights",)),
    ("conv gradient to the input", "convolution", ("backward_data",)),
    ("conv forward", "convolution", ("forward_training", "forward_inference")),
    ("reorders (layout changes)", "reorder", None),
    ("batch normalization", "batch_normalization", None),
)


def group_of(kind, prop):
    for row, k, props in GROUPS:
        if kind == k and (props is None or prop in props):
            return row
    return OTHER


def parse(lines, marker):
    """{row: (ms, {implementation: ms})} of oneDNN's exec lines after the first line starting with
    `marker`, and the step seconds the side printed (lines 'step <s>')."""
    rows, steps, on = collections.defaultdict(lambda: [0.0, collections.Counter()]), [], False
    for line in lines:
        if line.startswith(marker):
            on = True
        elif on and line.startswith("step "):
            steps.append(float(line.split()[1]))
        elif on and line.startswith("onednn_verbose,"):
            part = line.strip().split(",")
            if len(part) > 8 and part[2] == "primitive" and part[3] == "exec":
                row = rows[group_of(part[5], part[7])]
                row[0] += float(part[-1])
                row[1][part[6]] += float(part[-1])
    return {k: (v[0], dict(v[1])) for k, v in rows.items()}, steps


def run_side(cmd, env, marker, steps, stdin=None):
    env = dict(env, ONEDNN_VERBOSE="1")
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {proc.stderr[-1500:]}")
    lines = proc.stdout.splitlines()
    rows, times = parse(lines, marker)
    if len(times) != steps:
        raise SystemExit(f"error: {' '.join(cmd)}: expected {steps} timed steps, read {len(times)}")
    return rows, times, next((line for line in lines if line.startswith("machine: ")), "")


def ours(args):
    """This process's side: bench.train_step's W-MSE 2 step, a warm-up, then `steps` timed steps."""
    from bench import decide_onednn

    decide_onednn("resnet18", "cifar", args.width, 32)
    from bench.train_step import Case
    from wmse_tf.core import objectives

    case = Case("float32", False, objectives.WMSE(w_size=args.batch), 2, args.batch, args.width)
    print(machine_line(), flush=True)
    print(MARK, flush=True)
    for _ in range(args.steps):
        print(f"step {case.step():.6f}", flush=True)


def table(sides, steps):
    """The markdown table: ms per step of each row, each side, with its implementations."""
    names = list(sides)
    order = [g[0] for g in GROUPS] + [OTHER]
    lines = ["| oneDNN primitive | " + " | ".join(f"{n}: ms/step (implementation)" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for row in order:
        cells = []
        for name in names:
            ms, impls = sides[name][0].get(row, (0.0, {}))
            top = ", ".join(f"{k or '-'}" for k, _ in sorted(impls.items(), key=lambda kv: -kv[1])[:2])
            cells.append(f"{ms / steps:.0f}" + (f" ({top})" if top else ""))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    onednn = [sum(ms for ms, _ in sides[n][0].values()) / steps for n in names]
    wall = [1000 * sum(sides[n][1]) / len(sides[n][1]) for n in names]
    for label, values in (("all of oneDNN", onednn), ("step wall time", wall),
                          ("outside oneDNN", [w - o for w, o in zip(wall, onednn)])):
        lines.append(f"| {label} | " + " | ".join(f"{v:.0f}" for v in values) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("wmse_tf",), help=argparse.SUPPRESS)
    parser.add_argument("--reference_python", default="",
                        help="Python with torch for the PyTorch reference ('none' or empty: wmse_tf only)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps of each side, after a warm-up step")
    parser.add_argument("--width", type=int, default=width_from_argv())
    parser.add_argument("--batch", type=int, default=128, help="source images per step (2 views each)")
    args = parser.parse_args()
    if args.side:
        return ours(args)
    shape = [f"--width={args.width}", f"--batch={args.batch}", f"--steps={args.steps}"]
    rows, times, machine = run_side([sys.executable, "-m", "bench.onednn_primitives", "--side=wmse_tf", *shape],
                                    dict(os.environ, TF_NUM_INTEROP_THREADS="1"), MARK, args.steps)
    print(machine)  # the child's: it decided oneDNN for the benchmark's encoder, as bench.train_step does
    sides = {"wmse_tf": (rows, times)}
    print(f"W-MSE 2 step, ResNet-18 CIFAR stem width {args.width}, 32x32, batch {args.batch} x 2 views, "
          f"float32, {args.steps} steps after a warm-up; oneDNN's exec times (ONEDNN_VERBOSE=1)")
    if args.reference_python and args.reference_python != "none":
        cmd, env = reference_process(args.reference_python, args.batch, args.width, objective_emb(args.batch))
        sides["PyTorch reference"] = run_side(cmd, env, "torch ", args.steps, stdin="\n" * args.steps)[:2]
    print(table(sides, args.steps))


if __name__ == "__main__":
    main()
