"""Benchmarks printing figures measured in one run; each names its machine first."""


def machine_line():
    """The first line of every benchmark: CPU model, cores, vector/bf16 flags, oneDNN's state, load."""
    import os

    from wmse_tf.training import resolve

    from wmse_tf import onednn

    return (f"machine: {resolve.cpu_description()}; {onednn.current().line()}; "
            f"load average {os.getloadavg()[0]:.1f}")


def decide_onednn(arch, stem, width, image_size):
    """oneDNN decided for the benchmark's own encoder (`wmse_tf.onednn.apply`), as train and demo do
    for theirs; call before TensorFlow is imported (otherwise the import hook decides for a fixed set
    of convolutions that includes oneDNN's wrong class, and leaves it off on such a CPU)."""
    from wmse_tf import onednn
    from wmse_tf.core import archs

    return onednn.apply(archs.convolutions(arch, stem, width, image_size))


def width_from_argv(default=64):
    """The benchmark's --width (16 with --quick), read before TensorFlow is imported, to decide
    oneDNN for that encoder (`decide_onednn`)."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--width", type=int, default=default)
    parser.add_argument("--quick", action="store_true")
    args, _ = parser.parse_known_args()
    return 16 if args.quick else args.width


def objective_emb(batch):
    """The embedding size of the benchmarks' W-MSE step: 64 (the paper's) from batch 128, else 32 (w_size =
    the batch must exceed it)."""
    return 64 if batch >= 128 else 32


def reference_process(python, batch, width, emb):
    """(command, environment) of the PyTorch reference's step server (bench/reference_torch.py --serve):
    under ONEDNN_MAX_CPU_ISA=AVX2 (an AVX2-only CPU stood in for) PyTorch's own kernels get AVX2 too."""
    import os

    env = dict(os.environ)
    if env.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith("AVX2"):
        env.setdefault("ATEN_CPU_CAPABILITY", "avx2")  # PyTorch's own kernels too, not only oneDNN's
    return ([python, "-m", "bench.reference_torch", f"--batch={batch}", f"--width={width}", f"--emb={emb}",
             "--serve"], env)
