"""`bench.table1 --report`: finished cells -> markdown table, the paper's claims, curve PNGs.

Reads the results JSON of every finished cell (those of the same settings: flagfile,
train args, probe epochs), averages over seeds (mean ± sample standard deviation; the
effective rank column is RankMe of the frozen features, `wmse_tf.evaluation.health`), fills
the marked sections of docs/results.md (text outside the markers is kept) and draws
accuracy against epochs and against wall-clock seconds per method and budget.

A claim "A >= B" on a metric and budget is marked **holds** when mean(A) - mean(B) exceeds
the sum of the two spreads, **does not hold** when it is below minus that sum, else
**inconclusive** (also with fewer than 2 seeds on either side).

Whether the effective rank tracks accuracy is measured, not read off the table (`table1_rank`).
"""

import glob
import json
import os
import statistics

from bench import table1_rank

TABLE_MARKERS = ("<!-- table1:begin -->", "<!-- table1:end -->")
CLAIMS_MARKERS = ("<!-- table1-claims:begin -->", "<!-- table1-claims:end -->")
METRICS = (("linear_top1", "linear top-1"), ("knn_euclidean5", "5-NN Euclidean"))
# (claim, A, B): the claim is A >= B.
CLAIMS = (
    ("W-MSE 4 >= W-MSE 2", "wmse4", "wmse2"),
    ("W-MSE 2 >= NT-Xent contrastive (short budget)", "wmse2", "contrastive"),
    ("W-MSE 2 >= BYOL (short budget)", "wmse2", "byol"),
    ("whitening does not help the contrastive loss: NT-Xent >= NT-Xent on whitened embeddings",
     "contrastive", "contrastive_white"),
    ("normalized MSE without whitening collapses: W-MSE 2 >= normalized MSE", "wmse2", "normmse"),
    ("BatchNorm over all views (this library) >= BatchNorm per view (the reference)",
     "wmse2", "wmse2_bn_per_view"),
)


def load(results_dir, settings):
    """(records of the given settings, number of other records)."""
    recs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        with open(path) as f:
            recs.append(json.load(f))
    mine = [r for r in recs if r.get("settings") == settings]
    return mine, len(recs) - len(mine)


def budget_text(rec):
    return {"epochs": f"{rec['budget_value']:g} epochs", "seconds": f"{rec['budget_value']:g} s"}.get(
        rec["budget"], "-")


def summary(values):
    """(n, mean, spread): spread is the sample standard deviation (0 for one value)."""
    values = [v for v in values if v is not None]
    if not values:
        return 0, None, None
    return len(values), statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def passes(rec, step):
    """Passes over the training split after `step` steps (an epoch of a capped run is shorter)."""
    train, num = rec["train"], rec.get("eval", {}).get("num_train")
    if num and train.get("batch_size"):
        return step * train["batch_size"] / num
    return step / train["steps_per_epoch"]  # a NaN cell: its own epochs


def aggregate(records):
    """{(row, budget text): group} with the records, label and metric summaries."""
    groups = {}
    for rec in records:
        groups.setdefault((rec["row"], budget_text(rec)), []).append(rec)
    out = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r["status"] == "ok"]
        g = {"label": recs[0]["label"], "records": recs, "n": len(ok), "nan": len(recs) - len(ok)}
        for metric, _ in METRICS + (("knn_cosine5", ""), ("effective_rank", "")):
            g[metric] = summary([r["eval"].get(metric) for r in ok])
        g["wall"] = summary([r["train"]["wall_seconds"] for r in recs if "train" in r])
        g["epochs"] = summary([passes(r, r["train"]["step"]) for r in recs if r.get("train", {}).get("step")])
        g["emb_std"] = summary([r["train"]["final"].get("emb_std") for r in recs if "train" in r])
        out[key] = g
    return out


def pct(s):
    n, mean, sd = s
    return "-" if not n else f"{100 * mean:.2f} ± {100 * sd:.2f}"


def rank_text(s):
    """Mean effective rank (RankMe) of the frozen features, '-' for cells evaluated before it was recorded."""
    n, mean, sd = s
    return "-" if not n else f"{mean:.1f} ± {sd:.1f}"


def table_md(groups, rows):
    order = {r.key: i for i, r in enumerate(rows)}
    lines = ["| method | budget | seeds | epochs (passes) | training wall s | linear top-1 (%) | "
             "5-NN Euclidean (%) | 5-NN cosine (%) | effective rank |", "|---|---|---|---|---|---|---|---|---|"]
    budgets = {b: i for i, b in enumerate(budgets_of(groups) + ["-"])}
    for (row, budget), g in sorted(groups.items(), key=lambda kv: (budgets[kv[0][1]], order.get(kv[0][0], 99))):
        seeds = f"{g['n']}" + (f" (+{g['nan']} NaN)" if g["nan"] else "")
        ep = "-" if not g["epochs"][0] else f"{g['epochs'][1]:.2f}"
        wall = "-" if not g["wall"][0] else f"{g['wall'][1]:.0f}"
        lines.append(f"| {g['label']} | {budget} | {seeds} | {ep} | {wall} | {pct(g['linear_top1'])} | "
                     f"{pct(g['knn_euclidean5'])} | {pct(g['knn_cosine5'])} | {rank_text(g['effective_rank'])} |")
    return "\n".join(lines)


def verdict(a, b):
    """'holds' / 'does not hold' / 'inconclusive' for A >= B from (n, mean, spread) summaries."""
    if a[0] < 2 or b[0] < 2:
        return "inconclusive (fewer than 2 seeds)"
    diff, margin = a[1] - b[1], a[2] + b[2]
    return "holds" if diff > margin else "does not hold" if diff < -margin else "inconclusive (within the spread)"


def budgets_of(groups):
    """Budget texts of the trained cells, equal epochs first, by value."""
    key = lambda b: (b.endswith(" s"), float(b.split()[0]))  # noqa: E731
    return sorted({b for _, b in groups if b != "-"}, key=key)


def claims_md(groups):
    head = " | ".join(f"{name}: A - B (A; B) | verdict" for _, name in METRICS)
    lines = [f"| claim (A >= B) | budget | {head} |", "|---|---|" + "---|---|" * len(METRICS)]
    for text, a_key, b_key in CLAIMS:
        for budget in budgets_of(groups) or ["-"]:
            a, b = groups.get((a_key, budget)), groups.get((b_key, budget))
            cells = []
            for metric, _ in METRICS:
                if not a or not b or not a[metric][0] or not b[metric][0]:
                    cells += ["", "not yet measured"]
                    continue
                diff = 100 * (a[metric][1] - b[metric][1])
                cells += [f"{diff:+.2f} ({pct(a[metric])}; {pct(b[metric])})", verdict(a[metric], b[metric])]
            lines.append(f"| {text} | {budget} | " + " | ".join(cells) + " |")
    notes = [f"normalized MSE, {budget}: embedding std at the end of training {g['emb_std'][1]:.4f} "
             f"(collapse: -> 0; spread over the sphere: 1/sqrt(emb))"
             for (row, budget), g in sorted(groups.items()) if row == "normmse" and g["emb_std"][0]]
    return "\n".join(lines + [""] + [f"- {n}" for n in notes + health_notes(groups)])


def health_notes(groups):
    """Per row and budget, what training health said of its cells: the flagged ones (seed, first unhealthy
    step, what was seen first) and how many were not; cells trained before it was recorded are counted apart."""
    notes = []
    for (row, budget), g in sorted(groups.items()):
        trained = [r for r in g["records"] if "train" in r]
        if not trained:
            continue
        known = [r for r in trained if r["train"].get("health") is not None]
        unknown = len(trained) - len(known)
        before = f"{unknown} cell(s) trained before the table recorded it"
        if not known:
            notes.append(f"training health, {g['label']}, {budget}: not recorded ({before})")
            continue
        flagged = [r for r in known if r["train"]["health"].get("first_unhealthy_step") is not None]
        parts = [f"seed {r['seed']} at step {r['train']['health']['first_unhealthy_step']} "
                 f"({'; '.join(sorted(r['train']['health']['seen']))})" for r in flagged]
        text = f"flagged: {', '.join(parts)}" if parts else "no cell flagged"
        notes.append(f"training health, {g['label']}, {budget}: {text} ({len(known) - len(flagged)} of "
                     f"{len(known)} recorded cells not flagged" + (f"; {before})" if unknown else ")"))
    return notes


def curves(groups, img_dir):
    """One PNG per budget: online k-NN (test subset) against epochs and against wall seconds."""
    from wmse_tf.evaluation import plots

    plt = plots._pyplot()
    base = {g["label"]: g["knn_euclidean5"][1] for (row, budget), g in groups.items() if budget == "-" and g["n"]}
    paths, colors = [], {row: i for i, row in enumerate(sorted({row for row, _ in groups}))}
    for budget in budgets_of(groups):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        metric = None
        for (row, b), g in sorted(groups.items()):
            runs = [r["curve"] for r in g["records"] if b == budget and r.get("curve")]
            if not runs:
                continue
            length = min(len(c) for c in runs)
            knn = [statistics.fmean(c[j]["knn"] for c in runs) * 100 for j in range(length)
                   if all(c[j]["knn"] is not None for c in runs)]
            epochs = [passes(g["records"][0], runs[0][j]["step"]) for j in range(len(knn))]
            secs = [statistics.fmean(c[j]["elapsed"] for c in runs) for j in range(len(knn))]
            metric = metric or runs[0][0].get("knn_metric")
            for ax, xs in zip(axes, (epochs, secs)):
                line, = ax.plot(xs, knn, "o-", ms=3, color=f"C{colors[row] % 10}", label=g["label"])
                if g["linear_top1"][0] and xs:
                    ax.plot(xs[-1], 100 * g["linear_top1"][1], "*", ms=10, color=line.get_color())
        for ax, xlabel in zip(axes, ("epochs (passes over the training images)", "training wall-clock (s)")):
            for j, (label, acc) in enumerate(sorted(base.items())):
                ax.axhline(100 * acc, ls=("--", ":")[j % 2], lw=1, color="0.3", label=f"{label} (5-NN, full test set)")
            ax.set(xlabel=xlabel, ylabel="top-1 (%)")
            ax.grid(alpha=0.3)
        axes[0].set_title(f"online 5-NN ({metric or '?'}, test subset); * = linear probe", fontsize=9)
        axes[1].legend(fontsize=7, loc="lower right")
        dataset = next((r.get("dataset") for g in groups.values() for r in g["records"]), None)
        fig.suptitle(f"{dataset}, budget {budget}, mean over seeds", fontsize=10)
        paths.append(table1_rank.save_png(fig, img_dir, "curves", budget))
    return paths


def replace_between(path, markers, text):
    """Puts `text` between the markers in `path` (appended with them when absent)."""
    old = open(path).read() if os.path.exists(path) else ""
    begin, end = markers
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + ("\n\n" if old else "") + block + "\n"
    from wmse_tf import atomic_io

    atomic_io.write_text(path, new)


def report(results_dir, settings, rows, md_path, img_dir, root):
    """Fills md_path's marked sections and draws the curves; returns the markdown."""
    records, other = load(results_dir, settings)
    groups = aggregate(records)
    budgets = budgets_of(groups)
    pngs = (curves(groups, img_dir) + table1_rank.rank_plot(groups, budgets, img_dir)) if groups else []
    md_dir = os.path.dirname(os.path.abspath(md_path))
    figs = "\n".join(f"![{os.path.basename(p)}]({os.path.relpath(p, md_dir)})" for p in pngs)
    tracking = table1_rank.rank_tracking_md(groups, budgets)
    table = (f"{table_md(groups, rows)}\n\n{len(records)} finished cells"
             + (f" ({other} other cells with other settings left out)" if other else "")
             + f"; settings: `{json.dumps(settings)}`.\n\n" + (f"{tracking}\n\n" if tracking else "")
             + figs).rstrip()
    claims = claims_md(groups)
    replace_between(md_path, TABLE_MARKERS, table)
    replace_between(md_path, CLAIMS_MARKERS, claims)
    return f"{table}\n\n{claims}\n\nwritten: {md_path}" + "".join(f", {p}" for p in pngs)
