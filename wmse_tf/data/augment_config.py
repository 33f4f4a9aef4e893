"""AugmentConfig and the per-dataset recipes, without TensorFlow.

The training config holds an `AugmentConfig`; `wmse_tf.data.augment` (which re-exports
both names) applies it. Kept apart so that resolving flags loads no TensorFlow.

Example:
    >>> wmse_tf.data.augment_config.recipe("stl10").eval_resize
    70
"""

import dataclasses
from typing import Optional, Tuple

from wmse_tf.data import info as datasets_info

INTERPOLATIONS = ("bicubic", "bilinear")  # resampling kernels of wmse_tf.data.resampling


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """One augmentation recipe. Names of the reference flags are given in brackets.

    Attributes:
      image_size: side S of the square output views.
      mean, std: per-channel normalization of [0, 1] pixels.
      brightness, contrast, saturation, hue: color jitter strengths [cj0..cj3].
      jitter_p: probability of applying the color jitter [cj_p].
      grayscale_p: probability of grayscale [gs_p].
      crop_scale_min, crop_scale_max: crop area fraction range [crop_s0, crop_s1].
      crop_ratio_min, crop_ratio_max: crop aspect ratio range [crop_r0, crop_r1].
      flip_p: horizontal flip probability [hf_p].
      blur_p: Gaussian blur probability (0 disables it).
      blur_sigma_min, blur_sigma_max: blur sigma range in output pixels.
      solarize_p: probability of solarizing (pixels >= 0.5 become 1 - pixel), after the jitter.
      invert_p: probability of inverting the image (1 - pixel), after the jitter.
      erase_p: probability of random erasing: a rectangle of the output view, of
        erase_scale_min..erase_scale_max of its area (aspect ratio 0.3-3.3, as torchvision's
        RandomErasing), set to the normalized mean (0).
      affine_p: probability of a small affine transform of the image before the crop (torchvision's
        RandomAffine without translation or scale): a rotation by up to +-affine_degrees and a
        horizontal shear by up to +-affine_shear degrees about the centre, bilinear, filled with 0
        (black).
      local_views: small views per image added after the full-size ones (multi-crop, as SwAV
        and DINO): each a crop of local_crop_scale_min..local_crop_scale_max of the image resized
        to local_size pixels, with the same colour, flip, blur and erasing draws as a full view.
        The objective then compares all views; a small view costs a fraction of a full one.
      local_size: side of the small views; 0 means image_size // 2.
      local_crop_scale_min, local_crop_scale_max: crop area fraction range of the small views.
      interpolation: of the training crops, "bicubic" (reference) or "bilinear";
        both antialiased. The eval resize is always bicubic, as the reference's.
      eval_resize: the eval transform (`wmse_tf.data.eval_transform`) resizes the shorter
        side to this, then center crops image_size; None means image_size.
    """

    image_size: int = 32
    mean: Tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
    std: Tuple[float, float, float] = (0.2023, 0.1994, 0.2010)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.1
    crop_scale_min: float = 0.2
    crop_scale_max: float = 1.0
    crop_ratio_min: float = 3 / 4
    crop_ratio_max: float = 4 / 3
    flip_p: float = 0.5
    blur_p: float = 0.0
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 2.0
    solarize_p: float = 0.0
    invert_p: float = 0.0
    erase_p: float = 0.0
    erase_scale_min: float = 0.02
    erase_scale_max: float = 0.33
    affine_p: float = 0.0
    affine_degrees: float = 15.0
    affine_shear: float = 10.0
    local_views: int = 0
    local_size: int = 0
    local_crop_scale_min: float = 0.05
    local_crop_scale_max: float = 0.4
    interpolation: str = "bicubic"
    eval_resize: Optional[int] = None

    def __post_init__(self):
        checks = [
            ("image_size >= 1", self.image_size >= 1),
            ("jitter_p, grayscale_p, flip_p, blur_p, solarize_p, invert_p, erase_p, affine_p in [0, 1]",
             all(0 <= p <= 1 for p in (self.jitter_p, self.grayscale_p, self.flip_p, self.blur_p,
                                       self.solarize_p, self.invert_p, self.erase_p, self.affine_p))),
            ("0 <= affine_degrees <= 180 and 0 <= affine_shear < 90",
             0 <= self.affine_degrees <= 180 and 0 <= self.affine_shear < 90),
            ("0 < erase_scale_min <= erase_scale_max <= 1",
             0 < self.erase_scale_min <= self.erase_scale_max <= 1),
            ("brightness, contrast, saturation >= 0",
             min(self.brightness, self.contrast, self.saturation) >= 0),
            ("hue in [0, 0.5]", 0 <= self.hue <= 0.5),
            ("0 < crop_scale_min <= crop_scale_max <= 1",
             0 < self.crop_scale_min <= self.crop_scale_max <= 1),
            ("0 < crop_ratio_min <= crop_ratio_max",
             0 < self.crop_ratio_min <= self.crop_ratio_max),
            ("0 < blur_sigma_min <= blur_sigma_max",
             0 < self.blur_sigma_min <= self.blur_sigma_max),
            ("local_views >= 0 and 0 <= local_size <= image_size",
             self.local_views >= 0 and 0 <= self.local_size <= self.image_size),
            ("0 < local_crop_scale_min <= local_crop_scale_max <= 1",
             0 < self.local_crop_scale_min <= self.local_crop_scale_max <= 1),
            (f"interpolation in {INTERPOLATIONS}", self.interpolation in INTERPOLATIONS),
            ("mean and std of 3 values, std > 0",
             len(self.mean) == 3 and len(self.std) == 3 and min(self.std) > 0),
            ("eval_resize None or >= image_size",
             self.eval_resize is None or self.eval_resize >= self.image_size),
        ]
        for rule, ok in checks:
            if not ok:
                raise ValueError(f"AugmentConfig needs {rule}; got {self}")

    def local(self) -> "AugmentConfig":
        """The recipe of one small view (multi-crop): local_size pixels, local crop scales."""
        return dataclasses.replace(self, image_size=self.local_size or max(1, self.image_size // 2),
                                   crop_scale_min=self.local_crop_scale_min,
                                   crop_scale_max=self.local_crop_scale_max, local_views=0, local_size=0,
                                   eval_resize=None)


def recipe(name: str) -> AugmentConfig:
    """Per-dataset defaults of the paper / reference code for a registered dataset name."""
    meta = datasets_info.info(name)
    cfg = AugmentConfig(image_size=meta.image_size, mean=meta.mean, std=meta.std)
    if not meta.colour:  # saturation, hue and grayscale leave a gray image as it is: not computed
        cfg = dataclasses.replace(cfg, saturation=0.0, hue=0.0, grayscale_p=0.0)
    base = meta.name.split(":")[0]
    if base == "stl10":
        return dataclasses.replace(cfg, image_size=64, eval_resize=70)
    if base == "imagenet100":
        return dataclasses.replace(
            cfg, image_size=224, eval_resize=256, crop_scale_min=0.08, brightness=0.8,
            contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2, blur_p=0.5)
    return cfg
