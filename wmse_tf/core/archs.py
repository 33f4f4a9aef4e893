"""Encoder architecture and stem names, without TensorFlow (built by `wmse_tf.core.encoders`).

Kept apart so that the training config can validate `--arch` and `--stem` without
loading Keras. `STEM_BY_DATASET` is the paper's stem per dataset, used when
`--stem=auto` (see `wmse_tf.training.resolve`).
"""

STEMS = ("cifar", "small", "imagenet")
# ResNet-10: one basic block per stage (ResNet-18's first blocks; a small CPU encoder, and the
# smoke runs' of the tests, whose tracing time grows with the layers).
DEPTHS = {10: ("basic", (1, 1, 1, 1)), 18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3))}
ARCHS = {f"resnet{d}": d for d in DEPTHS}
# The paper's stems: CIFAR 3x3 no pool, STL-10 / Tiny ImageNet 3x3 + pool, ImageNet 7x7.
STEM_BY_DATASET = {"cifar10": "cifar", "cifar100": "cifar", "stl10": "small",
                   "tiny_imagenet": "small", "imagenet100": "imagenet"}


def convolutions(arch, stem, width, image_size, channels=3):
    """The distinct convolutions of `core.encoders.build(arch, stem, width, image_size, channels)`.

    Each is (kernel, stride, in_channels, out_channels, input size), in order of first use: what
    `wmse_tf.onednn` checks (oneDNN's wrong results depend on the size too). No TensorFlow.
    """
    kind, stages = DEPTHS[ARCHS[arch]]
    convs, size, cin = [], image_size, channels

    def conv(kernel, stride, c_in, c_out, at):
        convs.append((kernel, stride, c_in, c_out, at))
        return -(-at // stride)

    size = conv(7, 2, cin, width, size) if stem == "imagenet" else conv(3, 1, cin, width, size)
    size, cin = (size if stem == "cifar" else -(-size // 2)), width
    for s, blocks in enumerate(stages):
        filters = width * 2**s
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            out = filters if kind == "basic" else filters * 4
            if stride != 1 or cin != out:
                conv(1, stride, cin, out, size)
            if kind == "basic":
                after = conv(3, stride, cin, filters, size)
                conv(3, 1, filters, filters, after)
            else:
                conv(1, 1, cin, filters, size)
                after = conv(3, stride, filters, filters, size)
                conv(1, 1, filters, out, after)
            size, cin = after, out
    return list(dict.fromkeys(convs))
