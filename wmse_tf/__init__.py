"""wmse_tf: W-MSE self-supervised learning in Keras 3 / TensorFlow.

Layers, bottom to top; a module imports only from its own layer and those below it
(tests/test_layout.py checks it):

  atomic_io, errors, lazy, cli  the one atomic writer, user errors, re-exports, the CLI runner
  core/                   whitening, objectives, encoders, BatchNorm, SSLModel
  data/                   datasets, augmentation, the eval/serve transform, pipelines
  methods/                the registry of methods and their builders (W-MSE, NT-Xent, BYOL)
  export/                 SavedModel export, serving graph, the fine-tunable Keras layer
  evaluation/             features, linear probe, k-NN, evaluate(), plots
  training/               config (no TF), `auto` resolution, trainer, loop, checkpoints, budget
  train, evaluate, demo   the commands (`python -m wmse_tf.train|evaluate|demo`)

e.g. `from wmse_tf.core import whitening, objectives`, `wmse_tf.data.load(name, split)`,
`wmse_tf.export.load_encoder_layer(path)`, `wmse_tf.evaluation.evaluate(path, EvalConfig())`.
"""

__version__ = "0.2.0"

from wmse_tf import onednn as _onednn, tf_log as _tf_log

_tf_log.quiet()  # in a command (python -m wmse_tf.train, zoo.build, ...): no TensorFlow C++ log unless asked
_onednn.install()  # TensorFlow's oneDNN kernels decided before TF is imported (docs/training.md#onednn)
