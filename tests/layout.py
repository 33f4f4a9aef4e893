"""Reading wmse_tf's imports from its source (ast), for the layout tests."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def path_of(module):
    """wmse_tf.a.b -> its file: wmse_tf/a/b.py or wmse_tf/a/b/__init__.py (None if neither)."""
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(path):
            return path
    return None


def modules():
    """Every module of wmse_tf, dotted (packages as their own name)."""
    out = []
    for d, _, files in os.walk(os.path.join(ROOT, "wmse_tf")):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(out)


def imports(module, top_level_only=False):
    """Modules `module` imports: absolute names; `from pkg import name` gives pkg.name when that
    is a module of ours, else pkg. Importing a.b.c also imports the packages a and a.b."""
    with open(path_of(module)) as f:
        tree = ast.parse(f.read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append(sub if node.module.startswith("wmse_tf") and path_of(sub) else node.module)
    out = []
    for name in found:
        parts = name.split(".")
        out += [".".join(parts[:i]) for i in range(2, len(parts))] if parts[0] == "wmse_tf" else []
        out.append(name)
    return out
