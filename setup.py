"""The wheel's one build step beyond pyproject.toml: copies of the flagfiles and the zoo registry.

`configs/*.flags` and `zoo/models.json` sit at the top of the repository, outside the package
(bench.table1 and the zoo record the flagfiles' sha1, so they stay where they are). A wheel
carries byte-identical copies in `wmse_tf/_resources/`, where `wmse_tf.resources` finds them
once installed; a checkout (or an editable install) reads the originals.
"""

import glob
import os

from setuptools import setup
from setuptools.command.build_py import build_py

RESOURCES = {"configs": "configs/*.flags", "zoo": "zoo/models.json"}  # wheel sub-dir -> source files


class BuildPyWithResources(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's files
        for sub, pattern in RESOURCES.items():
            target = os.path.join(self.build_lib, "wmse_tf", "_resources", sub)
            self.mkpath(target)
            for path in sorted(glob.glob(pattern)):
                self.copy_file(path, os.path.join(target, os.path.basename(path)))


setup(cmdclass={"build_py": BuildPyWithResources})
