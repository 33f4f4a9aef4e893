"""ResNet encoders with the stems of the paper, and the W-MSE projection head.

Stems (reference: htdt/self-supervised model.py, torchvision ResNet):
  - "cifar":    3x3 conv stride 1, no max pool (CIFAR-10/100, small images).
  - "small":    3x3 conv stride 1, then 3x3/2 max pool (STL-10, Tiny ImageNet).
  - "imagenet": 7x7 conv stride 2, then 3x3/2 max pool (ImageNet-100, ImageNet).
keras_hub's ResNetBackbone only has the ImageNet stem and keras.applications
has no ResNet-18, so the blocks are written here (torchvision layout).
"""

import keras

from wmse_tf.core.archs import ARCHS, DEPTHS, STEMS  # noqa: F401 (names re-exported)
from wmse_tf.core.batchnorm import FusedBatchNorm

# torchvision's BatchNorm: momentum 0.1 (Keras: 0.9), eps 1e-5.
_BN = dict(momentum=0.9, epsilon=1e-5)


def _conv(x, filters, kernel, stride, name):
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same",
                               use_bias=False, kernel_initializer="he_normal", name=name)(x)


def _bn(x, name, relu=True):
    x = FusedBatchNorm(name=name, **_BN)(x)
    return keras.layers.ReLU(name=name + "_relu")(x) if relu else x


def _shortcut(x, filters, stride, name):
    if stride == 1 and x.shape[-1] == filters:
        return x
    return _bn(_conv(x, filters, 1, stride, name + "_down_conv"), name + "_down_bn", relu=False)


def _basic_block(x, filters, stride, name):
    shortcut = _shortcut(x, filters, stride, name)
    y = _bn(_conv(x, filters, 3, stride, name + "_conv1"), name + "_bn1")
    y = _bn(_conv(y, filters, 3, 1, name + "_conv2"), name + "_bn2", relu=False)
    return keras.layers.ReLU(name=name + "_out")(keras.layers.Add(name=name + "_add")([y, shortcut]))


def _bottleneck_block(x, filters, stride, name):
    shortcut = _shortcut(x, filters * 4, stride, name)
    y = _bn(_conv(x, filters, 1, 1, name + "_conv1"), name + "_bn1")
    y = _bn(_conv(y, filters, 3, stride, name + "_conv2"), name + "_bn2")
    y = _bn(_conv(y, filters * 4, 1, 1, name + "_conv3"), name + "_bn3", relu=False)
    return keras.layers.ReLU(name=name + "_out")(keras.layers.Add(name=name + "_add")([y, shortcut]))


def resnet(depth=18, stem="cifar", width=64, input_shape=(None, None, 3), name=None):
    """A ResNet feature extractor: images -> globally pooled features.

    Args:
      depth: 10 (one basic block per stage), 18, 34 or 50.
      stem: "cifar", "small" or "imagenet" (see module docstring).
      width: channels of the first stage (64 in the paper; e.g. 16 for CPU runs).
      input_shape: per-image input shape, channels last.
      name: model name (default "resnet{depth}").

    Returns:
      keras.Model mapping [B, H, W, C] normalized images to [B, F] features,
      F = 8 * width (basic blocks) or 32 * width (bottleneck).

    Example:
      >>> encoder = wmse_tf.core.encoders.resnet(18, stem="cifar", width=16)
    """
    if depth not in DEPTHS:
        raise ValueError(f"resnet: depth must be one of {sorted(DEPTHS)}, got {depth}")
    if stem not in STEMS:
        raise ValueError(f"resnet: stem must be one of {STEMS}, got {stem!r}")
    if width < 1:
        raise ValueError(f"resnet: width must be >= 1, got {width}")
    kind, stages = DEPTHS[depth]
    block = _basic_block if kind == "basic" else _bottleneck_block
    inputs = keras.Input(shape=input_shape, name="images")
    if stem == "imagenet":
        x = _bn(_conv(inputs, width, 7, 2, "stem_conv"), "stem_bn")
    else:
        x = _bn(_conv(inputs, width, 3, 1, "stem_conv"), "stem_bn")
    if stem != "cifar":
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, blocks in enumerate(stages):
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            x = block(x, width * 2**s, stride, f"stage{s + 1}_block{b + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    # Features leave the encoder in float32 whatever the compute policy.
    outputs = keras.layers.Activation("linear", dtype="float32", name="features")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


def projector(emb, hidden=1024, name="projector"):
    """The W-MSE head: Dense(hidden), BN, ReLU, Dense(emb); output in float32.

    Example:
      >>> head = wmse_tf.core.encoders.projector(64)
    """
    if emb < 1 or hidden < 1:
        raise ValueError(f"projector: emb and hidden must be >= 1, got emb={emb}, hidden={hidden}")
    return keras.Sequential([
        keras.layers.Dense(hidden, name="proj_dense1"),
        keras.layers.BatchNormalization(name="proj_bn", **_BN),
        keras.layers.ReLU(name="proj_relu"),
        keras.layers.Dense(emb, dtype="float32", name="proj_dense2"),
    ], name=name)


def load(path):
    """A saved encoder (`.keras` file), with wmse_tf's layers (FusedBatchNorm) registered."""
    return keras.saving.load_model(path, compile=False)


def build(arch="resnet18", stem="cifar", width=64, image_size=32, channels=3, policy=None):
    """Builds an encoder from an arch name such as "resnet18" for square images of `image_size` (None:
    any size); with `policy` (e.g. "mixed_bfloat16"), its layers compute under that dtype policy, as a
    run trained under it builds them (the global policy is left as it was)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    previous = keras.mixed_precision.dtype_policy()
    if policy is not None:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        return resnet(ARCHS[arch], stem, width, (image_size, image_size, channels), name=arch)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
