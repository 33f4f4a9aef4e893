"""The package layout shows the architecture: wmse_tf's layers import downwards only (read from the
source), each package says what it owns and may import, the library imports none of its commands,
benchmarks or zoo; in wmse_tf, bench and zoo no import cycle and no module past 300 lines."""

import pytest

from tests import layout

# Bottom to top. A module may import its own layer and the layers below it, never above.
LAYERS = (
    ("wmse_tf.atomic_io", "wmse_tf.errors", "wmse_tf.lazy", "wmse_tf.cli", "wmse_tf.resources", "wmse_tf.onednn",
     "wmse_tf.onednn_check", "wmse_tf.tf_log"),
    ("wmse_tf.core",),
    ("wmse_tf.data",),
    ("wmse_tf.methods",),
    ("wmse_tf.export",),
    ("wmse_tf.evaluation",),
    ("wmse_tf.training",),
    ("wmse_tf.train", "wmse_tf.evaluate", "wmse_tf.demo", "wmse_tf"),
)
# Inside the bottom layer: each of these imports nothing of wmse_tf but what is listed.
BASE_IMPORTS = {"wmse_tf.atomic_io": set(), "wmse_tf.errors": set(), "wmse_tf.lazy": set(), "wmse_tf.cli": {"wmse_tf.errors"},
                "wmse_tf.resources": {"wmse_tf.errors", "wmse_tf.cli"},
                "wmse_tf.onednn": {"wmse_tf.atomic_io", "wmse_tf.onednn_check"}, "wmse_tf.onednn_check": set(),
                "wmse_tf.tf_log": set()}
MAX_LINES = 300
SCOPE = ("wmse_tf", "bench", "zoo")  # the packages checked for cycles and module length


def layer(module):
    """Index in LAYERS of the entry that is `module` or a package holding it."""
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (i, name)
    assert best is not None, f"{module} is in no layer of tests/test_layout.py"
    return best[0]


def test_every_module_has_a_layer_and_the_packages_are_there():
    mods = layout.modules()
    assert {"wmse_tf.core.whitening", "wmse_tf.data.pipeline", "wmse_tf.methods.byol", "wmse_tf.export.serving",
            "wmse_tf.evaluation.linear_probe", "wmse_tf.training.trainer"} <= set(mods)
    for m in mods:
        layer(m)


def test_imports_point_down():
    wrong = []
    for module in layout.modules():
        for target in layout.imports(module):
            if target.split(".")[0] in ("bench", "zoo", "tests"):
                wrong.append(f"{module} imports {target}: the library imports none of bench, zoo, tests")
            if target.split(".")[0] != "wmse_tf" or target == "wmse_tf":
                continue
            if layer(target) > layer(module):
                wrong.append(f"{module} imports {target} (layer {layer(target)} > {layer(module)})")
            elif module in BASE_IMPORTS and target not in BASE_IMPORTS[module]:
                wrong.append(f"{module} imports {target}: the base modules import nothing of ours")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_catches_an_upward_import(monkeypatch):
    """The check above can fail: a core module importing training is reported."""
    real = layout.imports
    monkeypatch.setattr(layout, "imports", lambda m, top_level_only=False: real(m) + (
        ["wmse_tf.training.trainer"] if m == "wmse_tf.core.whitening" else []))
    with pytest.raises(AssertionError, match="wmse_tf.core.whitening imports wmse_tf.training.trainer"):
        test_imports_point_down()


@pytest.mark.parametrize("package", [n for names in LAYERS[1:-1] for n in names] + ["wmse_tf.demo"])
def test_each_package_says_what_it_owns_and_may_import(package):
    with open(layout.path_of(package)) as f:
        text = f.read()
    assert text.startswith('"""') and "Owns:" in text or "Every method is registered" in text, package
    assert "May import:" in text, package


def test_no_import_cycle():
    assert layout.cycles(layout.import_graph(SCOPE)) == []


def test_the_cycle_check_catches_a_cycle(monkeypatch):
    """The check above can fail: two modules importing each other (even inside functions), and a
    longer loop, are reported; a module importing its own package is not a cycle."""
    assert layout.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}) == [["a", "b", "c"]]
    real = layout.imports
    monkeypatch.setattr(layout, "imports", lambda m, top_level_only=False, parents=True: real(m, parents=parents) + (
        ["wmse_tf.demo.runner", "wmse_tf.demo"] if m == "wmse_tf.demo.report" else []))
    assert layout.cycles(layout.import_graph(SCOPE)) == [["wmse_tf.demo.report", "wmse_tf.demo.runner"]]


@pytest.mark.parametrize("package", SCOPE)
def test_no_module_over_300_lines(package):
    long = {}
    for module in layout.modules(package):
        with open(layout.path_of(module)) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[module] = n
    assert not long, long
