"""The model zoo of wmse_tf; this package holds its registry API (zoo/models.json).

Scripts: `python -m zoo.build`, `zoo.evaluate`, `zoo.extract_features`,
`zoo.serving_client` (see zoo/README.md and BUILD.md). The registry:

One entry per encoder: name, version, status ("planned" until `zoo/build.py`
builds it, then "published"), dataset, method, views, config (flagfile) and,
once built, metrics (with their protocol), files (sha256 of every file of the
SavedModel version dir), size and how it was built.
"""

import json
import os

from wmse_tf import atomic_io

REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.json")
STATUSES = ("planned", "published")
REQUIRED = ("name", "version", "status", "dataset", "method", "views", "config")


def load(path=REGISTRY):
    with open(path) as f:
        registry = json.load(f)
    validate(registry)
    return registry


def validate(registry):
    """Raises ValueError naming the entry and field when the registry is malformed."""
    names = set()
    for i, entry in enumerate(registry.get("models", [])):
        where = f"models.json entry {i} ({entry.get('name', '?')})"
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        if entry["status"] not in STATUSES:
            raise ValueError(f"{where}: status must be one of {STATUSES}, got {entry['status']!r}")
        if entry["name"] in names:
            raise ValueError(f"{where}: duplicate name")
        names.add(entry["name"])
        if entry["status"] == "published":
            for key in ("metrics", "files", "export"):
                if not entry.get(key):
                    raise ValueError(f"{where}: a published entry needs {key!r}")
            if "protocol" not in entry["metrics"]:
                raise ValueError(f"{where}: metrics need their 'protocol'")
        elif entry.get("metrics"):
            raise ValueError(f"{where}: a planned entry has no metrics (only built encoders do)")


def find(registry, name):
    for entry in registry["models"]:
        if entry["name"] == name:
            return entry
    known = ", ".join(e["name"] for e in registry["models"])
    raise KeyError(f"no zoo entry named {name!r}; known: {known}")


def save(registry, path=REGISTRY):
    """Validates, then writes atomically (wmse_tf.atomic_io.write_json)."""
    validate(registry)
    atomic_io.write_json(path, registry)


def update(name, fields, path=REGISTRY):
    """Sets `fields` on entry `name` and saves; returns the entry."""
    registry = load(path)
    entry = find(registry, name)
    entry.update(fields)
    save(registry, path)
    return entry
