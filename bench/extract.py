"""Feature extraction speed of one encoder per runtime, at batch 1, 32 and 256, in one run.

  python -m bench.extract                                   # zoo/exports/wmse2_fashion_mnist/2
  python -m bench.extract --model=zoo/exports/wmse4_fashion_mnist/1 --batches=1,256 --rounds=3

Runtimes, all fed the same uint8 [batch, S, S, 3] images and returning float32 features:

  savedmodel   TensorFlow, the SavedModel's `serving_uint8` signature (the reference: ratio 1)
  onnx         ONNX Runtime (CPU provider) on encoder.onnx;        onnx_int8 on encoder_int8.onnx
  litert       the LiteRT interpreter on encoder.tflite;           litert_int8 on encoder_int8.tflite
  rest, grpc   zoo/serving_client.py's clients against in-process stand-ins of TF Serving
               (bench/serving_standin.py) running the SavedModel on the same cores

The ONNX / LiteRT files are the ones beside the SavedModel (python -m zoo.export); missing
ones are exported into a scratch copy first. Each round times every (runtime, batch) once on
`--images` images, round-robin, so load changes hit all alike; the table gives the median
images/s over rounds and the ratio to the SavedModel at the same batch. ONNX Runtime and
LiteRT get --threads threads (default: every core, as TensorFlow takes).
"""

import os
import shutil
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

from bench import machine_line

FLAGS = flags.FLAGS
FILES = {"onnx": ("onnx", "none"), "onnx_int8": ("onnx", "int8"), "litert": ("litert", "none"),
         "litert_int8": ("litert", "int8")}
RUNTIMES = ("savedmodel", "onnx", "onnx_int8", "litert", "litert_int8", "rest", "grpc")


def define_flags():
    flags.DEFINE_string("model", "zoo/exports/wmse2_fashion_mnist/2", "SavedModel version dir.")
    flags.DEFINE_list("runtimes", list(RUNTIMES), f"Runtimes, of {', '.join(RUNTIMES)}.")
    flags.DEFINE_list("batches", ["1", "32", "256"], "Batch sizes.")
    flags.DEFINE_integer("images", 512, "Images per (runtime, batch) per round (at least one batch).")
    flags.DEFINE_integer("rounds", 5, "Timed rounds (median reported), after one untimed warm-up round.")
    flags.DEFINE_integer("threads", 0, "Threads of ONNX Runtime and LiteRT (0: os.cpu_count()).")


def files_for(version_dir, scratch):
    """{runtime: path} of the ONNX / LiteRT files, exporting the missing ones into a copy."""
    from wmse_tf.export import formats

    paths = {k: os.path.join(version_dir, formats.file_name(*v)) for k, v in FILES.items()}
    missing = [k for k, p in paths.items() if not os.path.exists(p)]
    if missing:
        copy = shutil.copytree(version_dir, os.path.join(scratch, "1"))
        formats.export_formats(copy, [FILES[k] for k in missing])
        paths.update({k: os.path.join(copy, formats.file_name(*FILES[k])) for k in missing})
        print(f"exported {', '.join(missing)} into a scratch copy (not in {version_dir})", flush=True)
    return paths


def runners(version_dir, names, threads, stack):
    """{runtime: fn(uint8 batch) -> features}; servers are entered on `stack`."""
    import tensorflow as tf

    from bench import serving_standin
    from wmse_tf.export import formats
    from zoo import serving_client

    loaded = tf.saved_model.load(version_dir)
    serve = loaded.signatures["serving_uint8"]
    out = {"savedmodel": lambda x: serve(images=tf.constant(x))["feature_vector"].numpy()}
    files = files_for(version_dir, stack.enter_context(tempfile.TemporaryDirectory()))
    for name in names:
        if name in FILES:
            out[name] = formats.runner(files[name], threads)
    if "rest" in names:
        url = stack.enter_context(serving_standin.rest_server(loaded, "encoder"))
        client = serving_client.RestClient(url, "encoder", timeout=60.0)
        out["rest"] = lambda x: client.predict(x, batch_size=len(x))
    if "grpc" in names:
        target = stack.enter_context(serving_standin.grpc_server(loaded, "encoder"))
        grpc_client = serving_client.GrpcClient(target, "encoder", timeout=60.0)
        stack.callback(grpc_client.close)
        out["grpc"] = lambda x: grpc_client.predict(x, batch_size=len(x))
    return {k: out[k] for k in names}


def time_one(fn, images, batch):
    """Images per second of `fn` over `images` in batches of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(images) - batch + 1, batch):
        fn(images[i:i + batch])
    return (len(images) // batch * batch) / (time.perf_counter() - start)


def table(speeds, names, batches):
    """Markdown: runtime | img/s per batch (ratio to savedmodel)."""
    lines = ["| runtime | " + " | ".join(f"batch {b}: img/s (x SavedModel)" for b in batches) + " |",
             "|---|" + "---|" * len(batches)]
    for name in names:
        cells = []
        for b in batches:
            med = statistics.median(speeds[name, b])
            ref = statistics.median(speeds["savedmodel", b]) if ("savedmodel", b) in speeds else None
            cells.append(f"{med:,.0f}" + (f" ({med / ref:.2f}x)" if ref else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    import contextlib

    from wmse_tf import cli
    from wmse_tf.export import saved_model

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    print(machine_line(), flush=True)
    unknown = sorted(set(FLAGS.runtimes) - set(RUNTIMES))
    if unknown:
        raise app.UsageError(f"--runtimes: unknown {unknown}; choose from {', '.join(RUNTIMES)}")
    batches = [int(b) for b in FLAGS.batches]
    threads = FLAGS.threads or os.cpu_count()
    with cli.about("model", FLAGS.model, OSError, FileNotFoundError):
        version_dir = saved_model.latest_version_dir(FLAGS.model)
    size = saved_model.read_card(version_dir)["input"]["image_size"]
    images = np.random.default_rng(0).integers(0, 256, (max(FLAGS.images, *batches), size, size, 3), np.uint8)
    names = list(FLAGS.runtimes)
    with contextlib.ExitStack() as stack:
        fns = runners(version_dir, names, threads, stack)
        speeds = {(n, b): [] for n in names for b in batches}
        for round_ in range(FLAGS.rounds + 1):  # round 0: warm-up (tracing, allocation), not kept
            for b in batches:
                for n in names:
                    speed = time_one(fns[n], images, b)
                    if round_:
                        speeds[n, b].append(speed)
    print(f"{version_dir}: {size}x{size} uint8 images, {FLAGS.images} per case, median of {FLAGS.rounds} "
          f"rounds; ONNX Runtime / LiteRT threads {threads}; rest/grpc: client + in-process stand-in server")
    print(table(speeds, names, batches), flush=True)
    return 0


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
