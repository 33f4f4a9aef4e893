"""BatchNormalization whose training pass on images runs TensorFlow's fused kernel.

Keras 3's BatchNormalization upcasts bfloat16/float16 activations to float32 and
normalizes with separate ops (moments, then scale and shift), forward and backward.
TensorFlow's fused batch norm (reached through `wmse_tf.core.tf_compat`) does the same math
in one kernel per direction, statistics in float32 whatever the activation dtype. On
the 2-core CPU a mixed_bfloat16 ResNet-18 W-MSE step (width 64) ran 1.4x faster with
it, float32 1.2x (docs/benchmarks.md).

Same variables, config and inference path as the Keras layer (it is a subclass), so
checkpoints and weights are interchangeable. One difference, as in torchvision and
in Keras 2's fused layer: the moving variance is updated with the unbiased batch
variance (n / (n - 1) times the biased one, n = batch x height x width).
"""

import keras
import tensorflow as tf

from wmse_tf.core import tf_compat

FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)
# bfloat16 channels not a multiple of this hit a slow path of the CPU kernel (measured: a
# width-8 ResNet-18 step 2x slower fused); those layers keep the Keras code.
BF16_CHANNEL_BLOCK = 16


@keras.saving.register_keras_serializable(package="wmse_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with a fused training pass for NHWC images.

    Used when training on rank-4 channels-last inputs with scale and center and no
    mask (in bfloat16 only for channel counts that are multiples of 16); every other
    case (inference, dense features, frozen layers) is the Keras layer's own code.

    Example:
      >>> bn = wmse_tf.core.batchnorm.FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    """

    def _fused(self, inputs, training, mask):
        return (training and self.trainable and mask is None and self.scale and self.center
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and inputs.dtype in FUSED_DTYPES
                and (inputs.dtype != tf.bfloat16 or inputs.shape[-1] % BF16_CHANNEL_BLOCK == 0))

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf_compat.fused_batch_norm_train(
            inputs, tf.cast(self.gamma, tf.float32), tf.cast(self.beta, tf.float32), self.epsilon)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + tf.cast(mean, self.moving_mean.dtype) * (1 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + tf.cast(variance, self.moving_variance.dtype) * (1 - momentum))
        return tf.cast(outputs, self.compute_dtype)
