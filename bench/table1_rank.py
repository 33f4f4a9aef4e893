"""Does the effective rank track accuracy in Table 1? Spearman's rank correlation between the
rank and the linear top-1 over the cells (each seed a cell) of a budget, for every trained cell,
for the trained cells of methods that do not collapse (all but normalized MSE), and with the
random-weights cells added; raw pixels (another feature dimension) are left out. A scatter of
the cells (table1_rank_vs_linear_<budget>.png) goes beside the curves (`table1_report`).

Example:
  >>> print(rank_tracking_md(groups, ["4 epochs"]))   # groups: table1_report.aggregate(records)
"""

import os

COLLAPSING = ("normmse",)  # rows that collapse by design: left out of the "healthy methods" correlation


def rank_cells(groups, budget):
    """{set name: [(row, label, effective rank, linear top-1)]} of the cells of `budget` with both
    values: "trained", "trained, healthy methods" (without COLLAPSING) and "trained + random weights"."""
    def cells(pick):
        return [(row, g["label"], r["eval"]["effective_rank"], r["eval"]["linear_top1"])
                for (row, b), g in sorted(groups.items()) if pick(row, b) for r in g["records"]
                if r["status"] == "ok" and r["eval"].get("effective_rank") is not None
                and r["eval"].get("linear_top1") is not None]

    trained = cells(lambda row, b: b == budget)
    return {"trained": trained,
            "trained, healthy methods": [c for c in trained if c[0] not in COLLAPSING],
            "trained + random weights": trained + cells(lambda row, b: row == "random")}


def rank_tracking_md(groups, budgets):
    """Lines of Spearman's rho (and its p-value) between effective rank and linear top-1, per budget of
    `budgets` (budget texts, as `table1_report.budgets_of` gives them)."""
    from scipy import stats

    lines = []
    for budget in budgets:
        for name, cells in rank_cells(groups, budget).items():
            if len(cells) >= 3:
                rho, p = stats.spearmanr([c[2] for c in cells], [c[3] for c in cells])
                p_text = "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
                lines.append(f"- {budget}, {name} ({len(cells)} cells): Spearman rho = {rho:+.2f} ({p_text})")
    if not lines:
        return ""
    return ("Does the effective rank track linear top-1? Spearman's rank correlation over the cells (each "
            "seed a cell; raw pixels left out):\n" + "\n".join(lines))


def rank_plot(groups, budgets, img_dir):
    """One PNG per budget: each cell's effective rank against its linear top-1; the paths."""
    from wmse_tf.evaluation import plots

    plt = plots._pyplot()
    paths = []
    for budget in budgets:
        cells = rank_cells(groups, budget)["trained + random weights"]
        if len(cells) < 3:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for i, row in enumerate(dict.fromkeys(c[0] for c in cells)):
            mine = [c for c in cells if c[0] == row]
            ax.plot([c[2] for c in mine], [100 * c[3] for c in mine], "o", color=f"C{i % 10}", label=mine[0][1])
        ax.set(xlabel="effective rank of the frozen features (RankMe)", ylabel="linear top-1 (%)",
               title=f"budget {budget}: one point per cell (seed)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        paths.append(save_png(fig, img_dir, "rank_vs_linear", budget))
    return paths


def save_png(fig, img_dir, kind, budget):
    """Writes and closes a figure of Table 1 as `<img_dir>/table1_<kind>_<budget>.png`; its path."""
    from wmse_tf.evaluation import plots

    fig.tight_layout()
    path = os.path.join(img_dir, f"table1_{kind}_{budget.replace(' ', '')}.png")
    plots._save(fig, path, 80)
    plots._pyplot().close(fig)
    return path
