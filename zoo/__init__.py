"""The model zoo of wmse_tf; this package holds its registry API (zoo/models.json).

Scripts: `python -m zoo.build`, `zoo.evaluate`, `zoo.extract_features`,
`zoo.serving_client` (see zoo/README.md and BUILD.md). The registry:

One entry per encoder version: name, version, status ("planned" until `zoo/build.py`
builds it, then "published"; "superseded" once a newer version of the same name is
published, with `superseded_by`), dataset, method, views, config (flagfile) and, once
built, metrics (with their protocol), files (sha256 of every file of the SavedModel
version dir), size and how it was built. A name has at most one entry that is not
superseded: `find(registry, name)` returns it.
"""

import json
import os

from wmse_tf import atomic_io

REGISTRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.json")
STATUSES = ("planned", "published", "superseded")
BUILT = ("published", "superseded")
REQUIRED = ("name", "version", "status", "dataset", "method", "views", "config")


def load(path=REGISTRY):
    with open(path) as f:
        registry = json.load(f)
    validate(registry)
    return registry


def validate(registry):
    """Raises ValueError naming the entry and field when the registry is malformed."""
    current, versions = set(), set()
    for i, entry in enumerate(registry.get("models", [])):
        where = f"models.json entry {i} ({entry.get('name', '?')})"
        missing = [k for k in REQUIRED if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        if entry["status"] not in STATUSES:
            raise ValueError(f"{where}: status must be one of {STATUSES}, got {entry['status']!r}")
        if (entry["name"], entry["version"]) in versions:
            raise ValueError(f"{where}: duplicate name and version")
        versions.add((entry["name"], entry["version"]))
        if entry["status"] != "superseded":
            if entry["name"] in current:
                raise ValueError(f"{where}: duplicate name (older versions must be 'superseded')")
            current.add(entry["name"])
        if entry["status"] in BUILT:
            for key in ("metrics", "files", "export"):
                if not entry.get(key):
                    raise ValueError(f"{where}: a {entry['status']} entry needs {key!r}")
            if "protocol" not in entry["metrics"]:
                raise ValueError(f"{where}: metrics need their 'protocol'")
        elif entry.get("metrics"):
            raise ValueError(f"{where}: a planned entry has no metrics (only built encoders do)")
        if entry["status"] == "superseded" and not entry.get("superseded_by"):
            raise ValueError(f"{where}: a superseded entry needs 'superseded_by' (the version replacing it)")
    for entry in registry.get("models", []):
        if entry.get("superseded_by") and (entry["name"], entry["superseded_by"]) not in versions:
            raise ValueError(f"models.json: {entry['name']} v{entry['version']} is superseded by "
                             f"v{entry['superseded_by']}, which has no entry")


def find(registry, name, version=None):
    """The entry `name` that is not superseded, or the one of `version`."""
    for entry in registry["models"]:
        if entry["name"] == name and (entry["version"] == version if version else entry["status"] != "superseded"):
            return entry
    if version and any(e["name"] == name for e in registry["models"]):
        raise KeyError(f"zoo entry {name!r} has no version {version}")
    known = ", ".join(dict.fromkeys(e["name"] for e in registry["models"]))
    raise KeyError(f"no zoo entry named {name!r}; known: {known}")


def save(registry, path=REGISTRY):
    """Validates, then writes atomically (wmse_tf.atomic_io.write_json)."""
    validate(registry)
    atomic_io.write_json(path, registry)


def update(name, fields, path=REGISTRY, version=None):
    """Sets `fields` on entry `name` (`find`) and saves; returns the entry."""
    registry = load(path)
    entry = find(registry, name, version)
    entry.update(fields)
    save(registry, path)
    return entry


def publish_version(entry, path=REGISTRY):
    """Adds the published `entry`, a new version of a built name; the entry it replaces is kept
    as "superseded" (`superseded_by`). Returns the new entry."""
    registry = load(path)
    old = find(registry, entry["name"])
    if entry["version"] <= old["version"]:
        raise ValueError(f"{entry['name']}: version {entry['version']} does not follow v{old['version']}")
    new = dict(entry, status="published")
    old.update(status="superseded", superseded_by=new["version"])
    registry["models"].insert(registry["models"].index(old), new)
    save(registry, path)
    return new


def protocol(eval_config):
    """The evaluation protocol as the registry records it beside the metrics."""
    probe = eval_config.probe
    return {"views": "un-augmented eval transform (frozen encoder)",
            "linear": {"epochs": probe.epochs, "batch_size": probe.batch_size, "optimizer": "Adam (L2 weight decay)",
                       "lr_start": probe.lr_start, "lr_end": probe.lr_end, "weight_decay": probe.weight_decay,
                       "standardize": probe.standardize},
            "knn": list(eval_config.knn)}


def metrics(results, eval_config):
    """The registry's metrics of an evaluation's results (`wmse_tf.evaluation.evaluator.evaluate`)."""
    return {"linear": {k: results["linear"][k] for k in ("top1", "top5")},
            "knn": {k: {"top1": v["top1"]} for k, v in results["knn"].items()},
            "dataset": results["dataset"], "train_split": results["train_split"],
            "test_split": results["test_split"], "num_train": results["num_train"],
            "num_test": results["num_test"], "protocol": protocol(eval_config)}
