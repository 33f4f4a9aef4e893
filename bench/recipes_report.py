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


def table_md(grouped, recipes):
    order = {r.key: i for i, r in enumerate(recipes)}
    lever = {r.key: r.lever for r in recipes}
    lines = ["| recipe | what changes | training s | probe epochs | seeds | step s | precision | steps (epochs) | "
             + " | ".join(m for _, m in METRICS) + " |", "|" + "---|" * (8 + len(METRICS))]
    for (key, seconds, probe), recs in sorted(grouped.items(), key=lambda kv: (kv[0][1], -kv[0][2], order.get(
            kv[0][0], 99))):
        r0 = recs[0]
        passes = r0["train"]["step"] * r0["train"]["batch_size"] / r0["eval"]["num_train"]
        lines.append(f"| `{key}` | {lever.get(key, r0['lever'])} | {seconds:g} | {probe} | {len(recs)} | "
                     f"{r0['timing']['step_seconds']:.3f} | {r0['mixed_precision']} | {r0['train']['step']} "
                     f"({passes:.1f}) | " + " | ".join(pct([r['eval'][m] for r in recs]) for m, _ in METRICS) + " |")
    return "\n".join(lines)


def plot(grouped, img_dir, pixels=None):
    """Final linear and 5-NN cosine top-1 against training seconds, one line per recipe (reference probe)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    by_recipe = {}
    for (key, seconds, probe), recs in grouped.items():
        if probe == 500:
            by_recipe.setdefault(key, []).append((seconds, recs))
    for key, points in sorted(by_recipe.items()):
        points.sort(key=lambda p: p[0])
        for ax, (metric, label) in zip(axes, METRICS[:2]):
            ys = [100 * summary([r["eval"][metric] for r in recs])[1] for _, recs in points]
            ax.plot([s for s, _ in points], ys, "o-", label=key)
            ax.set(xlabel="training seconds", ylabel=f"{label} top-1 (%)", xscale="log")
    for ax, (metric, label) in zip(axes, METRICS[:2]):
        if pixels:
            ax.axhline(100 * pixels[metric], color="gray", ls="--", label="raw pixels")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    os.makedirs(img_dir, exist_ok=True)
    path = os.path.join(img_dir, "recipes_accuracy_vs_seconds.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
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
