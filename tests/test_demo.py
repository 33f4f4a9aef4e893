"""The demo path end to end on a tiny synthetic run (what `make demo` runs, in seconds)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from wmse_tf import demo, export, plots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_flagfile_is_the_fashion_mnist_config_and_can_be_replaced():
    argv = demo.with_default_flagfile(["demo", "--epochs=3"])
    assert argv == ["demo", f"--flagfile={demo.DEFAULT_FLAGFILE}", "--epochs=3"]
    assert os.path.exists(demo.DEFAULT_FLAGFILE)
    assert demo.DEFAULT_FLAGFILE.endswith(os.path.join("configs", "fashion_mnist.flags"))
    assert demo.with_default_flagfile(["demo", "--flagfile=x.flags"]) == ["demo", "--flagfile=x.flags"]


def test_demo_prints_config_of_the_fashion_mnist_flagfile():
    proc = subprocess.run([sys.executable, "-m", "wmse_tf.demo", "--print_config"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = json.loads(proc.stdout)
    assert cfg["dataset"] == "fashion_mnist" and cfg["method"] == "wmse"


def test_feature_map_and_curves_are_small_pngs(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    feats = rng.normal(size=(60, 8)) + 3 * np.eye(8)[labels]
    path = plots.feature_map({"a": (feats, labels), "b": (feats[:, ::-1], labels)}, str(tmp_path / "m.png"),
                             method="tsne", max_points=50)
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="method"):
        plots.embed_2d(feats, "umap")
    (tmp_path / "run").mkdir()
    rows = [{"epoch": e, "step": 10 * e, "loss": 1.0 / e, "knn_acc": 0.5 + 0.1 * e} for e in (1, 2, 3)]
    (tmp_path / "run" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = plots.training_curves(str(tmp_path / "run"), str(tmp_path / "c.png"), {"random": 0.4})
    assert os.path.getsize(curves) < 200_000


def test_demo_end_to_end_on_synthetic_data(tmp_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "exports"
    cmd = [sys.executable, "-m", "wmse_tf.demo", "--flagfile=configs/smoke.flags", f"--model_dir={run_dir}",
           f"--demo_export_dir={export_dir}", "--epochs=1", "--probe_epochs=20", "--map=pca", "--verbose=2"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # One table with the three rows and the protocol, then the summary of paths.
    for row in ("W-MSE encoder", "same encoder, random weights", "raw pixels", "protocol:", "linear top-1",
                "5-NN cosine", "written:"):
        assert row in out
    results = json.loads((run_dir / "demo_results.json").read_text())
    paths = results["paths"]
    for key in ("training_curves", "feature_map"):
        assert open(paths[key], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(paths[key]) < 200_000
    for key in ("encoder", "model_card", "log", "tensorboard"):
        assert os.path.exists(paths[key]), key
    assert paths["export"] == str(export_dir / "wmse2_synthetic" / "1")
    card = export.read_card(paths["export"])
    assert card["dataset"].startswith("synthetic") and "rows" in card["metrics"]
    assert export.verify_hashes(paths["export"]) == []
    rows = results["rows"]
    assert set(rows) == {"W-MSE encoder", "same encoder, random weights", "raw pixels"}
    for r in rows.values():
        assert r["num_test"] == 128 and r["num_train"] == 512
        assert 0.0 <= r["linear"]["top1"] <= r["linear"]["top5"] <= 1.0
        assert 0.0 <= r["knn"]["cosine:5"]["top1"] <= 1.0
    # Synthetic classes differ by hue: every feature set is far above chance (25%).
    assert rows["raw pixels"]["knn"]["cosine:5"]["top1"] > 0.5
    assert rows["W-MSE encoder"]["knn"]["cosine:5"]["top1"] > 0.5


def test_checkpoint_restores_from_a_relative_model_dir(tmp_path, monkeypatch):
    """A second `make demo` resumes runs/fashion_mnist, a relative path (was doubled: dir/dir/ckpt-N)."""
    import keras

    from wmse_tf import checkpoint

    monkeypatch.chdir(tmp_path)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint.Checkpointer(os.path.join("runs", "x"), model).save(7)
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert checkpoint.Checkpointer(os.path.join("runs", "x"), other).restore() == 7
    np.testing.assert_array_equal(model.get_weights()[0], other.get_weights()[0])
