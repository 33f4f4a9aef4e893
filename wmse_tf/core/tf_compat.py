"""The TensorFlow symbols outside TF2's public API that wmse_tf uses, each in one place.

Each wrapper has a canary in tests/test_tf_compat.py that compares it to NumPy and
fails when TensorFlow changes the symbol's signature or behaviour.

  fused_batch_norm_train   tf.compat.v1.nn.fused_batch_norm: TF2 has no public fused
                           batch norm (tf.nn has only the unfused batch_normalization);
                           tf.raw_ops.FusedBatchNormV3 is public but carries the op's
                           version in its name and skips the wrapper's epsilon floor.
"""

import tensorflow as tf


def fused_batch_norm_train(x, scale, offset, epsilon):
    """Training-mode fused batch norm of NHWC `x` over batch, height and width.

    Args:
      x: [N, H, W, C] float16, bfloat16 or float32.
      scale, offset: float32 [C] (gamma, beta).
      epsilon: added to the variance (TF raises it to at least 1.001e-5, cuDNN's floor).

    Returns:
      (y like x, batch mean float32 [C], unbiased batch variance float32 [C]);
      y uses the biased variance. Differentiable in x, scale and offset.
    """
    return tf.compat.v1.nn.fused_batch_norm(x, scale, offset, epsilon=epsilon, data_format="NHWC",
                                            is_training=True)
