"""Where the course's files are, in a repository checkout and in an installed wheel.

The course is the notebooks (notebooks/), the exercise sets (exercises/, solutions/) and the recorded
results the lectures read (docs/results/, with the evaluation records in docs/results/records/).
In a checkout they sit next to the package; a wheel carries a copy of them inside the package, in
advlab/_course/ (setup.py copies them at build time), read from here with importlib.resources; and
`advlab course init DIR` copies them out into DIR, marked by a MARKER file, for `jupyter lab DIR`.

    resources.course_root()      # the folder with notebooks/, exercises/, solutions/, docs/results/
    resources.results_dir()      # its docs/results: the recorded runs the lectures quote
"""
from __future__ import annotations

import shutil
from importlib import resources as _res
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
COURSE_DIRS = ("notebooks", "exercises", "solutions", "docs/results")
MARKER = ".advlab-course"


def packaged() -> Path | None:
    """The course copy inside the installed package (advlab/_course), or None (a checkout has none)."""
    p = Path(str(_res.files("advlab") / "_course"))
    return p if (p / "notebooks").is_dir() else None


def checkout() -> Path | None:
    """The repository checkout this package is imported from (an editable install), or None."""
    ok = (CHECKOUT / "notebooks").is_dir() and (CHECKOUT / "pyproject.toml").is_file()
    return CHECKOUT if ok else None


def course_root() -> Path | None:
    """The checkout's course if advlab runs from one, else the copy shipped in the wheel, else None."""
    return checkout() or packaged()


def results_dir() -> Path:
    """The recorded results (docs/results) of the checkout, else of the wheel's copy; a clear
    FileNotFoundError when neither exists (a wheel built without them)."""
    root = course_root()
    if root is None or not (root / "docs" / "results").is_dir():
        raise FileNotFoundError(f"advlab's recorded results (docs/results) are neither in a checkout ({CHECKOUT}) "
                                "nor shipped in this installation (advlab/_course); reinstall advlab from a wheel "
                                "built with `pip wheel .` in the repository")
    return root / "docs" / "results"


def init_course(dest: str | Path, force: bool = False) -> Path:
    """Copy the course (notebooks, exercise sets, solutions, recorded results) into `dest` so that
    `jupyter lab DEST` works without the repository; returns dest. Refuses a non-empty dest that is
    not an earlier copy unless force=True; never overwrites a notebook a student has changed without
    force=True (an earlier copy's notebooks are kept)."""
    src = course_root()
    if src is None:
        raise FileNotFoundError("the course files are not installed: neither a checkout nor advlab/_course exists; "
                                "reinstall advlab from its wheel")
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"dest: {dest} is a file, not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).exists() and not force:
        raise ValueError(f"dest: {dest} is not empty and not an advlab course folder; choose an empty or new folder "
                         "(or pass force=True / --force)")
    for rel in COURSE_DIRS:
        if not (src / rel).is_dir():
            raise FileNotFoundError(f"the installed course has no {rel}/ (looked in {src})")
        for f in sorted((src / rel).rglob("*")):
            if f.is_dir() or "__pycache__" in f.parts or ".ipynb_checkpoints" in f.parts:
                continue
            out = dest / rel / f.relative_to(src / rel)
            if out.exists() and not force and f.suffix == ".ipynb":
                continue                                    # a student's edits survive a second init
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, out)
    import advlab
    (dest / MARKER).write_text(f"advlab {advlab.__version__}: a course folder made by `advlab course init`\n")
    (dest / "README.md").write_text(
        "# advlab course\n\n"
        "Made by `advlab course init`. Open it with `jupyter lab .` and start with `notebooks/00_*.ipynb`.\n\n"
        "- `notebooks/`: the lectures; `exercises/`: the exercise sets (blanks to fill, checked by `advlab.checks`);\n"
        "  `solutions/`: the same with answers; `docs/results/`: the recorded runs the lectures quote.\n"
        "- Run everything in batch: `advlab course run --root . --out build` (papermill; results in build/).\n"
        "- Lectures write their figures and json into `build/results/NN` of this folder.\n")
    return dest
