"""The math core: whitening, the W-MSE objective, encoders and the SSLModel that trains them.

Owns: `whitening` (batched Cholesky whitening), `objectives` (W-MSE, normalized MSE),
`encoders` (ResNet-18/34/50 + projector), `batchnorm` (fused BatchNorm), `model` (SSLModel:
one encoder call on all views, NaN guard, whitening health metrics), `archs` (the names of
architectures and stems, no TensorFlow), `tf_compat` (the TF symbols outside TF2's public API).

May import: nothing of wmse_tf outside `core` (this package is the bottom layer).
Importing the package itself loads no TensorFlow (`core.archs` is read by the training config).
"""
