"""Tests of the zoo: registry, build (train skipped), evaluate against registered metrics, features."""

import copy
import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests import helpers
from wmse_tf.data import augment
from wmse_tf.evaluation.evaluator import EvalConfig
from wmse_tf.evaluation.linear_probe import ProbeConfig
from wmse_tf.export import saved_model as export
from zoo import build, evaluate as zoo_evaluate, extract_features

# 5-NN points a committed encoder must gain over its architecture with random weights on the 1000 test
# images (measured: 5.5 for ResNet-10 width 32, 10 and 17 for the ResNet-18s).
MARGIN = 0.03
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_is_valid_and_honest():
    registry = zoo.load()
    current = [e["name"] for e in registry["models"] if e["status"] != "superseded"]
    assert "wmse2_fashion_mnist" in current and len(current) == len(set(current))
    for entry in registry["models"]:
        assert os.path.exists(os.path.join(ROOT, entry["config"])), entry["config"]
        if entry["status"] == "planned":
            assert not entry.get("metrics") and not entry.get("files")
        else:  # published or superseded: built here, with protocol and hashes
            assert entry["metrics"]["protocol"]["linear"]["epochs"] > 0 and entry["files"]
        if entry["status"] == "superseded":  # kept, files and all, beside the version replacing it
            assert zoo.find(registry, entry["name"])["version"] == entry["superseded_by"] > entry["version"]
            assert export.file_hashes(os.path.join(ROOT, entry["export"]), skip=()) == entry["files"]


def test_registry_entries_agree_with_their_flagfiles():
    """A registry row must describe what its flagfile trains (arch, width, emb, views, epochs, method)."""
    keys = {"arch": "arch", "width": "width", "emb": "emb", "views": "num_views", "epochs": "epochs",
            "method": "method", "dataset": "dataset"}
    for entry in zoo.load()["models"]:
        cfg = helpers.parse_flagfile(os.path.join(ROOT, entry["config"]))
        for field, flag in keys.items():
            assert entry[field] == cfg[flag], (entry["name"], field, entry[field], cfg[flag])


def registry_rows():
    """A registry of its own (one planned, one published row): independent of zoo/models.json."""
    planned = {"name": "planned_one", "version": 1, "status": "planned", "dataset": "digits", "method": "wmse",
               "views": 2, "config": "configs/smoke.flags", "metrics": None, "files": None}
    published = dict(planned, name="published_one", status="published", export="zoo/exports/published_one/1",
                     metrics={"protocol": {"linear": {"epochs": 1}}, "linear": {"top1": 0.5}},
                     files={"saved_model.pb": "0" * 64})
    return {"schema_version": 1, "models": [planned, published]}


def test_registry_validation_errors():
    registry = registry_rows()
    zoo.validate(registry)  # the valid starting point
    cases = [
        (lambda r: r["models"][0].update(status="published"), "needs 'metrics'"),
        (lambda r: r["models"][0].update(metrics={"linear": {"top1": 0.9}}), "planned entry has no metrics"),
        (lambda r: r["models"].append(copy.deepcopy(r["models"][0])), "duplicate"),
        (lambda r: r["models"][1].update(status="done"), "status must be one of"),
        (lambda r: r["models"][1].pop("config"), r"missing \['config'\]"),
        (lambda r: r["models"][1].update(files=None), "needs 'files'"),
        (lambda r: r["models"][1]["metrics"].pop("protocol"), "need their 'protocol'"),
        (lambda r: r["models"].append(dict(r["models"][1], version=2)), "older versions must be 'superseded'"),
        (lambda r: r["models"][1].update(status="superseded"), "needs 'superseded_by'"),
        (lambda r: r["models"][1].update(status="superseded", superseded_by=2), "v2, which has no entry"),
    ]
    for change, message in cases:
        bad = copy.deepcopy(registry)
        change(bad)
        with pytest.raises(ValueError, match=message):
            zoo.validate(bad)
    assert zoo.find(registry, "published_one") is registry["models"][1]
    with pytest.raises(KeyError, match="no zoo entry named 'nope'; known: planned_one, published_one"):
        zoo.find(registry, "nope")
    with pytest.raises(KeyError, match="'published_one' has no version 3"):
        zoo.find(registry, "published_one", 3)


def test_publish_version_keeps_the_old_one_superseded(tmp_path):
    path = str(tmp_path / "models.json")
    zoo.save(registry_rows(), path)
    old = zoo.find(zoo.load(path), "published_one")
    new = zoo.publish_version(dict(old, version=2, files={"saved_model.pb": "1" * 64}), path)
    registry = zoo.load(path)
    assert zoo.find(registry, "published_one") == new and new["status"] == "published"
    assert zoo.find(registry, "published_one", 1) == dict(old, status="superseded", superseded_by=2)
    with pytest.raises(ValueError, match="version 2 does not follow v2"):
        zoo.publish_version(new, path)


def test_train_command_uses_the_flagfile(tmp_path):
    entry = zoo.find(zoo.load(), "wmse2_fashion_mnist")
    cmd = build.train_command(entry, str(tmp_path / "run"), extra=["--epochs=1"])
    assert cmd[1:4] == ["-m", "wmse_tf.train", "--flagfile=configs/fashion_mnist_emb32.flags"]
    assert cmd[-1] == "--epochs=1" and f"--model_dir={tmp_path / 'run'}" in cmd
    assert "--time_budget=0" in cmd  # the registry's epochs, not the demo's wall-clock budget


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny digits 'run' built into a temp registry: build() with training skipped."""
    tmp = tmp_path_factory.mktemp("zoo")
    registry = str(tmp / "models.json")
    entry = {"name": "tiny_digits", "version": 1, "status": "planned", "dataset": "digits", "method": "wmse",
             "views": 2, "config": "configs/smoke.flags", "metrics": None, "files": None}
    zoo.save({"schema_version": 1, "models": [entry]}, registry)
    aug = dataclasses.asdict(dataclasses.replace(augment.recipe("digits"), image_size=helpers.SIZE))
    helpers.write_run_dir(tmp / "runs" / "tiny_digits", helpers.tiny_encoder(), "digits", augment=aug, epochs=1,
                          arch="resnet10", stem="cifar", width=4)
    (tmp / "runs" / "tiny_digits" / "log.jsonl").write_text(  # two epochs, in two processes
        '{"epoch": 1, "step": 4, "seconds": 1.5}\n{"epoch": 2, "step": 8, "seconds": 2.0}\n')
    config = EvalConfig(probe=ProbeConfig(epochs=20), knn=("euclidean:5",), limit_train=300, limit_test=100,
                        progress=False)
    done = build.build(entry, str(tmp / "runs"), str(tmp / "exports"), registry, skip_train=True,
                       eval_config=config)
    return tmp, registry, done


def test_build_publishes_metrics_and_hashes(built):
    tmp, registry, done = built
    entry = zoo.find(zoo.load(registry), "tiny_digits")
    assert entry == done and entry["status"] == "published"
    version_dir = os.path.join(tmp, "exports", "tiny_digits", "1")
    assert os.path.realpath(entry["export"]) == os.path.realpath(version_dir)
    assert entry["files"] == export.file_hashes(version_dir, skip=()) and "model_card.json" in entry["files"]
    assert entry["size_bytes"] > 0 and entry["metrics"]["num_test"] == 100
    assert entry["built"]["train_seconds"] == 3.5  # the run log's epochs, not this command's time
    assert entry["metrics"]["protocol"]["linear"]["epochs"] == 20
    knn_top1, linear = entry["metrics"]["knn"]["euclidean:5"]["top1"], entry["metrics"]["linear"]
    assert knn_top1 * 100 == pytest.approx(round(knn_top1 * 100))  # a count of the 100 test images
    assert linear["top1"] <= linear["top5"]
    card = export.read_card(version_dir)
    assert card["metrics"] == entry["metrics"] and card["flags"]["dataset"] == "digits"


def test_reexport_publishes_the_next_version_from_the_weights(built, tmp_path):
    """zoo.reexport on a copy of the registry: v2 from v1's weights (float32, the same features), v1 kept
    as superseded with its files unchanged (the files beside it: tests/test_export_formats.py)."""
    from zoo import reexport

    tmp, registry, done = built
    path = str(tmp_path / "models.json")
    shutil.copy(registry, path)
    config = EvalConfig(probe=ProbeConfig(epochs=20), knn=("euclidean:5",), limit_train=300, limit_test=100,
                        progress=False)
    new = reexport.reexport(zoo.find(zoo.load(path), "tiny_digits"), str(tmp_path / "exports"), path,
                            eval_config=config)
    v1, v2 = done["export"], str(tmp_path / "exports" / "tiny_digits" / "2")
    assert new["version"] == 2 and os.path.realpath(new["export"]) == os.path.realpath(v2)
    assert new["files"] == export.file_hashes(v2, skip=()) and new["metrics"]["num_test"] == 100
    card = export.read_card(v2)
    assert card["serving_precision"] == "float32" and card["reexported_from"]["version"] == 1
    assert card["flags"] == export.read_card(v1)["flags"] and card["metrics"] == new["metrics"]
    old = zoo.find(zoo.load(path), "tiny_digits", 1)
    assert old["status"] == "superseded" and old["superseded_by"] == 2
    assert export.file_hashes(v1, skip=()) == old["files"] == done["files"]
    x = helpers.images01(5, seed=2)
    np.testing.assert_allclose(helpers.reload(v2)(x), helpers.reload(v1)(x), atol=1e-5, rtol=0)


def test_zoo_evaluate_checks_registered_metrics(built, capsys):
    tmp, registry, _ = built
    model_dir = os.path.join(tmp, "exports", "tiny_digits")
    ok, rows, problems = zoo_evaluate.check(model_dir, registry_path=registry, tolerance=0.02, progress=False)
    assert ok, problems
    assert [r[0] for r in rows] == ["linear top1", "linear top5", "k-NN euclidean:5", "effective rank of 32 feat."]
    assert rows[-1][1] is None and 1 <= rows[-1][2] <= 32  # reported beside the accuracies, not checked
    worse = json.load(open(registry))
    worse["models"][0]["metrics"]["knn"]["euclidean:5"]["top1"] += 0.3
    worse_path = os.path.join(tmp, "worse.json")
    zoo.save(worse, worse_path)
    argv = ["ev", f"--model={model_dir}", f"--registry={worse_path}", "--tolerance=0.02", "--noprogress"]
    with helpers.own_flags(zoo_evaluate.define_flags):  # the command in-process
        code, out, err = helpers.run_command(zoo_evaluate.main, argv, capsys)
    assert code == 1, out + err[-2000:]
    assert "WORSE" in out and "k-NN euclidean:5" in err


def test_zoo_evaluate_detects_changed_files(built, tmp_path):
    tmp, registry, _ = built
    copy_dir = tmp_path / "tiny_digits"
    shutil.copytree(os.path.join(tmp, "exports", "tiny_digits"), copy_dir)
    with open(copy_dir / "1" / "model_card.json", "a") as f:
        f.write(" ")
    ok, _, problems = zoo_evaluate.check(str(copy_dir), registry_path=registry, tolerance=1.0, progress=False)
    assert not ok and problems == ["sha256 differs from the registry: model_card.json"]


def test_extract_features_from_a_folder(built, tmp_path):
    tmp, _, _ = built
    version_dir = os.path.join(tmp, "exports", "tiny_digits", "1")
    images, labels = helpers.digits_images(6, size=20)  # not the model size: resized in the graph
    for i, (im, y) in enumerate(zip(images, labels)):
        os.makedirs(tmp_path / "photos" / f"class_{y}", exist_ok=True)
        tf.io.write_file(str(tmp_path / "photos" / f"class_{y}" / f"{i}.png"), tf.io.encode_png(im))
    tf.io.write_file(str(tmp_path / "photos" / "loose.jpg"), tf.io.encode_jpeg(images[0]))
    (tmp_path / "photos" / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    loaded = helpers.reload(version_dir)
    x, y, names, skipped, classes = extract_features.folder_features(loaded, str(tmp_path / "photos"),
                                                                     batch_size=4, progress=False)
    assert skipped == ["class_0/broken.png"] and len(names) == 7 and x.shape == (7, 32)
    assert names[0] == "loose.jpg" and y[0] == -1  # top-level files first, then class folders
    assert all(classes[label] == name.split("/")[0] for name, label in zip(names[1:], y[1:]))
    idx = list(names).index("class_0/0.png")
    want = loaded.signatures["serving_bytes"](image_bytes=tf.constant([tf.io.encode_png(images[0]).numpy()]))
    np.testing.assert_allclose(x[idx], want["feature_vector"][0], rtol=1e-5, atol=1e-5)


def test_extract_features_cli_on_a_split(built, tmp_path, capsys):
    tmp, _, _ = built
    out_path = tmp_path / "f.npz"
    argv = ["ef", f"--model={os.path.join(tmp, 'exports', 'tiny_digits')}", "--dataset=digits", "--split=test",
            "--limit=40", f"--output={out_path}", "--noprogress"]
    with helpers.own_flags(extract_features.define_flags):  # the command in-process
        code, _, err = helpers.run_command(extract_features.main, argv, capsys)
    assert code == 0, err[-2000:]
    with np.load(out_path) as z:
        assert z["features"].shape == (40, 32) and z["labels"].shape == (40,) and z["filenames"][0] == "digits/test/0"


@pytest.mark.parametrize("name", [e["name"] for e in zoo.load()["models"]
                                  if e["status"] == "published" and e["dataset"] == "fashion_mnist"])
def test_committed_fashion_mnist_encoder_is_intact_and_works(name):
    """A SavedModel committed for a published entry: hashes as registered, and its features
    classify Fashion-MNIST (5-NN, 5000 train / 1000 test images) better than the same
    architecture with random weights, whose features are already good on this dataset
    (84.0% 5-NN on the full splits for ResNet-10 at width 32)."""
    from wmse_tf.core import encoders
    from wmse_tf.data import datasets as data
    from wmse_tf.evaluation import knn
    from wmse_tf.export import formats, portable

    entry = zoo.find(zoo.load(), name)
    path = os.path.join(ROOT, entry["export"])
    assert export.file_hashes(path, skip=()) == entry["files"]
    try:
        train = data.load("fashion_mnist", "train", download=False).take(5000).batch(1000)
        test = data.load("fashion_mnist", "test", download=False).take(1000).batch(1000)
    except data.DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not installed ({e})")
    serve = tf.saved_model.load(path).signatures["serving_uint8"]
    card = export.read_card(path)
    spec, flags = portable.spec_of(card, path), card["flags"]
    keras.utils.set_random_seed(0)
    random_encoder = encoders.build(flags["arch"], flags["stem"], flags["width"], spec.image_size)

    def features(ds, encode):
        xs, ys = zip(*[(encode(x), y.numpy()) for x, y in ds])
        return np.concatenate(xs), np.concatenate(ys)

    def accuracy(encode):
        (train_x, train_y), (test_x, test_y) = features(train, encode), features(test, encode)
        assert train_x.shape == (5000, entry["num_features"]) and np.isfinite(train_x).all()
        return np.mean(np.asarray(knn.knn_predict(train_x, train_y, test_x, k=5, metric="cosine")) == test_y)

    trained = accuracy(lambda x: serve(images=x)["feature_vector"].numpy())
    untrained = accuracy(lambda x: random_encoder(formats.portable_input(x, spec), training=False).numpy())
    assert trained >= untrained + MARGIN, (trained, untrained)
