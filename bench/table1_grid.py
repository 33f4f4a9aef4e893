"""Table 1's grid: its rows (train flags on top of the flagfile, or evaluation only), budgets and
cells (row x budget x seed), and the shards that split the cells between processes.

Example:
  >>> cells = make_cells(ROWS, BUDGETS, [0, 1], budget_epochs=4, budget_seconds=240)[0::2]
"""

import dataclasses

from absl import app


@dataclasses.dataclass(frozen=True)
class Row:
    """A row: train flags on top of the flagfile ({half_batch}: half its batch), or eval only."""

    key: str
    label: str
    flags: tuple = ()
    kind: str = "train"  # train | random | pixels


ROWS = (
    Row("wmse2", "W-MSE 2 (BN over all views)", ("--method=wmse", "--num_views=2")),
    Row("wmse4", "W-MSE 4", ("--method=wmse", "--num_views=4", "--batch_size={half_batch}")),
    Row("contrastive", "NT-Xent contrastive", ("--method=contrastive", "--num_views=2")),
    Row("byol", "BYOL", ("--method=byol", "--num_views=2")),
    Row("contrastive_white", "NT-Xent on whitened embeddings",
        ("--method=contrastive", "--num_views=2", "--whiten_contrastive")),
    Row("normmse", "normalized MSE, no whitening", ("--method=normmse", "--num_views=2")),
    Row("wmse2_bn_per_view", "W-MSE 2, BN per view", ("--method=wmse", "--num_views=2", "--bn_per_view")),
    Row("random", "random weights (same encoder)", kind="random"),
    Row("pixels", "raw pixels", kind="pixels"),
)
ROW_BY_KEY = {r.key: r for r in ROWS}
BUDGETS = ("epochs", "seconds")


@dataclasses.dataclass(frozen=True)
class Cell:
    row: Row
    budget: str  # epochs | seconds | none (evaluation-only rows)
    budget_value: float
    seed: int

    @property
    def budget_label(self):
        return {"epochs": f"e{self.budget_value:g}", "seconds": f"t{self.budget_value:g}s"}.get(self.budget, "")

    @property
    def name(self):
        return "__".join(filter(None, [self.row.key, self.budget_label, f"seed{self.seed}"]))


def make_cells(rows, budgets, seeds, budget_epochs, budget_seconds):
    """Evaluation-only cells first, then per budget (epochs first: seconds plans reuse their
    throughput), per seed, per row."""
    values = {"epochs": budget_epochs, "seconds": budget_seconds}
    cells = [Cell(r, "none", 0, s) for s in seeds for r in rows if r.kind != "train"]
    return cells + [Cell(r, b, values[b], s) for b in BUDGETS if b in budgets for s in seeds
                    for r in rows if r.kind == "train"]


def parse_shard(text):
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise app.UsageError(f"--shard={text}: must be i/n with 0 <= i < n, e.g. 0/2")
    return i, n
