"""Reading our packages' imports from their source (ast), for the layout tests."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("wmse_tf", "bench", "zoo", "tests")  # top-level packages of this repository


def path_of(module):
    """wmse_tf.a.b -> its file: wmse_tf/a/b.py or wmse_tf/a/b/__init__.py (None if neither)."""
    base = os.path.join(ROOT, *module.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(path):
            return path
    return None


def modules(package="wmse_tf"):
    """Every module of a top-level package, dotted (packages as their own name)."""
    out = []
    for d, _, files in os.walk(os.path.join(ROOT, package)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                out.append(rel[: -len(".__init__")] if rel.endswith(".__init__") else rel)
    return sorted(out)


def imports(module, top_level_only=False, parents=True):
    """Modules `module` imports: absolute names; `from pkg import name` gives pkg.name when that
    is a module of ours, else pkg. Importing a.b.c also imports the packages a.b (with `parents`)."""
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
                found.append(sub if node.module.split(".")[0] in OURS and path_of(sub) else node.module)
    out = []
    for name in found:
        parts = name.split(".")
        if parents and parts[0] in OURS:
            out += [".".join(parts[:i]) for i in range(2, len(parts))]
        out.append(name)
    return out


def import_graph(packages):
    """{module: set of modules of `packages` it imports}, without the implicit parent packages and
    without a module's own enclosing packages (Python initializes those first: not a cycle)."""
    graph = {}
    for package in packages:
        for module in modules(package):
            graph[module] = {t for t in imports(module, parents=False)
                             if t.split(".")[0] in packages and path_of(t) and t != module
                             and not module.startswith(t + ".")}
    return graph


def cycles(graph):
    """The import cycles of `graph`: each strongly connected component of more than one module
    (Tarjan's algorithm), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)
