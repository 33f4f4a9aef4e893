"""Time to accuracy of the paper's methods: `bench.recipes` cells of the method recipes (the demo's
encoder and augmentation, only the method changed) at equal training seconds, as a table, the paper's
claims re-read at each budget, and accuracy against training seconds, written between markers of
docs/results.md by `python -m bench.recipes --report`. Only cells scored with the reference's 500-epoch
probe count."""

import os

from bench.recipes_report import METRICS, save_figure, score_cells, steps_cell
from bench.table1_report import replace_between, summary, verdict

MARKERS = ("<!-- methods-time:begin -->", "<!-- methods-time:end -->")
# (recipe of bench.recipes, method): the W-MSE 2 row is the demo's recipe itself.
METHODS = (("p32_erase", "W-MSE 2"), ("m_wmse4", "W-MSE 4"), ("m_contrastive", "NT-Xent contrastive"),
           ("m_byol", "BYOL"), ("m_normmse", "normalized MSE, no whitening"))
# (claim, A, B): the claim is A >= B.
CLAIMS = (("W-MSE 4 >= W-MSE 2", "m_wmse4", "p32_erase"),
          ("W-MSE 2 >= NT-Xent contrastive", "p32_erase", "m_contrastive"),
          ("W-MSE 2 >= BYOL", "p32_erase", "m_byol"),
          ("whitening matters: W-MSE 2 >= normalized MSE", "p32_erase", "m_normmse"))
PROBE_EPOCHS = 500


def cells(records):
    """{(recipe, seconds): [records]} of the method recipes scored with the 500-epoch probe."""
    keys = {k for k, _ in METHODS}
    out = {}
    for r in records:
        if r["recipe"] in keys and r["probe_epochs"] == PROBE_EPOCHS:
            out.setdefault((r["recipe"], r["seconds"]), []).append(r)
    return out


def table_md(grouped):
    lines = ["| method | training s | seeds | step s | steps (epochs) | " + " | ".join(m for _, m in METRICS) + " |",
             "|" + "---|" * (5 + len(METRICS))]
    for seconds in sorted({s for _, s in grouped}):
        for key, name in METHODS:
            recs = grouped.get((key, seconds))
            if not recs:
                continue
            lines.append(f"| {name} | {seconds:g} | {len(recs)} | {recs[0]['timing']['step_seconds']:.3f} | "
                         f"{steps_cell(recs[0])} | {score_cells(recs)} |")
    return "\n".join(lines)


def claims_md(grouped):
    head = " | ".join(f"{name}: A - B | verdict" for _, name in METRICS[::2])
    lines = [f"| claim (A >= B) | training s | {head} |", "|---|---|" + "---|---|" * 2]
    for text, a_key, b_key in CLAIMS:
        for seconds in sorted({s for _, s in grouped}):
            a, b = grouped.get((a_key, seconds)), grouped.get((b_key, seconds))
            if not a or not b:
                continue
            row = []
            for metric, _ in METRICS[::2]:
                sa, sb = summary([r["eval"][metric] for r in a]), summary([r["eval"][metric] for r in b])
                row += [f"{100 * (sa[1] - sb[1]):+.2f}", verdict(sa, sb)]
            lines.append(f"| {text} | {seconds:g} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(grouped, img_dir):
    """Linear (solid) and 5-NN cosine (dashed) top-1 against training seconds, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, name) in enumerate(METHODS):
        points = sorted((s, recs) for (k, s), recs in grouped.items() if k == key)
        if not points:
            continue
        for metric, style in (("linear_top1", "o-"), ("knn_cosine5", "s--")):
            ys = [100 * summary([r["eval"][metric] for r in recs])[1] for _, recs in points]
            ax.plot([s for s, _ in points], ys, style, color=f"C{i}", label=name if metric == "linear_top1" else None)
    ax.set(xlabel="training seconds (steps x timed step)", ylabel="top-1 (%), Fashion-MNIST test set",
           title="solid: linear probe, dashed: 5-NN cosine")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, img_dir, "methods_time_to_accuracy.png")


def report(records, md_path, img_dir):
    """Fills md_path's marked section (if it has the markers) and draws the plot; returns the markdown."""
    grouped = cells(records)
    if not grouped:
        return ""
    png = plot(grouped, img_dir)
    machines = sorted({r["machine"] for recs in grouped.values() for r in recs})
    text = (table_md(grouped) + "\n\n" + claims_md(grouped) + f"\n\nMachine: {'; '.join(machines)}.\n\n"
            f"![time to accuracy]({os.path.relpath(png, os.path.dirname(os.path.abspath(md_path)))})")
    replace_between(md_path, MARKERS, text)
    return text
