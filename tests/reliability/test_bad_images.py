"""Bad files in a `folder:` dataset are skipped and counted, odd-but-valid ones converted,
and a few smoke training steps run end to end on it.

Extends tests/test_data.py::test_image_folder_converts_and_skips_bad_files (listing and
decoding) with CMYK JPEG, a JPEG corrupt inside (passes the cheap check: the
ignore_errors safety net) and training on the folder."""

import io
import logging
import os

import numpy as np
from PIL import Image

from tests.reliability.conftest import read_results
from tests.test_train import smoke_config
from wmse_tf.data import datasets as data
from wmse_tf.training import trainer

GOOD = 130  # two steps of 64 images per epoch


def _png(path, rgb, **kwargs):
    Image.fromarray(rgb).save(path, "PNG", **kwargs)


def make_folder(root):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        os.makedirs(os.path.join(root, c))
    for i in range(GOOD):
        rgb = rng.integers(0, 256, (16 + i % 5, 16, 3), dtype=np.uint8)
        _png(os.path.join(root, "ab"[i % 2], f"{i:03d}.png"), rgb)
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    jpeg = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    blob = jpeg.getvalue()
    with open(f"{a}/truncated.jpg", "wb") as f:
        f.write(blob[: len(blob) // 2])
    open(f"{a}/zero.jpg", "wb").close()
    with open(f"{b}/text.png", "w") as f:
        f.write("not a PNG at all\n")
    Image.fromarray((np.full((20, 20), 50000)).astype(np.uint16)).save(f"{b}/sixteen_bit.png")  # mode I;16
    Image.new("CMYK", (20, 20), (0, 128, 255, 30)).save(f"{a}/cmyk.jpg", "JPEG")
    middle = bytearray(blob)  # SOI ... EOI intact, garbage inside: the cheap check passes it
    middle[200:600] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    with open(f"{b}/corrupt_inside.jpg", "wb") as f:
        f.write(bytes(middle))
    return 6  # bad or odd files


def test_training_on_a_folder_with_bad_images(tmp_path, caplog, tally):
    root = str(tmp_path / "images")
    odd = make_folder(root)
    name = f"folder:{root},size=16"
    with caplog.at_level(logging.WARNING):
        images = list(data.load(name, "train").as_numpy_iterator())
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert f"skipped 3 of {GOOD + odd} files" in warnings[0]
    assert "empty: 1" in warnings[0] and "not an image: 1" in warnings[0] and "truncated: 1" in warnings[0]
    # 16-bit PNG, CMYK JPEG converted to RGB uint8; the corrupt-inside JPEG decoded or dropped.
    assert GOOD + 2 <= len(images) <= GOOD + 3
    assert all(x.shape == (16, 16, 3) and x.dtype == np.uint8 for x, _ in images)
    run_dir = tmp_path / "run"
    cfg = smoke_config(run_dir, f"--dataset={name}", "--epochs=2", "--eval_every=0", "--shuffle_buffer=64")
    assert trainer.run(cfg) == 0
    results = read_results(run_dir)
    assert results["step"] == 4 and np.isfinite(results["final"]["loss"])  # 2 epochs of 2 steps
    tally(inputs=GOOD + odd, faults=odd)
