"""TrainConfig: every setting of one training run, resolved, validated, JSON round-trip.

The options themselves (names, types, defaults, choices, help) are declared once, in
`wmse_tf.training.options.TrainOptions`, which TrainConfig extends. `wmse_tf/train.py` turns absl flags
into one `TrainConfig`; everything below it takes the config (or plain
arguments), never flags. `validate()` checks the values that can be checked without data or devices;
`validate_replicas(n)` checks the batch split once the number of replicas is known. Both raise `ConfigError`
whose message starts with the offending flag, e.g. `--w_size=64: must be larger than --emb=64 ...`. A config
may hold `auto` values (stem, mixed_precision, jit_compile; 0 steps per execution);
`wmse_tf.training.resolve.resolve(cfg)` replaces them from the hardware. This module imports no TensorFlow and
no model code: the names it checks come from the TF-free `datasets_info`, `augment_config`, `archs`
(through `options`), `methods`.

Example:
  >>> cfg = TrainConfig(dataset="digits", emb=16, w_size=32, batch_size=64).validate()
"""

import dataclasses
import json
import math
import re
import warnings

from wmse_tf import errors, methods
from wmse_tf.data import augment_config, info as datasets_info
from wmse_tf.training import options
from wmse_tf.training.options import AUTO

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# Values that must match the saved flags.json to resume a run from its checkpoints.
KEY_FIELDS = ("dataset", "train_split", "method", "arch", "width", "stem", "emb", "hidden",
              "num_views", "batch_size", "w_size", "w_iter", "steps_per_epoch", "image_size")


class ConfigError(errors.UserError, ValueError):
    """A bad flag value or combination; the message starts with `--flag=value:`."""


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*$")
_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text, flag="time_budget"):
    """Seconds of a duration: "480", "90s", "8m", "1.5h"; "0" or "" = 0 (off)."""
    if text in (None, ""):
        return 0.0
    match = _DURATION.match(str(text))
    if not match:
        _fail(flag, text, "must be a duration: a number with an optional unit s, m or h (e.g. 8m, 90s)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


@dataclasses.dataclass(frozen=True)
class TrainConfig(options.TrainOptions):
    """One training run: the options of `wmse_tf.training.options.TrainOptions` (names, defaults, help),
    validated. `stem`, `mixed_precision`, `jit_compile` may be "auto" and `steps_per_execution` 0 until
    `wmse_tf.training.resolve.resolve` replaces them (`resolved`); `model_dir` defaults to
    runs/<dataset>_<method>.
    """

    def __post_init__(self):
        if self.augment is None:
            object.__setattr__(self, "augment", default_augment(self.dataset))
        if not self.model_dir:
            object.__setattr__(self, "model_dir", f"runs/{self.dataset.partition(':')[0]}_{self.method}")
        for name in ("devices", "lr_drop_epochs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.jit_compile, str) and self.jit_compile.lower() in _BOOLS:  # flag spelling
            object.__setattr__(self, "jit_compile", _BOOLS[self.jit_compile.lower()])

    @property
    def image_size(self):
        return self.augment.image_size

    def validate(self):
        """Checks every value knowable without data or devices; returns self."""
        try:
            splits = datasets_info.info(self.dataset).splits
        except ValueError as e:
            _fail("dataset", self.dataset, str(e))
        if self.train_split not in splits:
            _fail("train_split", self.train_split, f"must be one of {splits}")
        _check_choice("method", self.method, sorted(methods.REGISTRY))
        for f in options.declared():
            if f.metadata["choices"]:  # the values of its enum flag (jit_compile: True / False as "true" / "false")
                value = getattr(self, f.name)
                _check_choice(f.name, str(value).lower() if isinstance(value, bool) else value, f.metadata["choices"])
        if self.num_views < 2:
            _fail("num_views", self.num_views, "need at least 2 views per image (allowed: >= 2)")
        for name in ("width", "emb", "hidden", "batch_size", "epochs",
                     "keep_checkpoints", "knn_k", "log_every", "w_iter"):
            if getattr(self, name) < 1:
                _fail(name, getattr(self, name), "must be >= 1")
        for name in ("steps_per_epoch", "warmup", "eval_every", "checkpoint_every", "cpu_replicas",
                     "knn_train_images", "knn_test_images", "export_version", "shuffle_buffer",
                     "steps_per_execution", "health_every", "health_images"):  # steps_per_execution 0 = auto
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "must be >= 0")
        if not self.lr > 0:
            _fail("lr", self.lr, "must be > 0")
        if not (self.time_budget >= 0 and math.isfinite(self.time_budget)):
            _fail("time_budget", self.time_budget, "must be a duration >= 0 (e.g. 8m, 90s, 1.5h; 0 = off)")
        if self.time_budget and self.strategy == "multi_worker":
            _fail("time_budget", self.time_budget, "workers would plan different lengths from their own "
                  "clocks; not supported with --strategy=multi_worker (use --epochs)")
        if not 0.0 <= self.w_eps < 1.0:
            _fail("w_eps", self.w_eps, "must be in [0, 1) (covariance shrinkage towards identity)")
        if not 0.0 < self.lr_drop_gamma <= 1.0:
            _fail("lr_drop_gamma", self.lr_drop_gamma, "must be in (0, 1]")
        if self.weight_decay < 0:
            _fail("weight_decay", self.weight_decay, "must be >= 0")
        if self.uses_whitening_groups:
            if self.w_size <= self.emb:
                _fail("w_size", self.w_size,
                      f"must be larger than --emb={self.emb}: each whitening sub-batch of w_size rows "
                      "in emb dims has a singular covariance otherwise (recommended: w_size >= 2*emb)")
            if self.w_size < 2 * self.emb:
                warnings.warn(f"--w_size={self.w_size} < 2 * --emb={self.emb}: noisy covariance; "
                              "the reference uses w_size >= 2 * emb", stacklevel=2)
        if self.cpu_replicas > 1 and self.strategy != "mirrored":
            _fail("cpu_replicas", self.cpu_replicas, "more than 1 needs --strategy=mirrored")
        if self.jit_compile is True and self.cpu_replicas > 1:
            _fail("jit_compile", "true", "XLA does not run on logical CPU devices (--cpu_replicas > 1); "
                  "use --jit_compile=false")
        if self.devices and self.strategy != "mirrored":
            _fail("devices", ",".join(self.devices), "only with --strategy=mirrored")
        if self.export_name and "/" in self.export_name:
            _fail("export_name", self.export_name, "must be a plain name (no '/')")
        self.validate_replicas(self.expected_replicas)
        return self

    @property
    def expected_replicas(self):
        """Replicas knowable from the flags alone (None: known once the strategy exists)."""
        if self.strategy == "default":
            return 1
        if self.strategy == "mirrored" and self.devices:
            return len(self.devices)
        if self.strategy == "mirrored" and self.cpu_replicas:
            return self.cpu_replicas
        return None

    def validate_replicas(self, num_replicas):
        """Checks the batch split over `num_replicas` (None: only the global batch)."""
        if self.uses_whitening_groups and self.batch_size % self.w_size:
            _fail("batch_size", self.batch_size,
                  f"must be divisible by --w_size={self.w_size} (whitening sub-batches)")
        if not num_replicas or num_replicas == 1:
            return self
        if self.batch_size % num_replicas:
            _fail("batch_size", self.batch_size,
                  f"must be divisible by the {num_replicas} replicas (global batch, images per step)")
        per_replica = self.batch_size // num_replicas
        if self.uses_whitening_groups and not self.whiten_across_replicas and per_replica % self.w_size:
            _fail("w_size", self.w_size,
                  f"must divide the per-replica batch {per_replica} (= --batch_size={self.batch_size} / "
                  f"{num_replicas} replicas); lower --w_size, raise --batch_size, or pass "
                  "--whiten_across_replicas to whiten over the global batch")
        return self

    @property
    def uses_whitening_groups(self):
        """True for methods that whiten sub-batches of w_size rows (W-MSE): `Method.whitens`."""
        method = methods.REGISTRY.get(self.method)
        return bool(method and method.whitens)

    @property
    def export_name_or_default(self):
        """--export_name, else `wmse<views>_<data>` (W-MSE: the zoo's names) or `<method>_<data>`."""
        method = f"wmse{self.num_views}" if self.method == "wmse" else self.method
        return self.export_name or f"{method}_{datasets_info.short_name(self.dataset)}"

    @property
    def resolved(self):
        """False while an `auto` value is left for `wmse_tf.training.resolve.resolve`."""
        return AUTO not in (self.stem, self.mixed_precision, self.jit_compile) and self.steps_per_execution > 0

    def key_values(self):
        """The values that must not change when resuming (see KEY_FIELDS)."""
        values = {k: getattr(self, k) for k in KEY_FIELDS}
        return json.loads(json.dumps(values))

    def to_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        """Inverse of to_dict (unknown keys are ignored, so old flags.json files load)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields}
        if isinstance(kwargs.get("augment"), dict):
            aug = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs["augment"].items()}
            kwargs["augment"] = augment_config.AugmentConfig(**aug)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path):
        """Loads a saved flags.json (e.g. to rebuild a model for evaluation)."""
        import tensorflow as tf  # gfile reads local and gs:// paths alike
        with tf.io.gfile.GFile(path) as f:
            return cls.from_dict(json.load(f))


def default_augment(dataset):
    """The dataset's augmentation recipe (CIFAR's when the dataset is unknown)."""
    return augment_config.recipe(dataset if _dataset_ok(dataset) else "cifar10")


def key_differences(saved, current):
    """[(name, saved value, current value)] of KEY_FIELDS that differ."""
    return [(k, saved.get(k), current.get(k)) for k in KEY_FIELDS if saved.get(k) != current.get(k)]


def _dataset_ok(name):
    try:
        datasets_info.info(name)
        return True
    except ValueError:
        return False


def _fail(name, value, reason):
    raise ConfigError(f"--{name}={value}: {reason}")


def _check_choice(name, value, allowed):
    if value not in allowed:
        _fail(name, value, f"unknown; allowed: {', '.join(map(str, allowed))}")
