"""`bench.recipes --report`: the study's table (mean and spread over seeds per recipe and budget) and
its accuracy-vs-training-seconds plot, written between markers of docs/recipes.md."""

import glob
import os

from bench import table1_cell as cell_lib
from bench.table1_report import replace_between, summary

MARKERS = ("<!-- recipes:begin -->", "<!-- recipes:end -->")
METRICS = (("linear_top1", "linear"), ("knn_cosine5", "5-NN cos"), ("knn_euclidean5", "5-NN eucl"))


def load(results_dir):
    """Finished cells evaluated with the reference's 500-epoch probe, and the others (pruning)."""
    recs = [cell_lib.read_json(p) for p in sorted(glob.glob(os.path.join(results_dir, "*__seed*.json")))]
    return [r for r in recs if r and r.get("eval")]


def groups(records):
    """{(recipe, seconds, probe_epochs): [records]}."""
    out = {}
    for r in records:
        out.setdefault((r["recipe"], r["seconds"], r["probe_epochs"]), []).append(r)
    return out


def pct(values):
    n, mean, sd = summary(values)
    return "-" if not n else f"{100 * mean:.2f}" + (f" ± {100 * sd:.2f}" if n > 1 else "")


def steps_cell(record):
    """'steps (passes over the training images)' of a cell."""
    passes = record["train"]["step"] * record["train"]["batch_size"] / record["eval"]["num_train"]
    return f"{record['train']['step']} ({passes:.1f})"


def score_cells(records):
    """The METRICS columns of a group of cells (mean ± spread over seeds), joined as table cells."""
    return " | ".join(pct([r["eval"][m] for r in records]) for m, _ in METRICS)


def timed_as(record):
    """' (as `other`)' when the cell's step time is another recipe's (the same computation)."""
    timed = record["timing"].get("recipe", record["recipe"])
    return "" if timed == record["recipe"] else f" (as `{timed}`)"


def table_md(grouped, recipes):
    order = {r.key: i for i, r in enumerate(recipes)}
    lever = {r.key: r.lever for r in recipes}
    lines = ["| recipe | what changes | training s | probe epochs | seeds | step s | precision | steps (epochs) | "
             + " | ".join(m for _, m in METRICS) + " |", "|" + "---|" * (8 + len(METRICS))]
    for (key, seconds, probe), recs in sorted(grouped.items(), key=lambda kv: (kv[0][1], -kv[0][2], order.get(
            kv[0][0], 99))):
        r0 = recs[0]
        lines.append(f"| `{key}` | {lever.get(key, r0['lever'])} | {seconds:g} | {probe} | {len(recs)} | "
                     f"{r0['timing']['step_seconds']:.3f}{timed_as(r0)} | {r0['mixed_precision']} | "
                     f"{steps_cell(r0)} | {score_cells(recs)} |")
    return "\n".join(lines)


def plot(grouped, img_dir, pixels=None):
    """Left: each cell's online 5-NN (the training run's monitor, on its test subset) against training
    seconds at its timed step time (steps x step seconds). Right: final linear and 5-NN cosine top-1 on
    the full test set per recipe, with the raw pixels' lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    cells = sorted(grouped, key=lambda c: (c[1], c[0]))  # by budget, then recipe
    colours = plt.get_cmap("tab20")
    for x, cell in enumerate(cells):
        (key, seconds, _), recs = cell, grouped[cell]
        colour = colours(x % 20)
        for r in recs:
            pts = [(p["step"] * r["timing"]["step_seconds"], 100 * p["knn"]) for p in r["curve"] if p.get("knn")]
            left.plot(*zip(*pts), "o-", ms=3, color=colour, label=f"{key} ({seconds:g} s)" if r is recs[0] else None)
        for metric, marker in (("linear_top1", "s"), ("knn_cosine5", "o")):
            right.plot(x, 100 * summary([r["eval"][metric] for r in recs])[1], marker, color=colour)
    left.set(xlabel="training seconds (steps x timed step)", ylabel="online 5-NN top-1 (%, test subset)")
    left.legend(fontsize=6, ncol=2)
    right.set_xticks(range(len(cells)), [f"{k} ({s:g} s)" for k, s, _ in cells], rotation=40, ha="right", fontsize=7)
    right.set(ylabel="top-1 (%), full test set", title="square: linear, circle: 5-NN cosine; gray: raw pixels")
    if pixels:
        for metric, ls in (("linear_top1", "--"), ("knn_cosine5", ":")):
            right.axhline(100 * pixels[metric], color="gray", ls=ls, lw=1)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return save_figure(fig, img_dir, "recipes_accuracy_vs_seconds.png")


def save_figure(fig, img_dir, name):
    """Writes and closes a figure as `<img_dir>/<name>` (atomically); its path."""
    from wmse_tf.evaluation import plots

    os.makedirs(img_dir, exist_ok=True)
    fig.tight_layout()
    path = os.path.join(img_dir, name)
    plots._save(fig, path, 100)
    plots._pyplot().close(fig)
    return path


def report(results_dir, recipes, md_path, img_dir):
    """Fills md_path's marked section and draws the plot; returns the markdown."""
    records = load(results_dir)
    grouped = groups(records)
    pixels = cell_lib.read_json(os.path.join(os.path.dirname(results_dir.rstrip("/")), "table1_float32",
                                             "pixels__seed0.json"))
    png = plot(grouped, img_dir, pixels and pixels["eval"]) if grouped else None
    machines = sorted({r["machine"] for r in records})
    text = table_md(grouped, recipes) + f"\n\n{len(records)} cells; machine: {'; '.join(machines)}."
    if png:
        text += f"\n\n![accuracy vs training seconds]({os.path.relpath(png, os.path.dirname(os.path.abspath(md_path)))})"
    replace_between(md_path, MARKERS, text)
    return text
