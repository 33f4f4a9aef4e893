"""Packaging: ranges in pyproject, exact pins in requirements.txt, a wheel that works on its own.

The wheel is built from a copy of the package's sources (the checkout stays clean). The slow
test installs it into a fresh venv without the dev extra and runs a command and every import
there, from a directory outside the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml (tomllib)")

import wmse_tf
from wmse_tf import resources
from wmse_tf.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_TOOLS = {"pytest", "pytest-xdist", "execnet", "hypothesis"}
SUBPACKAGES = ("core", "data", "methods", "export", "evaluation", "training", "demo")


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _pins():
    """{normalized name: version} of requirements.txt."""
    pins = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                req = Requirement(line)
                assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
                pins[_norm(req.name)] = next(iter(req.specifier)).version
    return pins


def _norm(name):
    return name.lower().replace("_", "-")


def test_version_matches_pyproject_and_changelog():
    version = _pyproject()["version"]
    assert wmse_tf.__version__ == version
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        assert f"## [{version}] - " in f.read()


def test_library_declares_ranges_and_keeps_test_tools_in_the_dev_extra():
    project = _pyproject()
    runtime = [Requirement(r) for r in project["dependencies"]]
    assert runtime and all(s.operator != "==" for r in runtime for s in r.specifier)
    assert not TEST_TOOLS & {_norm(r.name) for r in runtime}
    extras = project["optional-dependencies"]
    assert {"serving", "export", "dev"} <= set(extras)
    dev = {_norm(Requirement(r).name) for r in extras["dev"]}
    assert {"pytest", "pytest-xdist", "hypothesis"} <= dev


def test_requirements_pins_every_declared_package_within_its_range():
    pins, project = _pins(), _pyproject()
    declared = list(project["dependencies"]) + [r for rs in project["optional-dependencies"].values() for r in rs]
    for line in declared:
        req = Requirement(line)
        if _norm(req.name) == "wmse-tf":  # dev's "wmse_tf[serving,export]"
            continue
        assert _norm(req.name) in pins, f"{req.name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[_norm(req.name)]), f"{req.name}=={pins[_norm(req.name)]} outside {req}"


def test_the_license_file_is_the_apache_2_0_licence_pyproject_declares():
    assert _pyproject()["license"] == {"text": "Apache-2.0"}
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    for needle in ("Apache License", "Version 2.0, January 2004", "TERMS AND CONDITIONS FOR USE, REPRODUCTION",
                   "9. Accepting Warranty or Additional Liability.", "END OF TERMS AND CONDITIONS"):
        assert needle in text, needle


def test_resources_from_the_checkout_are_the_repository_files():
    assert resources.flagfiles() == sorted(f[:-6] for f in os.listdir(os.path.join(ROOT, "configs"))
                                           if f.endswith(".flags"))
    for name in ("stl10", "stl10.flags", "configs/stl10.flags"):
        assert os.path.samefile(resources.flagfile(name), os.path.join(ROOT, "configs", "stl10.flags"))
    assert os.path.samefile(resources.zoo_registry(), os.path.join(ROOT, "zoo", "models.json"))
    with pytest.raises(UserError, match="no flagfile 'stl11'.*stl10"):
        resources.flagfile("stl11")


def test_resources_command(capsys):
    assert resources.main(["resources", "cifar10"]) == 0
    assert os.path.samefile(capsys.readouterr().out.strip(), os.path.join(ROOT, "configs", "cifar10.flags"))
    assert resources.main(["resources", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no flagfile 'nope'") and err.count("\n") == 1


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of the sources (pip wheel, no build isolation: setuptools of the venv)."""
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "_resources", "*.pyc")
    shutil.copytree(os.path.join(ROOT, "wmse_tf"), src / "wmse_tf", ignore=ignore)
    shutil.copytree(os.path.join(ROOT, "configs"), src / "configs")
    os.makedirs(src / "zoo")
    shutil.copy(os.path.join(ROOT, "zoo", "models.json"), src / "zoo")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), src)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("wmse_tf-*.whl")
    return path, src


def test_wheel_carries_the_flagfiles_the_zoo_registry_and_the_shipped_rows(wheel):
    wheel, src = wheel  # src: the checkout's files as copied for the build
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert sorted(os.listdir(src / "configs")) == sorted(os.listdir(os.path.join(ROOT, "configs")))
        for f in os.listdir(src / "configs"):
            assert z.read(f"wmse_tf/_resources/configs/{f}") == (src / "configs" / f).read_bytes(), f
        assert z.read("wmse_tf/_resources/zoo/models.json") == (src / "zoo" / "models.json").read_bytes()
        shipped = sorted(os.listdir(src / "wmse_tf" / "demo" / "shipped_rows"))  # the demo's baseline rows
        assert shipped and all(z.read(f"wmse_tf/demo/shipped_rows/{f}") ==
                               (src / "wmse_tf" / "demo" / "shipped_rows" / f).read_bytes() for f in shipped)
        metadata = z.read(f"wmse_tf-{wmse_tf.__version__}.dist-info/METADATA").decode()
        licenses = [n for n in names if n.startswith(f"wmse_tf-{wmse_tf.__version__}.dist-info/")
                    and n.endswith("/LICENSE")]  # dist-info/LICENSE, or dist-info/licenses/LICENSE
        assert licenses and z.read(licenses[0]) == (src / "LICENSE").read_bytes(), sorted(names)[-8:]
    assert {f"wmse_tf/{p}/__init__.py" for p in SUBPACKAGES} <= names
    runtime = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
               if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert runtime and not TEST_TOOLS & {_norm(r.name) for r in runtime}


FRESH_CHECK = """
import importlib, importlib.metadata, importlib.util, json, pkgutil, sys
import wmse_tf
from wmse_tf import resources
assert importlib.util.find_spec("pytest") is None and importlib.util.find_spec("hypothesis") is None
assert importlib.metadata.version("wmse_tf") == wmse_tf.__version__
assert "site-packages" in resources.flagfile("stl10") and "site-packages" in resources.zoo_registry()
modules = []
for name in sys.argv[1:]:
    package = importlib.import_module("wmse_tf." + name)
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        modules.append(info.name)
print(json.dumps({"modules": modules, "registry": json.load(open(resources.zoo_registry()))}))
"""


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_without_dev_extra_runs_train_and_every_import(wheel, tmp_path):
    wheel, _ = wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # The exact pins of requirements.txt as constraints: the tested versions (and pip's cache).
    subprocess.run([py, "-m", "pip", "install", "-q", "-c", os.path.join(ROOT, "requirements.txt"), str(wheel)],
                   check=True, timeout=1500)
    work = tmp_path / "elsewhere"  # not the checkout: nothing is found through the current directory
    work.mkdir()
    flagfile = subprocess.run([py, "-m", "wmse_tf.resources", "stl10"], cwd=work, check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()
    assert str(venv) in flagfile
    out = subprocess.run([py, "-m", "wmse_tf.train", f"--flagfile={flagfile}", "--print_config"], cwd=work,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stl10" in out.stdout
    check = subprocess.run([py, "-c", FRESH_CHECK, *SUBPACKAGES], cwd=work, capture_output=True, text=True,
                           timeout=300)
    assert check.returncode == 0, check.stderr[-3000:]
    result = json.loads(check.stdout.strip().splitlines()[-1])
    assert {f"wmse_tf.{p}" for p in SUBPACKAGES} <= {m.rsplit(".", 1)[0] for m in result["modules"]}
    with zipfile.ZipFile(wheel) as z:  # the registry as built (the fast test compares it with zoo/models.json)
        assert result["registry"] == json.loads(z.read("wmse_tf/_resources/zoo/models.json"))
