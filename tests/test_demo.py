"""The demo command (wmse_tf/demo/command.py, runner.py, report.py) end to end on a tiny synthetic
run (what `make demo` runs, in seconds)."""

import glob
import json
import os
import runpy

import numpy as np
import pytest

from tests import helpers
from wmse_tf.demo import command
from wmse_tf.evaluation import plots
from wmse_tf.export import saved_model as export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_flagfile_is_the_fashion_mnist_config_and_can_be_replaced():
    argv = command.with_default_flagfile(["demo", "--epochs=3"])
    assert argv == ["demo", f"--flagfile={command.DEFAULT_FLAGFILE}", "--epochs=3"]
    assert os.path.exists(command.DEFAULT_FLAGFILE)
    assert command.DEFAULT_FLAGFILE.endswith(os.path.join("configs", "fashion_mnist.flags"))
    assert command.with_default_flagfile(["demo", "--flagfile=x.flags"]) == ["demo", "--flagfile=x.flags"]


def test_demo_prints_config_of_the_fashion_mnist_flagfile(capsys, monkeypatch):
    """`python -m wmse_tf.demo --print_config` in-process (its __main__, as `make demo` runs it):
    the default flagfile's config."""
    monkeypatch.setattr("sys.argv", ["demo", "--print_config"])
    command.FLAGS.unparse_flags()
    try:
        with pytest.raises(SystemExit) as exited:
            runpy.run_module("wmse_tf.demo", run_name="__main__")
    finally:
        command.FLAGS.unparse_flags()
    assert exited.value.code in (0, None)
    cfg = json.loads(capsys.readouterr().out)
    assert cfg.pop("runtime")["onednn"].startswith("oneDNN ops ")
    assert cfg["dataset"] == "fashion_mnist" and cfg["method"] == "wmse"
    assert cfg == json.loads(json.dumps(helpers.parse_flagfile(command.DEFAULT_FLAGFILE)))


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


def test_demo_end_to_end_on_synthetic_data(tmp_path, monkeypatch, capsys):
    """`python -m wmse_tf.demo` in-process (flags parsed as app.run does, then main)."""
    run_dir, export_dir = tmp_path / "run", tmp_path / "exports"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the baselines' cache
    command.FLAGS.unparse_flags()
    try:  # a budgeted run: the 20 s demo budget holds training and the evaluation estimated for it
        argv = command.FLAGS(["demo", "--flagfile=configs/smoke.flags", f"--model_dir={run_dir}",
                           f"--demo_export_dir={export_dir}", "--epochs=1", "--probe_epochs=20", "--map=pca",
                           "--verbose=2", "--time_budget=1m", "--demo_budget=20s", "--w_eps=0.05"])
        code = command.main(argv)
    finally:
        command.FLAGS.unparse_flags()
    captured = capsys.readouterr()
    assert code == 0, captured.out[-3000:] + captured.err[-3000:]
    out = captured.out
    # One table with the three rows and the protocol, then the summary of paths.
    for row in ("W-MSE encoder", "same encoder, random weights", "raw pixels", "protocol:", "linear top-1",
                "5-NN cosine", "written:"):
        assert row in out
    results = json.loads((run_dir / "demo_results.json").read_text())
    assert "[plan] demo budget 20 s" in out and results["training"]["time_budget_seconds"] == 20
    seconds = results["seconds"]
    assert seconds["demo_budget"] == 20 and seconds["evaluate_estimated"] > 0
    assert results["training"]["plan"]["reserved_seconds"] > 0
    for row in ("pixels-*.json", "random-*.json", "random-*.npz"):  # the baselines, cached for next time
        assert glob.glob(str(tmp_path / "cache" / "wmse_tf" / "baselines" / row)), row
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
    assert card["metrics"]["rows"] == rows
    table = out[out.rindex("\nfeatures "):]
    for name, r in rows.items():
        assert r["num_test"] == 128 and r["num_train"] == 512
        assert r["linear"]["top1"] <= r["linear"]["top5"]
        # the printed table shows the JSON's numbers, row by row
        cells = [f"{100 * r['linear']['top1']:.2f}", f"{100 * r['linear']['top5']:.2f}",
                 f"{100 * r['knn']['cosine:5']['top1']:.2f}", f"{100 * r['knn']['euclidean:5']['top1']:.2f}"]
        line = next(line for line in table.splitlines() if line.startswith(name))
        assert line.split()[-4:] == cells, (line, cells)
    # Synthetic classes differ by hue: every feature set is far above chance (25%).
    assert rows["raw pixels"]["knn"]["cosine:5"]["top1"] > 0.5
    assert rows["W-MSE encoder"]["knn"]["cosine:5"]["top1"] > 0.5

