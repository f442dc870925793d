"""Build hook: the wheel carries the course (notebooks, exercise sets, solutions, recorded results)
inside the package, in advlab/_course/, where advlab.resources finds it. Everything else is in
pyproject.toml. Editable installs read the checkout instead."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

COURSE_DIRS = ("notebooks", "exercises", "solutions", "docs/results")   # = advlab.resources.COURSE_DIRS


class BuildWithCourse(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        here = Path(__file__).resolve().parent
        dst = Path(self.build_lib) / "advlab" / "_course"
        for rel in COURSE_DIRS:
            if not (here / rel).is_dir():
                raise FileNotFoundError(f"building the wheel: {rel}/ is missing from {here}")
            shutil.copytree(here / rel, dst / rel, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.pyc"))


setup(cmdclass={"build_py": BuildWithCourse})
