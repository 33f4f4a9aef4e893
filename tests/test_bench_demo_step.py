"""Tests of bench/demo_step.py's variant parsing: each variant is the demo's config with typed changes."""

import pytest

from bench import demo_step
from wmse_tf.training import config


def demo_like():
    return config.TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64, width=8,
                              mixed_precision="float32", jit_compile=False, steps_per_execution=1)


def test_variant_changes_are_typed_and_reach_the_augmentation():
    name, changes = demo_step.parse_variant("v:width=16+num_views=4+crop_scale_min=0.5+bn_per_view=true")
    cfg = demo_step.apply_changes(demo_like(), changes)
    assert name == "v" and cfg.width == 16 and cfg.num_views == 4 and cfg.bn_per_view is True
    assert cfg.augment.crop_scale_min == 0.5 and isinstance(cfg.augment.crop_scale_min, float)
    assert demo_step.parse_variant("demo:") == ("demo", {})


@pytest.mark.parametrize("text, message", [
    ("v:nosuchflag=1", "no flag 'nosuchflag'"),
    ("v:width", "expected name:flag=value"),
])
def test_bad_variants_name_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        demo_step.apply_changes(demo_like(), demo_step.parse_variant(text)[1])


def test_a_variant_the_config_rejects_is_refused():
    with pytest.raises(config.ConfigError, match="--w_size"):
        demo_step.apply_changes(demo_like(), {"w_size": "8"})  # w_size must exceed emb
