"""The CPU demo (`python -m wmse_tf.demo`, `make demo`): train W-MSE on Fashion-MNIST, evaluate, export.

Owns: `command` (its flags and main), `runner` (`run(cfg, ...)`: train -> evaluate with
baselines -> plots -> export), `report` (the printed table), the demo's plan of its wall-clock
budget (`cost`: the evaluation's seconds estimated on this machine before training, which
`training.budget` keeps free), its baseline rows (`baselines`: trained encoder, random weights,
raw pixels, cached per machine) and the rows shipped for its default recipe (`baseline_rows`,
data in `shipped_rows/`).

May import: everything of wmse_tf (it is a command); the library imports nothing of it.
"""

from wmse_tf.lazy import reexports

__getattr__ = reexports(__name__, {"main": "command:main", "run": "runner:run"})  # main, run
