"""Baseline rows shipped with wmse_tf, so that a first demo does not compute them.

The demo's raw-pixel and random-weights rows depend on the data, the evaluation protocol, the
random weights and TensorFlow, not on the run or the machine (`baselines`): on an AVX2-only Zen 3
with oneDNN off and a Zen 4 with it on, the random row agreed within 0.05 point. For the demo's
default recipe they are computed by `python -m bench.baseline_rows` and shipped in
`wmse_tf/demo/shipped_rows/`, each with where, when and by which command it was computed.
`baselines.evaluate_with_baselines` reads one when its key matches exactly: the hashes of the
per-machine cache's key (data, random weights, eval transform, dtype policy, protocol) and the TF
version, without the CPU. Another flagfile, seed, protocol, dataset file or TF version misses,
and the row is computed as before. The demo's table marks the rows it read; `--baselines=compute`
computes them on the machine instead.

Example:
  >>> row = read("pixels", [data_key], eval_config)   # None, or {..., "shipped": provenance}
"""

import hashlib
import json
import os

from wmse_tf import atomic_io, onednn

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped_rows")


def key(kind, parts, protocol):
    """The shipped row's identity: kind, parts, protocol and TF version (JSON)."""
    return json.dumps([kind, parts, protocol, onednn.tf_version()], sort_keys=True, default=str)


def path(kind, parts, protocol, shipped_dir=None):
    digest = hashlib.sha1(key(kind, parts, protocol).encode()).hexdigest()[:16]
    return os.path.join(shipped_dir or SHIPPED_DIR, f"{kind}-{digest}.json")


def read(kind, parts, protocol, shipped_dir=None):
    """The shipped row for this key, with "shipped": its provenance; None if none is shipped."""
    record = atomic_io.read_json(path(kind, parts, protocol, shipped_dir))
    if not record or record.get("key") != json.loads(key(kind, parts, protocol)):
        return None
    return dict(record["row"], shipped=record["provenance"])


def write(kind, parts, protocol, row, provenance, shipped_dir=None):
    """Writes the shipped row (the command of bench.baseline_rows); returns its path."""
    out = path(kind, parts, protocol, shipped_dir)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    row = {k: v for k, v in row.items() if k not in ("cached", "shipped")}
    atomic_io.write_json(out, {"key": json.loads(key(kind, parts, protocol)), "row": row,
                               "provenance": provenance})
    return out


def describe(provenance):
    """One line: where and how a shipped row was computed."""
    return (f"computed on {provenance.get('machine', '?')} ({provenance.get('onednn', '?')}), "
            f"TF {provenance.get('tensorflow', '?')}, {provenance.get('date', '?')}, "
            f"by `{provenance.get('command', '?')}`")
