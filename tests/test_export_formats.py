"""Tests of wmse_tf.export.{portable,onnx,litert,formats} and zoo.export: ONNX / LiteRT files
beside a SavedModel, with parity against its serving_default, quantized variants and errors."""

import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests import helpers
from wmse_tf.errors import UserError
from wmse_tf.export import formats, litert, onnx, portable, saved_model as export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = {"arch": "resnet10", "stem": "cifar", "width": 4}  # helpers.tiny_encoder


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny float32 export whose card names its architecture (as a training run's does)."""
    path, encoder = helpers.export_tiny(tmp_path_factory.mktemp("formats"), dataset="digits",
                                        card={"flags": FLAGS})
    return path, encoder


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
    for a, b in zip(rebuilt.variables, encoder.variables):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_float_export_matches_serving_default_and_updates_the_card(exported, fmt):
    path, records = exported
    name = formats.file_name(fmt)
    record, card = records[name], export.read_card(path)
    assert card["exports"][name] == json.loads(json.dumps(record))
    assert card["files"][name] == record["sha256"] and export.verify_hashes(path) == []
    assert record["parity"]["vs_serving_default"]["max_abs"] < formats.TOLERANCE  # a float32 SavedModel
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
    """Every committed ONNX / LiteRT file of a zoo entry, on all Fashion-MNIST test images: float
    files equal TensorFlow's float32 graph of the SavedModel to 1e-4 and its serving_default to
    its bfloat16 rounding (cosine); quantized ones are as recorded."""
    from zoo import export as zoo_export
    from wmse_tf.data import datasets

    entry = zoo.find(zoo.load(), name)
    path = os.path.join(ROOT, entry["export"])
    assert export.file_hashes(path, skip=()) == entry["files"]
    try:
        images, _ = zoo_export.split_images(entry["dataset"], "test", 28)
    except datasets.DatasetNotFoundError as e:
        pytest.skip(f"{entry['dataset']} not installed ({e})")
    encoder, spec, _ = portable.float_encoder(path)
    float32 = formats.batched(lambda x: encoder(formats.portable_input(x, spec), training=False).numpy(), images)
    serving = formats.serving_features(path, images)
    for file, record in entry["exports"].items():
        check = formats.parity(os.path.join(path, file), images, serving, float32)
        assert check["images"] == 10000
        if record["quantize"] == "none":
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
