"""Training: the config, `auto` resolution, the loop and everything a run writes.

Owns: `options` (every training option declared once: name, type, default, choices, help),
`config` (TrainConfig: those options, validated, JSON round trip; a leaf that imports no
TensorFlow), `resolve` (every `auto` value, from the hardware), `trainer` (one run: resolve ->
strategy -> model -> data -> callbacks -> loop -> export), `loop` (strategy.run of the
per-replica step), `callbacks`, `checkpoint`, `lock`, `run_log`, `schedules`, `budget`
(--time_budget), `distribute` (strategies).

May import: every package below it (`core`, `data`, `methods`, `export`, `evaluation`) and
`wmse_tf.atomic_io` / `wmse_tf.errors`; not the entry points (`wmse_tf.train`, `.evaluate`, `.demo`).
Importing the package (and `training.options` / `training.config`) loads no TensorFlow.
"""
