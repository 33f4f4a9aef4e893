"""Train a self-supervised encoder (W-MSE and baselines): the command-line entry point.

  python -m wmse_tf.train --flagfile=configs/cifar10.flags --model_dir=runs/cifar10
  python -m wmse_tf.train --flagfile=configs/smoke.flags --print_config

The only module that reads absl FLAGS: one per training option declared in `wmse_tf.training.options`
(plus the augmentation's and COMMAND_FLAGS), they become one validated, frozen
`wmse_tf.training.config.TrainConfig` handed to `wmse_tf.training.trainer.run`. A run resumes from
model_dir's newest checkpoint automatically; a missing TFDS dataset is downloaded first
(unless --nodownload). Exit codes: 0 done, 2 a user error, printed as one `error:` line
(bad flags or flagfile, dataset missing, model_dir locked by another run), 3 NaN/Inf loss,
4 a write to model_dir failed (disk full, read-only; the last checkpoint is intact),
5 stopped as unhealthy (--on_unhealthy=stop; last checkpoint written), 128 + N stopped by
signal N (after checkpointing). See docs/training.md, docs/reliability.md.
"""

import dataclasses
import json
import sys
from typing import Optional, Tuple

from absl import flags, logging

from wmse_tf import cli, onednn
from wmse_tf.core import archs
from wmse_tf.data import augment_config
from wmse_tf.training import config as config_lib, options, resolve

FLAGS = flags.FLAGS
_AUG_FIELDS = [f for f in dataclasses.fields(augment_config.AugmentConfig) if f.name not in ("mean", "std")]
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string,
           Optional[str]: flags.DEFINE_string, Tuple[int, ...]: flags.DEFINE_list, Tuple[str, ...]: flags.DEFINE_list}
# The command's own flags, beside one flag per training option.
COMMAND_FLAGS = ("export_formats", "print_config")


def flag_default(field):
    """The absl default of a TrainOptions field: its default as the flag spells it."""
    if field.metadata["duration"]:
        return f"{field.default:g}"
    return [str(x) for x in field.default] if isinstance(field.default, tuple) else field.default


def define_flags(flag_values=FLAGS):
    """One flag per training option (`options.TrainOptions`), the augmentation's, and COMMAND_FLAGS."""
    for f in options.declared():
        kwargs = dict(name=f.name, default=flag_default(f), help=f.metadata["help"], flag_values=flag_values)
        if f.metadata["choices"]:
            flags.DEFINE_enum(enum_values=list(f.metadata["choices"]), **kwargs)
        else:
            (flags.DEFINE_string if f.metadata["duration"] else _DEFINE[f.type])(**kwargs)
    for f in _AUG_FIELDS:  # unset = the dataset's recipe (wmse_tf.data.augment_config.recipe)
        kwargs = dict(name=f.name, default=None, flag_values=flag_values)
        if f.name in ("image_size", "eval_resize", "local_views", "local_size"):
            flags.DEFINE_integer(help=f"Augmentation {f.name} (default: dataset recipe).", **kwargs)
        elif f.name == "interpolation":
            flags.DEFINE_enum(enum_values=["bicubic", "bilinear"], help="Crop resampling (default: recipe).", **kwargs)
        else:
            flags.DEFINE_float(help=f"Augmentation {f.name} (default: dataset recipe).", **kwargs)
    flags.DEFINE_list("export_formats", [], "Also write these beside the SavedModel export: onnx, litert, "
                      "litert:float16, litert:int8, onnx:int8 (wmse_tf.export.formats; parity on 64 random images; "
                      "python -m zoo.export measures it on the test split).", flag_values=flag_values)
    flags.DEFINE_bool("print_config", False, "Print the resolved config as JSON and exit.", flag_values=flag_values)


define_flags()


def option_value(field, value):
    """A parsed flag's value as the TrainOptions field holds it (ConfigError naming the flag)."""
    if field.metadata["duration"]:
        return config_lib.parse_duration(value, field.name)
    if field.type == Tuple[int, ...]:
        try:
            return tuple(int(x) for x in value)
        except ValueError:
            raise config_lib.ConfigError(f"--{field.name}={','.join(value)}: must be integers") from None
    return tuple(value) if isinstance(value, list) else value


def config_from_flags(values=FLAGS, hardware=None):
    """The validated TrainConfig of parsed flags, auto values resolved (`wmse_tf.training.resolve`).

    --verbose left unset is 1 on a terminal and 2 (one line per epoch) when stdout is a file or a pipe.
    """
    recipe = config_lib.default_augment(values.dataset)
    overrides = {f.name: values[f.name].value for f in _AUG_FIELDS if values[f.name].value is not None}
    try:
        aug = dataclasses.replace(recipe, **overrides)
    except ValueError as e:
        raise config_lib.ConfigError(f"augmentation flags {overrides}: {e}") from None
    kwargs = {f.name: option_value(f, values[f.name].value) for f in options.declared()}
    if not values["verbose"].present and not sys.stdout.isatty():
        kwargs["verbose"] = 2
    return resolve.resolve(config_lib.TrainConfig(**kwargs, augment=aug), hardware)


def config_or_exit(argv):
    """(config, None) to run, or (None, exit code) after an error message or --print_config."""
    if len(argv) > 1:
        return None, cli.fail(f"unexpected arguments {argv[1:]} (flags are --name=value)")
    try:
        cfg = config_from_flags()
    except config_lib.ConfigError as e:
        return None, cli.fail(e)
    decision = onednn.apply(archs.convolutions(cfg.arch, cfg.stem, cfg.width, cfg.image_size))
    if FLAGS.print_config:
        print(json.dumps(dict(cfg.to_dict(), runtime={"onednn": decision.line()}), indent=2, sort_keys=True))
        return None, 0
    return cfg, None


def export_variants(cfg):
    """[(format, quantize)] of --export_formats, checked; a UserError without --export_dir."""
    from wmse_tf import errors
    from wmse_tf.export import variants

    items = variants.parse(FLAGS.export_formats)
    if items and not cfg.export_dir:
        raise errors.UserError("--export_formats needs --export_dir (the files go beside the SavedModel)")
    return items


def export_formats(export_dir, name, items):
    """ONNX / LiteRT files beside the latest SavedModel version of `<export_dir>/<name>`."""
    import os

    from wmse_tf.export import formats, saved_model

    formats.export_formats(saved_model.latest_version_dir(os.path.join(export_dir, name)), items)


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TF's INFO lines (e.g. per checkpoint) drown the progress bar
    cfg, code = config_or_exit(argv)
    if cfg is None:
        return code
    from wmse_tf import errors
    from wmse_tf.data import datasets as data  # imported late: flags and --print_config need no TensorFlow
    from wmse_tf.training import trainer

    try:
        formats = export_variants(cfg)  # a bad --export_formats fails before training
        data.prepare(cfg.dataset, cfg.data_dir, cfg.download)  # downloads a missing TFDS dataset once
        code = trainer.run(cfg)
        if not code and formats:
            export_formats(cfg.export_dir, cfg.export_name_or_default, formats)
        return code
    except errors.UserError as e:  # e.g. ConfigError (model_dir of another run), DatasetNotFoundError
        return cli.fail(e)


if __name__ == "__main__":
    cli.run(main)
