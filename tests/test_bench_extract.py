"""Tests of bench/extract.py's timing and table (the runtimes themselves: tests/test_export_formats.py)."""

import json

import numpy as np

from bench import extract


def test_time_one_runs_whole_batches_only():
    seen = []
    speed = extract.time_one(lambda x: seen.append(len(x)), np.zeros((10, 2, 2, 3), np.uint8), 4)
    assert seen == [4, 4] and speed > 0  # 8 images timed, the last 2 (less than a batch) not sent


def test_table_gives_medians_and_ratios_to_the_savedmodel():
    speeds = {("savedmodel", 1): [100.0, 90.0, 110.0], ("litert", 1): [300.0, 200.0, 400.0],
              ("savedmodel", 32): [1000.0], ("litert", 32): [500.0]}
    rows = extract.table(speeds, ["savedmodel", "litert"], [1, 32], {"savedmodel": "float32"}).splitlines()
    assert rows[0].startswith("| runtime | computes in | batch 1: img/s (x SavedModel) | batch 32")
    assert rows[2] == "| savedmodel | float32 | 100 (1.00x) | 1,000 (1.00x) |"
    assert rows[3] == "| litert |  | 300 (3.00x) | 500 (0.50x) |"


def test_each_runtime_says_what_it_computes_in(tmp_path):
    """From the cards: the new SavedModel's serving_precision, an old card's training policy; the files' kind."""
    new, old = tmp_path / "2", tmp_path / "1"
    for path, card in ((new, {"serving_precision": "float32", "flags": {"mixed_precision": "mixed_bfloat16"}}),
                       (old, {"flags": {"mixed_precision": "mixed_bfloat16"}})):
        path.mkdir()
        (path / "model_card.json").write_text(json.dumps(card))
    names = ["savedmodel", "savedmodel_v1", "litert", "litert_float16", "onnx_int8", "grpc"]
    assert extract.precisions(str(new), names, ("savedmodel_v1", str(old))) == {
        "savedmodel": "float32", "savedmodel_v1": "bfloat16", "litert": "float32",
        "litert_float16": "float16 weights, float32 compute", "onnx_int8": "int8 dynamic range", "grpc": "float32"}


def test_the_avx2_stand_in_is_recognised(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert extract.stand_in()
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # oneDNN on: not how TensorFlow runs on such a CPU
    assert not extract.stand_in()
