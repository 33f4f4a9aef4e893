"""Feature extraction speed of one encoder per runtime and precision, at batch 1, 32 and 256, in one run.

  python -m bench.extract                                   # zoo/exports/wmse2_fashion_mnist (latest)
  python -m bench.extract --model=zoo/exports/wmse4_fashion_mnist --batches=1,256 --rounds=3 \
      --compare_model=zoo/exports/wmse4_fashion_mnist/1 --output=bench/results/extract/zen4.json

Runtimes, all fed the same uint8 [batch, S, S, 3] images and returning float32 features:

  savedmodel     TensorFlow, the SavedModel's `serving_uint8` signature (the reference: ratio 1)
  savedmodel_vN  the same for --compare_model (e.g. an older version computing in bfloat16)
  onnx           ONNX Runtime (CPU provider) on encoder.onnx;   onnx_int8 on encoder_int8.onnx
  litert         the LiteRT interpreter on encoder.tflite;      litert_float16, litert_int8 on theirs
  rest, grpc     zoo/serving_client.py's clients against in-process stand-ins of TF Serving
                 (bench/serving_standin.py) running the SavedModel on the same cores

Each row says what it computes in: a SavedModel's card (`serving_precision`), float32 for the
float files, float16 weights (float32 compute) and int8 dynamic range for the quantized ones.
The ONNX / LiteRT files are the ones beside the SavedModel (python -m zoo.export); missing
ones are exported into a scratch copy first. Each round times every (runtime, batch) once on
`--images` images, round-robin, so load changes hit all alike; the table gives the median
images/s over rounds and the ratio to the SavedModel at the same batch. ONNX Runtime and
LiteRT get --threads threads (default: every core, as TensorFlow takes). `--output` writes
the raw figures (every round) with the machine line as JSON.

An AVX2-only CPU is stood in for with `ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0`
(TensorFlow as it runs there: its Eigen kernels, bfloat16 emulated); ONNX Runtime and LiteRT
choose their kernels from the CPU's own flags, so the stand-in does not limit them (`STAND_IN`).
"""

import json
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
         "litert_float16": ("litert", "float16"), "litert_int8": ("litert", "int8")}
RUNTIMES = ("savedmodel", "onnx", "onnx_int8", "litert", "litert_float16", "litert_int8", "rest", "grpc")
FILE_PRECISION = {"none": "float32", "float16": "float16 weights, float32 compute", "int8": "int8 dynamic range"}
STAND_IN = {"ONEDNN_MAX_CPU_ISA": "AVX2", "TF_ENABLE_ONEDNN_OPTS": "0"}


def define_flags():
    flags.DEFINE_string("model", "zoo/exports/wmse2_fashion_mnist", "SavedModel version dir (or model dir: "
                        "its latest version).")
    flags.DEFINE_string("compare_model", None, "Another SavedModel timed beside it (runtime savedmodel_v<N>), "
                        "e.g. an older version computing in bfloat16.")
    flags.DEFINE_string("output", None, "Write the raw figures (every round) and the machine line to this JSON.")
    flags.DEFINE_list("runtimes", list(RUNTIMES), f"Runtimes, of {', '.join(RUNTIMES)}.")
    flags.DEFINE_list("batches", ["1", "32", "256"], "Batch sizes.")
    flags.DEFINE_integer("images", 512, "Images per (runtime, batch) per round (at least one batch).")
    flags.DEFINE_integer("rounds", 5, "Timed rounds (median reported), after one untimed warm-up round.")
    flags.DEFINE_integer("threads", 0, "Threads of ONNX Runtime and LiteRT (0: os.cpu_count()).")


def files_for(version_dir, scratch, names=FILES):
    """{runtime: path} of the ONNX / LiteRT files of `names`, exporting the missing ones into a copy."""
    from wmse_tf.export import formats

    paths = {k: os.path.join(version_dir, formats.file_name(*FILES[k])) for k in names if k in FILES}
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
    out = {"savedmodel": savedmodel_fn(loaded)}
    files = files_for(version_dir, stack.enter_context(tempfile.TemporaryDirectory()), names)
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


def savedmodel_fn(loaded):
    import tensorflow as tf

    serve = loaded.signatures["serving_uint8"]
    return lambda x: serve(images=tf.constant(x))["feature_vector"].numpy()


def precisions(version_dir, names, compare=None):
    """{runtime: what it computes in}."""
    from wmse_tf.export import formats, saved_model

    out = {n: FILE_PRECISION[FILES[n][1]] for n in names if n in FILES}
    for name in ("savedmodel", "rest", "grpc"):
        out[name] = formats.serving_precision(saved_model.read_card(version_dir))
    if compare:
        out[compare[0]] = formats.serving_precision(saved_model.read_card(compare[1]))
    return {n: out[n] for n in names}


def stand_in():
    """True when this process runs as the AVX2-only stand-in (`STAND_IN`)."""
    return all(os.environ.get(k, "").upper() == v for k, v in STAND_IN.items())


def time_one(fn, images, batch):
    """Images per second of `fn` over `images` in batches of `batch`."""
    start = time.perf_counter()
    for i in range(0, len(images) - batch + 1, batch):
        fn(images[i:i + batch])
    return (len(images) // batch * batch) / (time.perf_counter() - start)


def table(speeds, names, batches, precision=None):
    """Markdown: runtime | computes in | img/s per batch (ratio to savedmodel)."""
    precision = precision or {}
    lines = ["| runtime | computes in | " + " | ".join(f"batch {b}: img/s (x SavedModel)" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    for name in names:
        cells = []
        for b in batches:
            med = statistics.median(speeds[name, b])
            ref = statistics.median(speeds["savedmodel", b]) if ("savedmodel", b) in speeds else None
            cells.append(f"{med:,.0f}" + (f" ({med / ref:.2f}x)" if ref else ""))
        lines.append(f"| {name} | {precision.get(name, '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    import contextlib

    from wmse_tf import cli
    from wmse_tf.export import saved_model

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    machine = machine_line() + ("; AVX2-only stand-in (ONEDNN_MAX_CPU_ISA=AVX2 TF_ENABLE_ONEDNN_OPTS=0: "
                                "TensorFlow only; ONNX Runtime and LiteRT not limited)" if stand_in() else "")
    print(machine, flush=True)
    unknown = sorted(set(FLAGS.runtimes) - set(RUNTIMES))
    if unknown:
        raise app.UsageError(f"--runtimes: unknown {unknown}; choose from {', '.join(RUNTIMES)}")
    batches = [int(b) for b in FLAGS.batches]
    threads = FLAGS.threads or os.cpu_count()
    with cli.about("model", FLAGS.model, OSError, FileNotFoundError):
        version_dir = saved_model.latest_version_dir(FLAGS.model)
    compare = None
    if FLAGS.compare_model:
        with cli.about("compare_model", FLAGS.compare_model, OSError, FileNotFoundError):
            other = saved_model.latest_version_dir(FLAGS.compare_model)
        compare = (f"savedmodel_v{saved_model.read_card(other).get('version', os.path.basename(other))}", other)
    size = saved_model.read_card(version_dir)["input"]["image_size"]
    images = np.random.default_rng(0).integers(0, 256, (max(FLAGS.images, *batches), size, size, 3), np.uint8)
    names = list(FLAGS.runtimes)
    with contextlib.ExitStack() as stack:
        fns = runners(version_dir, names, threads, stack)
        if compare:
            import tensorflow as tf

            names.insert(names.index("savedmodel") + 1 if "savedmodel" in names else 0, compare[0])
            fns[compare[0]] = savedmodel_fn(tf.saved_model.load(compare[1]))
        speeds = {(n, b): [] for n in names for b in batches}
        for round_ in range(FLAGS.rounds + 1):  # round 0: warm-up (tracing, allocation), not kept
            for b in batches:
                for n in names:
                    speed = time_one(fns[n], images, b)
                    if round_:
                        speeds[n, b].append(speed)
    precision = precisions(version_dir, names, compare)
    about = (f"{version_dir}: {size}x{size} uint8 images, {FLAGS.images} per case, median of {FLAGS.rounds} "
             f"rounds; ONNX Runtime / LiteRT threads {threads}; rest/grpc: client + in-process stand-in server")
    print(about)
    print(table(speeds, names, batches, precision), flush=True)
    if FLAGS.output:
        from wmse_tf import atomic_io

        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        atomic_io.write_json(FLAGS.output, {
            "machine": machine, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "load_average_end": round(os.getloadavg()[0], 1), "stand_in": stand_in(), "about": about, "model": version_dir,
            "compare_model": compare and compare[1], "batches": batches, "threads": threads,
            "rows": [{"runtime": n, "computes_in": precision[n], "batch": b, "images_per_s": speeds[n, b]}
                     for n in names for b in batches]})
    return 0


if __name__ == "__main__":
    from wmse_tf import cli

    define_flags()
    cli.run(main)
