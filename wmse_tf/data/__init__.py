"""Data: datasets, augmentation, the evaluation transform and the tf.data pipelines.

Owns: `info` (what a dataset name means: sizes, splits, mean/std; no TensorFlow),
`datasets` (`load(name, split)`: TFDS with download on first use, IDX, image folders, digits,
synthetic), `tfds`, `folders`, `augment_config` (recipes, no TensorFlow), `augment` (seeded
views), `resampling` (PIL-style crop/resize/flip as matmuls), `eval_transform` (the ONE
eval/serve transform), `pipeline` (`ssl_dataset`, `eval_dataset`).

May import: `wmse_tf.atomic_io`, `wmse_tf.errors` and `core`; nothing above.
Importing the package loads no TensorFlow; `wmse_tf.data.load` is `datasets.load`.
"""

from wmse_tf.lazy import reexports

__getattr__ = reexports(__name__, {"load": "datasets:load", "info": "info:info"})  # load, info
