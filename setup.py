"""Build hook only (the metadata is in pyproject.toml): the wheel carries the model zoo (index and weights) and the
bundled example pairs under ``corrmark/_bundled/``, so an installed corrmark runs ``corrmark demo`` and
``corrmark zoo --check`` from any folder. In a source checkout the same files are read from ``zoo/`` and
``examples/`` directly (``corrmark.bundled``)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("zoo", "examples")  # top-level folders copied into the package


class BuildPyWithBundled(build_py):
    def run(self):
        super().run()
        root = Path(__file__).resolve().parent
        for folder in BUNDLED:
            target = Path(self.build_lib) / "corrmark" / "_bundled" / folder
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(root / folder, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "make_*.py"))


setup(cmdclass={"build_py": BuildPyWithBundled})
