"""The flagfiles (`configs/*.flags`) and the zoo registry (`zoo/models.json`), installed or not.

Both sit at the top of the repository, outside the package. A wheel carries copies of them in
`wmse_tf/_resources/` (setup.py); from a checkout or an editable install the originals are
read, so `--flagfile=configs/stl10.flags` from the repository and `flagfile("stl10")` name the
same bytes. No TensorFlow.

  python -m wmse_tf.resources                  # the flagfiles' names and where they are
  python -m wmse_tf.resources stl10            # the path of configs/stl10.flags
  python -m wmse_tf.train --flagfile="$(python -m wmse_tf.resources stl10)" --print_config

Example:
    >>> from wmse_tf import resources
    >>> resources.flagfile("fashion_mnist")   # '/.../configs/fashion_mnist.flags'
"""

import os
import sys

from wmse_tf import cli
from wmse_tf.errors import UserError

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_PACKAGED = os.path.join(_PACKAGE, "_resources")
_CHECKOUT = os.path.dirname(_PACKAGE)


def _base(sub: str) -> str:
    """`_resources/<sub>` of a wheel, else `<checkout>/<sub>` when this package sits in its checkout."""
    packaged = os.path.join(_PACKAGED, sub)
    if os.path.isdir(packaged):
        return packaged
    if os.path.isfile(os.path.join(_CHECKOUT, "pyproject.toml")):
        return os.path.join(_CHECKOUT, sub)
    raise UserError(f"wmse_tf's {sub}/ files are neither packaged ({packaged}) nor in a checkout "
                    f"({_CHECKOUT}); reinstall wmse_tf from its wheel or work from the repository")


def configs_dir() -> str:
    """The folder of the flagfiles: `configs/` of the checkout, or the wheel's copy."""
    return _base("configs")


def flagfiles() -> list:
    """Names of the flagfiles, sorted (`stl10` for `configs/stl10.flags`)."""
    return sorted(f[: -len(".flags")] for f in os.listdir(configs_dir()) if f.endswith(".flags"))


def flagfile(name: str) -> str:
    """Path of flagfile `name` ("stl10", "stl10.flags" or "configs/stl10.flags").

    Raises:
      UserError: no such flagfile (the message lists them).
    """
    stem = os.path.basename(name).removesuffix(".flags")
    path = os.path.join(configs_dir(), stem + ".flags")
    if not os.path.isfile(path):
        raise UserError(f"no flagfile {name!r} in {configs_dir()}; there are: {', '.join(flagfiles())}")
    return path


def zoo_registry() -> str:
    """Path of the zoo registry, `zoo/models.json` of the checkout or the wheel's copy."""
    return os.path.join(_base("zoo"), "models.json")


def main(argv) -> int:
    """`python -m wmse_tf.resources [NAME]`: the path of flagfile NAME, or every name and the paths."""
    try:
        if len(argv) > 1:
            print(flagfile(argv[1]))
        else:
            print(f"flagfiles in {configs_dir()}: {' '.join(flagfiles())}")
            print(f"zoo registry: {zoo_registry()}")
    except UserError as e:
        return cli.fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
