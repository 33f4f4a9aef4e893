"""Tests for wmse_tf/data/datasets.py: every registry entry, offline (mock TFDS, temp folders)."""

import gzip
import io
import logging
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from wmse_tf import errors
from wmse_tf.data import datasets as data, folders as image_folder, tfds as tfds_source

FASHION_DIR = data.IDX_DIR


def _take(ds, n=None):
    xs, ys = [], []
    for x, y in (ds if n is None else ds.take(n)):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.stack(xs), np.array(ys)


def _check_spec(ds, size):
    image_spec, label_spec = ds.element_spec
    assert image_spec.shape == (size, size, 3) and image_spec.dtype == tf.uint8
    assert label_spec.shape == () and label_spec.dtype == tf.int64


# ------------------------------------------------------------------------------ registry
def test_names_info_and_unknown():
    assert {"cifar10", "cifar100", "stl10", "fashion_mnist", "tiny_imagenet", "imagenet100",
            "digits", "synthetic"} <= set(data.names())
    stl = data.info("stl10")
    assert (stl.image_size, stl.num_classes, "unlabelled" in stl.splits) == (96, 10, True)
    assert data.info("cifar10").mean == (0.4914, 0.4822, 0.4465)
    for name in data.names():
        assert "ssl" in data.info(name).splits
    with pytest.raises(ValueError, match="cifar10.*stl10"):
        data.load("cifar11", "train")
    with pytest.raises(ValueError, match="valid"):
        data.load("digits", "validation")
    with pytest.raises(ValueError, match="synthetic:size"):
        data.info("synthetic:size=big")


# ---------------------------------------------------------------------------------- TFDS
@pytest.mark.parametrize("name,size,classes", [("cifar10", 32, 10), ("cifar100", 32, 100),
                                               ("stl10", 96, 10)])
def test_tfds_datasets_with_mock_data(name, size, classes):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        for split in ("train", "test"):
            ds = data.load(name, split)
            _check_spec(ds, size)
            images, labels = _take(ds)
            assert images.shape == (6, size, size, 3)
            assert labels.min() >= 0 and labels.max() < classes


def test_stl10_ssl_split_is_train_plus_unlabelled():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        _, unlabelled = _take(data.load("stl10", "unlabelled"))
        _, ssl = _take(data.load("stl10", "ssl"))
    np.testing.assert_array_equal(unlabelled, -1)
    assert len(ssl) == 10
    assert np.all((ssl[:5] >= 0) & (ssl[:5] < 10)) and np.all(ssl[5:] == -1)


def test_tfds_not_prepared_names_the_fix(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:  # the real TFDS builder, nothing there
        data.load("cifar10", "train", data_dir=str(tmp_path), download=False)
    message = str(err.value)
    assert "cifar10" in message and str(tmp_path) in message
    assert f"tfds build cifar10 --data_dir={tmp_path}" in message and "--nodownload" in message
    assert isinstance(err.value, ValueError) and isinstance(err.value, errors.UserError)


class FakeBuilder:
    """A TFDS builder: not prepared until download_and_prepare (recorded; may raise) runs."""

    def __init__(self, name, data_dir, fail=None):
        self.data_dir = os.path.join(tfds_source.data_root(data_dir), name, "1.0.0")
        self.fail, self.prepared, self.downloads = fail, False, []

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self, download_dir=None):
        self.downloads.append(download_dir)
        if self.fail:
            raise self.fail
        self.prepared = True

    def as_dataset(self, split, as_supervised, shuffle_files):
        assert self.prepared and as_supervised
        image = np.full((2, 32, 32, 3), 7 if split == "train" else 9, np.uint8)
        return tf.data.Dataset.from_tensor_slices((image, np.array([1, 2])))


@pytest.fixture
def fake_tfds(monkeypatch):
    """tfds_source.builder -> FakeBuilder (one per name, like data on disk); returns the builders
    and a dict whose "error" makes their downloads raise."""
    builders, fail = {}, {}

    def builder(name, data_dir=None):
        if name not in builders:
            builders[name] = FakeBuilder(name, data_dir, fail.get("error"))
        return builders[name]

    monkeypatch.setattr(tfds_source, "builder", builder)
    return builders, fail


def test_missing_tfds_dataset_is_downloaded_and_prepared_once(tmp_path, fake_tfds, capsys):
    builders, _ = fake_tfds
    images, labels = _take(data.load("cifar10", "train", data_dir=str(tmp_path)))
    assert builders["cifar10"].downloads == [str(tmp_path / "downloads")]
    assert images.shape == (2, 32, 32, 3) and images.max() == 7 and list(labels) == [1, 2]
    out = capsys.readouterr().out
    assert "cifar10" in out and str(tmp_path / "downloads") in out and builders["cifar10"].data_dir in out
    data.load("cifar10", "test", data_dir=str(tmp_path))
    data.prepare("cifar10", data_dir=str(tmp_path))
    assert len(builders["cifar10"].downloads) == 1  # prepared now: no second download


def test_no_download_when_download_is_false(tmp_path, fake_tfds):
    builders, _ = fake_tfds
    for call in (lambda: data.load("stl10", "ssl", str(tmp_path), download=False),
                 lambda: data.prepare("stl10", str(tmp_path), download=False)):
        with pytest.raises(data.DatasetNotFoundError, match=f"tfds build stl10 --data_dir={tmp_path}"):
            call()
    assert builders["stl10"].downloads == []


def test_failed_download_names_dataset_dir_and_fix(tmp_path, fake_tfds):
    builders, fail = fake_tfds
    fail["error"] = OSError("Failed to resolve 'www.cs.toronto.edu'")
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.prepare("cifar100", data_dir=str(tmp_path))
    message = str(err.value)
    assert builders["cifar100"].downloads == [str(tmp_path / "downloads")]
    assert "'cifar100'" in message and "failed" in message and "Failed to resolve" in message
    assert f"tfds build cifar100 --data_dir={tmp_path}" in message


def test_fashion_mnist_downloads_only_without_idx_files(tmp_path, fake_tfds, monkeypatch):
    builders, _ = fake_tfds
    monkeypatch.setattr(data, "IDX_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.prepare("fashion_mnist", str(tmp_path), download=False)
    assert builders["fashion_mnist"].downloads == []
    data.prepare("fashion_mnist", str(tmp_path))
    assert builders["fashion_mnist"].downloads == [str(tmp_path / "downloads")]


# ------------------------------------------------------------------------- Fashion-MNIST
def _write_idx(path, array):
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I",
                                                                   *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR),
                    reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_debian_idx_files(tmp_path):
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        assert data.idx_header(f"{FASHION_DIR}/{prefix}-images-idx3-ubyte.gz") == (n, 28, 28)
        assert data.idx_header(f"{FASHION_DIR}/{prefix}-labels-idx1-ubyte.gz") == (n,)
    ds = data.load("fashion_mnist", "test", data_dir=str(tmp_path))  # empty dir: IDX path.
    _check_spec(ds, 28)
    assert ds.cardinality() == 10000
    images, labels = _take(ds, 5)
    raw = data.read_idx(f"{FASHION_DIR}/t10k-images-idx3-ubyte.gz")[:5]
    np.testing.assert_array_equal(images, np.repeat(raw[..., None], 3, axis=-1))
    np.testing.assert_array_equal(labels, [9, 2, 1, 1, 6])  # t10k's first labels.


def test_fashion_mnist_idx_in_data_dir_and_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "IDX_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", "train", data_dir=str(tmp_path), download=False)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 251
    _write_idx(folder / "train-images-idx3-ubyte.gz", images)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([3, 1, 4]))
    got, labels = _take(data.load("fashion_mnist", "ssl", data_dir=str(tmp_path)))
    np.testing.assert_array_equal(got[..., 2], images)
    np.testing.assert_array_equal(labels, [3, 1, 4])


# ----------------------------------------------------------------------- image folders
def _save(path, array, fmt, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, fmt, **kw)


def _make_folder(root):
    """train/{cat,dog} with 6 good files of odd kinds and 4 bad ones; val/{cat,dog}."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 20, 3)).astype(np.uint8)
    cat, dog = os.path.join(root, "train", "cat"), os.path.join(root, "train", "dog")
    _save(f"{cat}/rgb.jpg", rgb, "JPEG")
    _save(f"{cat}/gray.png", np.full((20, 20), 77, np.uint8), "PNG")
    _save(f"{cat}/sub/rgba.png", np.dstack([rgb, rgb[..., :1]]), "PNG")
    _save(f"{dog}/deep.png", np.full((20, 20), 200 * 257, np.uint16), "PNG")
    Image.fromarray(rgb).convert("CMYK").save(f"{dog}/cmyk.jpg", "JPEG")
    _save(f"{dog}/wide.png", np.zeros((20, 40, 3), np.uint8), "PNG")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG")
    with open(f"{dog}/truncated.jpg", "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    open(f"{dog}/empty.jpg", "wb").close()
    with open(f"{cat}/notes.png", "w") as f:
        f.write("this is text, not a PNG")
    with open(f"{cat}/.DS_Store", "w") as f:
        f.write("hidden files are ignored")
    _save(os.path.join(root, "val", "dog", "v.png"), rgb, "PNG")


def test_image_folder_converts_and_skips_bad_files(tmp_path, caplog):
    _make_folder(str(tmp_path))
    name = f"folder:{tmp_path},size=16"
    meta = data.info(name)
    assert (meta.num_classes, meta.image_size, meta.test_split) == (2, 16, "val")
    with caplog.at_level(logging.WARNING, logger="wmse_tf.data.datasets"):
        ds = data.load(name, "train")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "skipped 3 of 9" in message and "empty: 1" in message
    assert "not an image: 1" in message and "truncated: 1" in message
    _check_spec(ds, 16)
    images, labels = _take(ds)
    assert len(images) == 6 and sorted(labels) == [0, 0, 0, 1, 1, 1]
    means = sorted(images.reshape(6, -1, 3).mean(axis=1).tolist())
    assert [0.0, 0.0, 0.0] in means and [77.0, 77.0, 77.0] in means  # wide black; gray.
    assert [200.0, 200.0, 200.0] in means  # 16-bit PNG scaled to 8 bits.
    _, val_labels = _take(data.load(name, "val"))
    np.testing.assert_array_equal(val_labels, [1])  # classes indexed as in train/.


def test_tiny_imagenet_layout(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    for i, wnid in enumerate(["n02", "n01"]):
        for j in range(2):
            _save(str(base / "train" / wnid / "images" / f"{wnid}_{j}.JPEG"),
                  np.full((64, 64, 3), 10 * i + j, np.uint8), "JPEG", quality=100)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
    _save(str(base / "val" / "images" / "val_0.JPEG"), np.zeros((80, 72, 3), np.uint8), "JPEG")
    _save(str(base / "val" / "images" / "val_1.JPEG"), np.zeros((64, 64, 3), np.uint8), "JPEG")
    (base / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t10\t10\nval_1.JPEG\tn01\t1\t1\t5\t5\n")
    ds = data.load("tiny_imagenet", "ssl", data_dir=str(tmp_path))
    _check_spec(ds, 64)
    images, labels = _take(ds)
    assert sorted(labels) == [0, 0, 1, 1]
    for image, label in zip(images, labels):  # n01 -> 0 holds values 10, 11.
        assert abs(image.mean() - 10 * (1 - label)) < 3
    _, val = _take(data.load("tiny_imagenet", "val", data_dir=str(tmp_path)))
    assert sorted(val.tolist()) == [0, 1]


def test_missing_folder_datasets_name_the_fix(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="tiny-imagenet-200.zip"):
        data.load("tiny_imagenet", "train", data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match=r"imagenet100/\{train,val\}/<wnid>"):
        data.load("imagenet100", "val", data_dir=str(tmp_path))
    with pytest.raises(data.DatasetNotFoundError, match="one sub-folder per class"):
        data.load(f"folder:{tmp_path}/absent", "train")


def test_fit_image_resizes_shorter_side_and_center_crops():
    image = np.zeros((30, 60, 3), np.uint8)
    image[:, 15:45] = 255  # the central square is white.
    out = image_folder.fit_image(tf.constant(image), 10).numpy()
    assert out.shape == (10, 10, 3) and out[:, 1:-1].min() > 250 and out.min() > 200


# ---------------------------------------------------------------- digits and synthetic
def test_digits():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    _check_spec(train, 32)
    x_train, y_train = _take(train)
    x_test, y_test = _take(test)
    assert (len(y_train), len(y_test)) == (1437, 360)
    assert set(y_train) == set(range(10)) and x_train.max() > 200
    assert np.array_equal(x_test[0], _take(data.load("digits", "test"), 1)[0][0])
    mean = x_train.mean() / 255
    assert abs(mean - data.info("digits").mean[0]) < 1e-3


def test_synthetic_is_deterministic_configurable_and_learnable():
    name = "synthetic:size=24,classes=4,train=200,test=100,seed=3"
    meta = data.info(name)
    assert (meta.image_size, meta.num_classes) == (24, 4)
    x_train, y_train = _take(data.load(name, "train"))
    x_test, y_test = _take(data.load(name, "test"))
    assert x_train.shape == (200, 24, 24, 3) and len(y_test) == 100
    np.testing.assert_array_equal(x_test, _take(data.load(name, "test"))[0])
    assert not np.array_equal(x_train[:100], x_test)
    # Classes differ by colour: a nearest-class-mean classifier on mean colour works.
    feats = lambda x: x.reshape(len(x), -1, 3).mean(axis=1)
    centres = np.stack([feats(x_train)[y_train == c].mean(0) for c in range(4)])
    pred = np.argmin(((feats(x_test)[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (pred == y_test).mean() > 0.9
    assert data.load("synthetic", "ssl").element_spec[0].shape == (32, 32, 3)
