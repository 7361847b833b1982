"""The wheel also carries the course files (tests/, tutorials/, README.md, LICENSE, pyproject.toml) inside the
package, as ``minise/_kit``: ``minise assignments make``, ``check`` and ``grade`` need the graded tests, and a
wheel install has no checkout beside it (minise.assignments.make.project_root). Everything else is in
pyproject.toml; an editable install uses the checkout itself and copies nothing."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KIT = ["tests", "tutorials", "README.md", "LICENSE", "pyproject.toml"]
LEFT_OUT = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "_out", "tutorial_out")


class BuildWithCourseKit(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        kit = Path(self.build_lib) / "minise" / "_kit"
        shutil.rmtree(kit, ignore_errors=True)
        kit.mkdir(parents=True)
        for name in KIT:
            src = Path(name)
            if src.is_dir():
                shutil.copytree(src, kit / name, ignore=LEFT_OUT)
            elif src.is_file():
                shutil.copy2(src, kit / name)


setup(cmdclass={"build_py": BuildWithCourseKit})
