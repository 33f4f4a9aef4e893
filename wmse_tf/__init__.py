"""wmse_tf: W-MSE self-supervised learning in Keras 3 / TensorFlow.

Modules: whitening, objectives, encoders, model, data, augment, pipeline,
train, evaluate, export. Import what you need, e.g.
`from wmse_tf import whitening, objectives`.
"""

__version__ = "0.1.0"
