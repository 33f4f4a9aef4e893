"""What the demo prints: its table of rows, the evaluation protocol and how long it trained.

Example:
  >>> print(format_table(rows, protocol_text(cfg, econf, rows)))
"""


def protocol_text(cfg, econf, rows):
    """One paragraph: the images fitted and scored, and the linear and 5-NN protocols."""
    from wmse_tf.evaluation import evaluator as eval_lib

    first = next(iter(rows.values()))
    return (f"{cfg.dataset}: fit on {first['num_train']} train images, scored on {first['num_test']} test "
            f"images; frozen features of the un-augmented {cfg.image_size}x{cfg.image_size} images "
            f"(raw pixels: the stored images, flattened, in [0, 1]). Linear: {eval_lib.protocol(econf.probe)}. "
            "5-NN: k=5, majority vote, cosine (L2-normalized features) and Euclidean (raw features).")


def format_table(rows, protocol):
    """The rows as a text table; a row read from the cache or shipped with wmse_tf is marked and
    its origin given below the table."""
    from wmse_tf.demo import baseline_rows

    head = ("features", "dim", "linear top-1", "linear top-5", "5-NN cosine", "5-NN Euclid.")
    lines, notes = [head], []
    for name, r in rows.items():
        lin = r.get("linear", {})
        if "shipped" in r:
            notes.append(f"{name} (*): shipped with wmse_tf, {baseline_rows.describe(r['shipped'])}; "
                         "--baselines=compute computes it here")
            name += " (*)"
        elif "cached" in r:
            notes.append(f"{name} (+): computed by an earlier demo on this machine, {r['cached']}")
            name += " (+)"
        lines.append((name, str(r["num_features"]), f"{100 * lin.get('top1', float('nan')):.2f}",
                      f"{100 * lin.get('top5', float('nan')):.2f}",
                      f"{100 * r['knn']['cosine:5']['top1']:.2f}", f"{100 * r['knn']['euclidean:5']['top1']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    fmt = lambda line: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                 for i, (c, w) in enumerate(zip(line, widths)))
    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(line) for line in lines[1:]]
    return "\n".join(out + notes + ["", "protocol: " + protocol])


def training_text(cfg, results):
    """How long this machine trained: epochs, steps (planned by the budget) and seconds."""
    steps = results.get("steps_done", results.get("step"))
    epochs = results.get("epochs_done", steps / results["steps_per_epoch"])
    text = f"{epochs:g} epochs ({steps} steps of {cfg.batch_size} images) in {results['seconds']:.0f} s"
    if results.get("time_budget_seconds"):
        plan = results.get("plan") or {}
        text += (f", planned by --time_budget={results['time_budget_seconds']:g}s from a measured "
                 f"{plan.get('step_seconds', float('nan')):.3f} s/step")
    from wmse_tf.training import resolve

    return text + f", {cfg.mixed_precision}, on {resolve.cpu_description()}"
