"""Encoder architecture and stem names, without TensorFlow (built by `wmse_tf.core.encoders`).

Kept apart so that the training config can validate `--arch` and `--stem` without
loading Keras. `STEM_BY_DATASET` is the paper's stem per dataset, used when
`--stem=auto` (see `wmse_tf.training.resolve`).
"""

STEMS = ("cifar", "small", "imagenet")
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3))}
ARCHS = {f"resnet{d}": d for d in DEPTHS}
# The paper's stems: CIFAR 3x3 no pool, STL-10 / Tiny ImageNet 3x3 + pool, ImageNet 7x7.
STEM_BY_DATASET = {"cifar10": "cifar", "cifar100": "cifar", "stl10": "small",
                   "tiny_imagenet": "small", "imagenet100": "imagenet"}
