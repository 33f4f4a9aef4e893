"""Tests of wmse_tf.core.encoders: layouts match torchvision's ResNets."""

import numpy as np
import pytest

from wmse_tf.core import encoders


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# torchvision resnet18/50 parameters without the fc layer (ImageNet stem): 11,176,512 and 23,508,032.
@pytest.mark.parametrize("depth,stem,expected", [
    (18, "imagenet", 11_176_512),
    (18, "cifar", 11_176_512 - 64 * 3 * 49 + 64 * 3 * 9),  # 3x3 stem conv instead of 7x7
    (50, "imagenet", 23_508_032),
    # ResNet-10: ResNet-18 with one basic block per stage, i.e. without the second block of each
    # stage (two 3x3 convolutions f -> f and their BatchNorms, f = 64, 128, 256, 512)
    (10, "imagenet", 11_176_512 - sum(2 * 9 * f * f + 4 * f for f in (64, 128, 256, 512))),
])
def test_parameter_counts_match_torchvision(depth, stem, expected):
    model = encoders.resnet(depth, stem=stem, width=64, input_shape=(32, 32, 3))
    assert trainable_count(model) == expected


@pytest.mark.parametrize("stem,size,spatial", [("cifar", 32, 4), ("small", 64, 4), ("imagenet", 64, 2)])
def test_stems_downsample_as_the_paper(stem, size, spatial):
    model = encoders.resnet(18, stem=stem, width=4, input_shape=(size, size, 3))
    last_block = model.get_layer("stage4_block2_out").output
    assert last_block.shape[1] == spatial
    out = model(np.random.rand(2, size, size, 3).astype("float32"))
    assert out.shape == (2, 32) and out.dtype == "float32"


def test_width_and_bottleneck_feature_sizes():
    assert encoders.resnet(18, width=8, input_shape=(16, 16, 3)).output.shape[-1] == 64
    assert encoders.resnet(50, width=4, input_shape=(16, 16, 3)).output.shape[-1] == 128


def test_projector_layout_and_float32_output():
    head = encoders.projector(64, hidden=1024)
    out = head(np.random.rand(8, 512).astype("float32"))
    assert out.shape == (8, 64) and out.dtype == "float32"
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU", "Dense"]
    assert trainable_count(head) == 512 * 1024 + 1024 + 2 * 1024 + 1024 * 64 + 64


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth"):
        encoders.resnet(19)
    with pytest.raises(ValueError, match="stem"):
        encoders.resnet(18, stem="tiny")
    with pytest.raises(ValueError, match="arch"):
        encoders.build("vgg16")
    with pytest.raises(ValueError, match="emb"):
        encoders.projector(0)


def test_build_under_a_policy_leaves_the_global_policy_as_it_was():
    import keras

    before = keras.mixed_precision.dtype_policy().name
    encoder = encoders.build("resnet10", "cifar", 4, 16, policy="mixed_bfloat16")
    assert {layer.dtype_policy.name for layer in encoder.layers if layer.weights} == {"mixed_bfloat16"}
    assert keras.mixed_precision.dtype_policy().name == before
    assert {layer.dtype_policy.name for layer in encoders.build("resnet10", "cifar", 4, 16).layers
            if layer.weights} == {before}
