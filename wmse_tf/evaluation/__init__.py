"""Evaluation of frozen encoders: features, the linear probe, k-NN, plots.

Owns: `features` (frozen features of a split from a Keras encoder or a SavedModel, .npz cache),
`linear_probe` (the reference protocol on Keras' Dense and Adam), `knn` (k-NN in TF ops),
`evaluator` (`evaluate(path, EvalConfig())`: a run or an export -> probe + k-NN results),
`plots` (training curves, 2-D maps of features).

May import: `wmse_tf.atomic_io`, `wmse_tf.errors`, `core`, `data`, `methods` and `export`; nothing above.
"""

from wmse_tf.lazy import reexports

__getattr__ = reexports(__name__, {"evaluate": "evaluator:evaluate", "EvalConfig": "evaluator:EvalConfig"})  # evaluate, EvalConfig
