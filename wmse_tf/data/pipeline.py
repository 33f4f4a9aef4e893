"""tf.data input pipelines: multi-view SSL batches and deterministic eval batches.

``ssl_dataset`` yields ``(views, labels)``: ``views`` a tuple of ``num_views`` float32
tensors [b, S, S, 3] (same image order in each), then the recipe's ``local_views`` small ones
[b, s, s, 3] (multi-crop), ``labels`` int64 [b] (-1 = unlabelled).
That structure is what ``SSLModel.train_step`` expects.

Example:
    >>> ds = wmse_tf.data.pipeline.ssl_dataset("cifar10", "ssl", 512, 2, recipe("cifar10"), seed=0)
"""

import dataclasses
from typing import Optional, Union

import tensorflow as tf

from wmse_tf.data import augment, datasets as data_lib, eval_transform


def _cached(ds: tf.data.Dataset, cache: Union[bool, str]) -> tf.data.Dataset:
    if cache is True:
        return ds.cache()
    if isinstance(cache, str) and cache:
        return ds.cache(cache)
    return ds


def ssl_dataset(name: str, split: str, batch_size: int, num_views: int,
                aug_cfg: augment.AugmentConfig, seed: int, data_dir: Optional[str] = None,
                input_context: Optional[tf.distribute.InputContext] = None,
                shuffle_buffer: int = 16384, cache: Union[bool, str] = True,
                repeat: bool = False, jit_compile: bool = True) -> tf.data.Dataset:
    """Shuffled, batched, multi-view SSL dataset.

    Decoded uint8 images are cached once, shuffled, batched with ``drop_remainder=True``
    (W-MSE needs a fixed batch), then augmented a whole batch at a time. Each batch draws
    a fresh seed from ``tf.data.Dataset.random(seed)``, so a fixed seed reproduces the
    same views, epoch after epoch, and different epochs get different views.

    Args:
      name, split, data_dir: as in ``wmse_tf.data.datasets.load`` (split "ssl" for training).
      batch_size: GLOBAL number of images per step (before views). With
        ``input_context`` each pipeline yields ``batch_size // num_replicas_in_sync``.
      num_views: views per image, >= 2.
      aug_cfg: the recipe, e.g. ``augment.recipe(name)``.
      seed: int seed of the shuffle and of the augmentation.
      input_context: from ``strategy.distribute_datasets_from_function``; shards the
        images by input pipeline and uses the per-replica batch size.
      shuffle_buffer: images in the shuffle buffer.
      cache: True caches decoded images in memory, a str caches to that file prefix,
        False re-reads each epoch (for datasets larger than memory).
      repeat: repeat forever (epochs then reshuffle); else one pass per iteration.
      jit_compile: run the augmentation pixel math with XLA (same views, faster).

    Returns:
      Dataset of ``(tuple of num_views float32 [b, S, S, 3] (+ aug_cfg.local_views [b, s, s, 3]),
      int64 [b])``.
    """
    if not isinstance(num_views, int) or num_views < 2:
        raise ValueError(f"num_views must be an int >= 2, got {num_views!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_replica = batch_size
    ds = data_lib.load(name, split, data_dir)
    if input_context is not None:
        per_replica = input_context.get_per_replica_batch_size(batch_size)
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        seed = seed * 1000003 + input_context.input_pipeline_id
    ds = _cached(ds, cache)
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(per_replica, drop_remainder=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip(ds, seeds)
    views = augment.MultiView(aug_cfg, num_views, jit_compile)

    @tf.autograph.experimental.do_not_convert  # plain graph code: AutoGraph would only add tracing time
    def make(batch, batch_seed):
        images, labels = batch
        return views(images, tf.stack([batch_seed, tf.constant(seed, tf.int64)])), labels

    ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(name: str, split: str, batch_size: int, data_dir: Optional[str] = None,
                 image_size: Optional[int] = None,
                 aug_cfg: Optional[augment.AugmentConfig] = None) -> tf.data.Dataset:
    """Deterministic (normalized float32 [b, S, S, 3], int64 [b]) batches, in order.

    No random ops; the last batch may be smaller. The transform is
    `wmse_tf.data.eval_transform` with the recipe's size, eval resize and mean/std (e.g.
    STL-10: resize 70, center crop 64), the one the serving graph applies too.

    Args:
      name, split, data_dir: as in ``wmse_tf.data.datasets.load``.
      batch_size: images per batch.
      image_size: output side S; default the recipe's training size.
      aug_cfg: recipe giving mean/std and eval resize; default ``augment.recipe(name)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = aug_cfg or augment.recipe(name)
    if image_size is not None and image_size != cfg.image_size:
        resize = None
        if cfg.eval_resize:  # keep the recipe's resize / crop ratio at the new size.
            resize = max(image_size, round(cfg.eval_resize * image_size / cfg.image_size))
        cfg = dataclasses.replace(cfg, image_size=image_size, eval_resize=resize)
    ds = data_lib.load(name, split, data_dir).batch(batch_size)
    ds = ds.map(tf.autograph.experimental.do_not_convert(
                    lambda x, y: (eval_transform.apply(x, cfg.image_size, cfg.mean, cfg.std, cfg.eval_resize), y)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
