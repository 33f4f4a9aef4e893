"""Tests of wmse_tf.export.{portable,onnx,litert,formats} and zoo.export: ONNX / LiteRT files
beside a SavedModel, with parity against its serving_default, quantized variants and errors; the
serving precision: an encoder trained under mixed_bfloat16 serves float32 features everywhere."""

import json
import os
import re
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests import helpers
from wmse_tf.core import encoders, model, objectives
from wmse_tf.errors import UserError
from wmse_tf.export import formats, litert, onnx, portable, saved_model as export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {"arch": "resnet10", "stem": "cifar", "width": 4, "mixed_precision": "mixed_bfloat16"}  # tiny_encoder


def trained_under_mixed_bfloat16(steps=3):
    """helpers.tiny_encoder trained a few W-MSE steps under the mixed_bfloat16 policy (call it under
    that policy, as a run with --mixed_precision=mixed_bfloat16): bfloat16 layers, BatchNorm stats moved."""
    encoder = helpers.tiny_encoder()
    ssl = model.SSLModel(encoder, encoders.projector(8, hidden=16), objectives.WMSE(w_size=16), seed=0)
    ssl.compile(optimizer=keras.optimizers.Adam(1e-2))
    base = helpers.images01(32, seed=5)
    for step in range(steps):
        noisy = [np.clip(base + 0.1 * np.random.default_rng(10 * step + v).normal(size=base.shape), 0, 1)
                 .astype(np.float32) for v in range(2)]
        ssl.train_on_batch((tuple(helpers.normalized(x) for x in noisy), np.arange(32)))
    assert encoder.get_layer("stem_conv").compute_dtype == "bfloat16"
    return encoder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """The trained mixed_bfloat16 encoder exported as a training run does, the policy still set (its
    card names its architecture and training policy): (version dir, encoder)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return helpers.export_tiny(tmp_path_factory.mktemp("formats"), trained_under_mixed_bfloat16(),
                                   dataset="digits", card={"flags": FLAGS})
    finally:
        keras.config.set_dtype_policy(policy)


VARIANTS = [("onnx", "none"), ("litert", "none"), ("litert", "float16"), ("litert", "int8"), ("onnx", "int8")]


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    """A copy of the tiny export with every variant beside it: (version dir, {file: record})."""
    path = shutil.copytree(source[0], tmp_path_factory.mktemp("exported") / "1")
    return str(path), formats.export_formats(str(path), VARIANTS)


@pytest.fixture
def version_dir(source, tmp_path):
    """A fresh copy of the tiny export, for a test that writes into it."""
    return shutil.copytree(source[0], tmp_path / "1")


def uint8_images(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, helpers.SIZE, helpers.SIZE, 3), dtype=np.uint8)


def serving_uint8(loaded, images):
    return loaded.signatures["serving_uint8"](images=tf.constant(images))["feature_vector"].numpy()


def test_float_encoder_rebuilds_the_savedmodel_weights(source):
    path, encoder = source
    rebuilt, spec, card = portable.float_encoder(path)
    assert spec.to_json() == helpers.SPEC.to_json() and card["flags"] == FLAGS
    assert rebuilt.get_layer("stem_conv").compute_dtype == "float32"
    for a, b in zip(rebuilt.variables, encoder.variables):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def graph_dtypes(path):
    """Every dtype named anywhere in a SavedModel's graphs (signatures, __call__, their functions)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return set(re.findall(r"DT_[A-Z0-9]+", str(proto.meta_graphs[0].graph_def)))


def every_signature(loaded, x):
    """Features of float32 images x in [0, 1] through serving_default, serving_uint8 (x as uint8),
    serving_bytes (x as PNG) and the root __call__; x is rounded to uint8 levels first."""
    x = np.round(x * 255).astype(np.uint8)
    sig = loaded.signatures
    pngs = tf.constant([tf.io.encode_png(im).numpy() for im in x])
    return {"serving_default": sig["serving_default"](images=tf.constant(x / np.float32(255))),
            "serving_uint8": sig["serving_uint8"](images=tf.constant(x)),
            "serving_bytes": sig["serving_bytes"](image_bytes=pngs),
            "__call__": {"feature_vector": loaded(tf.constant(x / np.float32(255)))}}, x


def test_a_mixed_bfloat16_encoder_serves_float32_in_every_signature(source):
    """No bfloat16 anywhere in the graph, and every signature gives the float32 features of the
    trained weights (the same encoder run in bfloat16 is off by far more)."""
    path, encoder = source
    assert export.read_card(path)["serving_precision"] == "float32"
    assert "DT_BFLOAT16" not in graph_dtypes(path) and "DT_FLOAT" in graph_dtypes(path)
    outs, x = every_signature(tf.saved_model.load(path), helpers.images01(6, seed=3))
    inputs = helpers.normalized(x / np.float32(255))
    float32 = export.with_precision(encoder, "float32")(inputs, training=False).numpy()
    bfloat16 = encoder(inputs, training=False).numpy()
    assert np.abs(bfloat16 - float32).max() > 10 * formats.TOLERANCE  # the precisions differ here
    for name, out in outs.items():
        assert out["feature_vector"].dtype == tf.float32, name
        np.testing.assert_allclose(out["feature_vector"], float32, atol=1e-5, rtol=0, err_msg=name)


def test_bfloat16_serving_only_on_request_and_named_in_the_card(source, tmp_path):
    path, encoder = source
    bf16_dir = export.export_encoder(encoder, str(tmp_path), "tiny_bf16", spec=helpers.SPEC,
                                     card={"flags": FLAGS}, precision="bfloat16")
    assert export.read_card(bf16_dir)["serving_precision"] == "bfloat16"
    assert "DT_BFLOAT16" in graph_dtypes(bf16_dir)
    x = helpers.images01(6, seed=3)
    ours = tf.saved_model.load(bf16_dir)(x).numpy()
    theirs = tf.saved_model.load(path)(x).numpy()
    assert np.abs(ours - theirs).max() > 10 * formats.TOLERANCE
    assert formats.cosine(ours, theirs).min() > 0.99
    # Its float files still publish, against the float32 graph; the record says what the SavedModel computes in.
    record = formats.export_format(bf16_dir, "litert")
    assert record["saved_model_computes_in"] == "bfloat16"
    assert record["parity"]["vs_float32_graph"]["max_abs"] < formats.TOLERANCE
    assert record["parity"]["vs_serving_default"]["max_abs"] > formats.TOLERANCE
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        export.export_encoder(encoder, str(tmp_path), "x", spec=helpers.SPEC, precision="float16")


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_float_export_matches_serving_default_and_updates_the_card(exported, fmt):
    path, records = exported
    name = formats.file_name(fmt)
    record, card = records[name], export.read_card(path)
    assert card["exports"][name] == json.loads(json.dumps(record))
    assert card["files"][name] == record["sha256"] and export.verify_hashes(path) == []
    # One contract: the float file and the SavedModel trained under mixed_bfloat16 agree to 1e-4.
    assert record["parity"]["vs_serving_default"]["max_abs"] < formats.TOLERANCE
    assert record["converter"] == module_versions(fmt) and record["saved_model_computes_in"] == "float32"
    assert not [f for f in os.listdir(path) if f.startswith(".")]  # no temp file left
    # The published file on its own: dynamic batch (1 and 7), uint8 in, serving_uint8's features out.
    run, loaded = formats.runner(os.path.join(path, name)), tf.saved_model.load(path)
    for n in (1, 7):
        x = uint8_images(n, seed=n)
        np.testing.assert_allclose(run(x), serving_uint8(loaded, x), atol=1e-4, rtol=0)


def module_versions(fmt):
    return formats.module_of(fmt).versions()


@pytest.mark.parametrize("fmt,quantize", [v for v in VARIANTS if v[1] != "none"])
def test_quantized_variants_are_smaller_and_close(exported, fmt, quantize):
    path, records = exported
    record = records[formats.file_name(fmt, quantize)]
    assert record["size_bytes"] < 0.7 * records[formats.file_name(fmt)]["size_bytes"]
    vs = record["parity"]["vs_float32_graph"]
    assert vs["cosine_min"] > 0.99 and vs["max_abs"] > 0  # quantized: close, not equal
    assert record["quantize"] == quantize and record["parity"]["images"] == formats.PROBE_IMAGES
    assert export.read_card(path)["files"][formats.file_name(fmt, quantize)] == record["sha256"]


def test_missing_package_is_one_user_error_and_nothing_is_written(version_dir, monkeypatch):
    before = sorted(os.listdir(version_dir)), export.read_card(str(version_dir))
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import tf2onnx -> ImportError
    with pytest.raises(UserError, match="package tf2onnx"):
        formats.export_format(str(version_dir), "onnx")
    assert (sorted(os.listdir(version_dir)), export.read_card(str(version_dir))) == before


def test_a_float_file_off_the_float32_savedmodel_is_not_published(version_dir, monkeypatch):
    """The one contract: features 1e-3 away from a float32 SavedModel's serving_default fail the export."""
    before = sorted(os.listdir(version_dir)), export.read_card(str(version_dir))
    serving = formats.serving_features
    monkeypatch.setattr(formats, "serving_features", lambda *a, **k: serving(*a, **k) + 1e-3)
    with pytest.raises(UserError, match=r"vs_serving_default by 0.001 \(> 0.0001\); not published"):
        formats.export_format(str(version_dir), "litert")
    assert (sorted(os.listdir(version_dir)), export.read_card(str(version_dir))) == before


def test_a_failed_card_write_takes_the_file_back(version_dir, monkeypatch):
    """Disk full at the card: the converted file is removed, the card is as it was."""
    before = sorted(os.listdir(version_dir)), export.read_card(str(version_dir))

    def full(path, obj):
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(export, "write_json", full)
    with pytest.raises(OSError, match="No space"):
        formats.export_format(str(version_dir), "litert", "int8")
    assert (sorted(os.listdir(version_dir)), export.read_card(str(version_dir))) == before


def _cholesky_archive(directory):
    """A portable-style SavedModel whose graph holds an op with no LiteRT builtin / ONNX mapping."""
    dense = keras.layers.Dense(4)
    dense.build((None, 12))

    def serve(images):
        x = tf.reshape(tf.cast(images, tf.float32), [-1, 4, 3])
        gram = tf.matmul(x, x, transpose_a=True) + tf.eye(3)
        return {"feature_vector": dense(tf.reshape(tf.linalg.cholesky(gram), [-1, 9])[:, :4] @ tf.ones([4, 12]))}

    archive = keras.export.ExportArchive()
    archive.track(dense)
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec([None, 2, 2, 3], tf.uint8,
                                                                                  name="images")])
    archive.write_out(str(directory), verbose=False)
    return str(directory)


@pytest.mark.parametrize("module", [litert, onnx])
def test_unsupported_op_is_named(tmp_path, module):
    archive = _cholesky_archive(tmp_path / "archive")
    with pytest.raises(UserError, match="Cholesky"):
        module.convert(archive, str(tmp_path / f"x{module.SUFFIX}"))


def test_unknown_format_and_quantization_are_user_errors():
    with pytest.raises(UserError, match="--format=coreml"):
        formats.file_name("coreml")
    with pytest.raises(UserError, match="--quantize=float16: --format=onnx offers none, int8"):
        formats.file_name("onnx", "float16")


def test_card_without_architecture_flags_is_a_user_error(version_dir):
    card = export.read_card(str(version_dir))
    export.write_json(os.path.join(version_dir, export.CARD_NAME), dict(card, flags={"width": 4}))
    with pytest.raises(UserError, match=r"lack \['arch', 'stem'\]"):
        formats.export_format(str(version_dir), "litert")


def test_zoo_export_command_registers_the_files(version_dir, tmp_path, capsys):
    """zoo.export's main on a copy: files in the card and in the registry entry exported there."""
    from zoo import export as zoo_export

    registry = tmp_path / "models.json"
    entry = {"name": "tiny", "version": 1, "status": "published", "dataset": "digits", "method": "wmse",
             "views": 2, "config": "configs/smoke.flags", "metrics": {"protocol": {}},
             "files": {"saved_model.pb": "0" * 64}, "export": os.path.relpath(version_dir, ROOT)}
    zoo.save({"schema_version": 1, "models": [entry]}, str(registry))
    with helpers.own_flags(zoo_export.define_flags):
        code, out, err = helpers.run_command(zoo_export.main, [
            "zoo.export", f"--model={version_dir}", "--format=litert", "--parity=random",
            f"--registry={registry}"], capsys)
    assert code == 0, err
    assert "encoder.tflite" in out and "registered" in out
    got = zoo.find(zoo.load(str(registry)), "tiny")
    assert got["files"] == export.file_hashes(str(version_dir), skip=()) and "encoder.tflite" in got["files"]
    assert got["exports"]["encoder.tflite"]["sha256"] == got["files"]["encoder.tflite"]


def test_zoo_export_command_errors_are_one_line(version_dir, tmp_path, capsys):
    from zoo import export as zoo_export

    before = sorted(os.listdir(version_dir))
    for argv, message in [([f"--model={tmp_path / 'none'}"], "--model="),
                          ([f"--model={version_dir}", "--format=onnx", "--quantize=float16"], "--quantize=float16")]:
        with helpers.own_flags(zoo_export.define_flags):
            code, _, err = helpers.run_command(zoo_export.main, ["zoo.export", *argv, "--registry="], capsys)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert sorted(os.listdir(version_dir)) == before


def _committed():
    return [e for e in zoo.load()["models"] if e["status"] == "published" and e.get("exports")]


@pytest.mark.slow
@pytest.mark.parametrize("name", [e["name"] for e in _committed()])
def test_committed_exports_parity_on_the_full_test_split(name):
    """Every committed ONNX / LiteRT file of a published zoo entry, on all Fashion-MNIST test images:
    float files equal the SavedModel's serving_default (float32) and TensorFlow's float32 graph of
    its weights to 1e-4; quantized ones are as recorded."""
    from zoo import export as zoo_export
    from wmse_tf.data import datasets

    entry = zoo.find(zoo.load(), name)
    path = os.path.join(ROOT, entry["export"])
    assert export.file_hashes(path, skip=()) == entry["files"]
    assert formats.serving_precision(export.read_card(path)) == "float32"
    try:
        images, _ = zoo_export.split_images(entry["dataset"], "test", 28)
    except datasets.DatasetNotFoundError as e:
        pytest.skip(f"{entry['dataset']} not installed ({e})")
    encoder, spec, _ = portable.float_encoder(path)
    float32 = formats.batched(lambda x: encoder(formats.portable_input(x, spec), training=False).numpy(), images)
    serving = formats.serving_features(path, images)
    assert np.abs(serving - float32).max() < formats.TOLERANCE
    for file, record in entry["exports"].items():
        check = formats.parity(os.path.join(path, file), images, serving, float32)
        assert check["images"] == 10000
        if record["quantize"] == "none":
            assert check["vs_serving_default"]["max_abs"] < formats.TOLERANCE, file
            assert check["vs_float32_graph"]["max_abs"] < formats.TOLERANCE, file
        for key in ("vs_serving_default", "vs_float32_graph"):
            assert check[key]["cosine_min"] == pytest.approx(record["parity"][key]["cosine_min"], abs=1e-6), file


def test_export_formats_flag_errors_come_before_any_work(tmp_path, capsys):
    """--export_formats of train, demo and zoo.build: a format or quantization they do not offer is one
    error line, exit 2, before training (nothing is written under the model dir)."""
    from wmse_tf import demo, train
    from zoo import build

    smoke = os.path.join(ROOT, "configs", "smoke.flags")
    base = [f"--flagfile={smoke}", f"--model_dir={tmp_path}/run", f"--export_dir={tmp_path}/exports"]
    cases = [(train.main, ["train", *base, "--export_formats=onnx:float16"], "--export_formats=onnx:float16"),
             (train.main, ["train", *base[:2], "--export_formats=litert"], "needs --export_dir"),
             (demo.main, ["demo", *base, "--export_formats=coreml"], "--format=coreml")]
    for main, argv, message in cases:
        code, _, err = helpers.run_command(main, argv, capsys)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    with helpers.own_flags(build.define_flags):
        code, _, err = helpers.run_command(build.main, ["build", "--name=wmse2_fashion_mnist",
                                                        "--export_formats=onnx:float16"], capsys)
    assert code == 2 and "--quantize=float16" in err, err
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "exports")
