"""Every ```python block of README.md and zoo/README.md runs, as written, in order per file.

What differs from the docs is in the one table below: textual substitutions (tiny
models) and the names a snippet takes from the reader (datasets, images, labels).
Shell blocks (```sh, bare ```) are not run.
"""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _views_dataset(n=16, size=16, views=2):
    """((view_1, view_2), labels) batches, as SSLModel.fit() takes them."""
    x = tuple(_images(n, size, seed=v) for v in range(views))
    return tf.data.Dataset.from_tensor_slices((x, -np.ones(n, np.int64))).batch(n)


def _labelled_dataset(n=8, size=28):
    return tf.data.Dataset.from_tensor_slices((_images(n, size, seed=1), np.arange(n) % 10)).batch(4)


# file -> (substitutions {documented text: text run}, stand-ins {name: builder}).
STAND_INS = {
    "README.md": (
        {"width=64, input_shape=(32, 32, 3)": "width=4, input_shape=(16, 16, 3)",
         "encoders.projector(64)": "encoders.projector(8, hidden=16)",
         "w_size=128": "w_size=16"},
        {"dataset": _views_dataset, "images": lambda: _images(4, 16)},
    ),
    "zoo/README.md": (
        {},
        {"dataset": _labelled_dataset, "images": lambda: _images(4, 28),
         "uint8_images": lambda: np.round(_images(4, 28) * 255).astype(np.uint8),
         "labels": lambda: np.arange(4) % 10},
    ),
}


def python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)


@pytest.mark.parametrize("doc", sorted(STAND_INS))
def test_python_blocks_run(doc, monkeypatch):
    monkeypatch.chdir(ROOT)  # the snippets use paths relative to the repository root
    with open(os.path.join(ROOT, doc)) as f:
        blocks = python_blocks(f.read())
    assert blocks, f"{doc} has no python block"
    substitutions, stand_ins = STAND_INS[doc]
    source = "\n".join(blocks)
    for documented in substitutions:
        assert documented in source, f"stale stand-in table: {documented!r} is not in {doc} any more"
    namespace = {name: build() for name, build in stand_ins.items()}
    for i, block in enumerate(blocks):
        for documented, run in substitutions.items():
            block = block.replace(documented, run)
        exec(compile(block, f"{doc} python block {i + 1}", "exec"), namespace)
    features = np.asarray(namespace["features"])
    assert features.shape[0] == len(namespace["images"]) and np.isfinite(features).all()
    if doc == "zoo/README.md":
        check_fine_tuned_committed_encoder(namespace)


def check_fine_tuned_committed_encoder(namespace):
    """zoo/README.md's Keras 3 snippet fine-tuned the committed encoder (`model.fit` with AdamW):
    most of its weights moved from the committed ones, in memory only (the files' hashes hold).
    This is the test of `fit()` on a committed zoo encoder (test_finetune: the tiny export's)."""
    from wmse_tf.export import keras_encoder, saved_model as export

    tuned = namespace["encoder"]
    path = tuned.filepath
    committed = keras_encoder.load_encoder_layer(path)
    assert namespace["model"].output_shape == (None, 10)
    moved = [not np.allclose(a.numpy(), b.numpy()) for a, b in zip(committed.weights, tuned.weights)]
    assert len(moved) == len(committed.weights) > 0 and sum(moved) > len(moved) // 2
    assert export.verify_hashes(path) == []


def test_shell_blocks_are_not_python():
    with open(os.path.join(ROOT, "zoo", "README.md")) as f:
        text = f.read()
    assert "docker run" in text and all("docker run" not in b for b in python_blocks(text))
