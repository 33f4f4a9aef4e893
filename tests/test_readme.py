"""Every ```python block of README.md and zoo/README.md runs, as written, in order per file;
the docs' links lead somewhere.

What differs from the docs is in the one table below: textual substitutions (tiny
models) and the names a snippet takes from the reader (datasets, images, labels). The
README's quickstart needs none: it builds its own views and trains as written.
Shell blocks (```sh, bare ```) are not run.
"""

import glob
import os
import re

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


def _labelled_dataset(n=8, size=28):
    return tf.data.Dataset.from_tensor_slices((_images(n, size, seed=1), np.arange(n) % 10)).batch(4)


# file -> (substitutions {documented text: text run}, stand-ins {name: builder}).
STAND_INS = {
    "README.md": ({}, {}),
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
    if doc == "README.md":  # the quickstart trained one epoch of its own views: 64 images, batch 32
        assert int(namespace["ssl"].optimizer.iterations) == 2
        assert features.shape == (64, 64)
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


# Links: every page of docs/ is reachable from the README, and every relative link of the
# README, the CHANGELOG, docs/ and zoo/README.md (and every docs/<page>.md#<section> the
# library prints, e.g. in a training-health warning) names a file and a section that exist.
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
LINKED_FROM = [os.path.join(ROOT, name) for name in ("README.md", "CHANGELOG.md", "zoo/README.md")] + DOCS


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _anchors(path):
    """GitHub's section anchors of a Markdown file (lower case, punctuation dropped, spaces -> -)."""
    text = re.sub(r"^```.*?^```", "", _read(path), flags=re.M | re.S)
    seen, anchors = {}, set()
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path):
    text = re.sub(r"^```.*?^```", "", _read(path), flags=re.M | re.S)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def test_readme_stays_a_newcomers_page():
    """At most 100 lines; the demo's rows in one marked block (the rows change with the recipe)."""
    text = _read(os.path.join(ROOT, "README.md"))
    assert len(text.splitlines()) <= 100
    assert text.count("<!-- demo-table:begin -->") == text.count("<!-- demo-table:end -->") == 1


def test_every_doc_page_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, t.split("#")[0])) for t in _links(os.path.join(ROOT, "README.md"))}
    assert [os.path.relpath(d, ROOT) for d in DOCS if d not in linked] == []


@pytest.mark.parametrize("doc", [os.path.relpath(d, ROOT) for d in LINKED_FROM])
def test_relative_links_name_existing_files_and_sections(doc):
    path = os.path.join(ROOT, doc)
    broken = []
    for target in _links(path):
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            broken.append(target)
        elif anchor and dest.endswith(".md") and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{doc}: broken links"


def test_sections_the_library_points_to_exist():
    sources = glob.glob(os.path.join(ROOT, "wmse_tf", "**", "*.py"), recursive=True)
    sources += glob.glob(os.path.join(ROOT, "bench", "*.py")) + glob.glob(os.path.join(ROOT, "zoo", "*.py"))
    cited = {m for s in sources for m in re.findall(r"docs/(\w+\.md)#([\w-]+)", _read(s))}
    assert cited, "no docs/<page>.md#<section> found in the sources"
    assert sorted(c for c in cited if c[1] not in _anchors(os.path.join(ROOT, "docs", c[0]))) == []
