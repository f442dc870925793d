"""Run the course notebooks, generate the exercise notebooks, keep committed notebooks clean.

    advlab course run --profile quick [--only 00,01]    # = course.run(...)
    advlab course make-exercises [--check]              # = course.make_exercises(...)
    python -m advlab.course run --kind all --out build  # notebooks, solutions and exercises

Layout (relative to the repository root, found from this file or the current directory):
  notebooks/NN_*.ipynb   the lectures
  solutions/NN_*.ipynb   the exercise sets with their answers between `### BEGIN SOLUTION` and
                         `### END SOLUTION` lines (the source of truth)
  exercises/NN_*.ipynb   generated from solutions/ by make_exercises(): each marked region becomes
                         `# YOUR CODE HERE` + `raise NotImplementedError`; never edit by hand

`run` executes with papermill into OUT/<kind>/NN_*.ipynb, passing PROFILE, DEVICE and
OUT_DIR = OUT/results/NN (OUT/results/<kind>/NN for solutions and exercises), plus
INTERACTIVE=False where a notebook defines it (so no widgets are displayed in batch runs).
Exercise notebooks run cell by cell with nbclient: an error is tolerated only when it is the
NotImplementedError of a blank (the cell is tagged `raises-exception` in the executed copy, so
nbval accepts it too); any other error fails the run. Both runners print a line per executed code
cell (`--progress cells`, the default) and start their kernels with KERNEL_ARGUMENTS (a quiet kernel
log: no "running over TCP without encryption" warning per notebook).

Inside a notebook, `results_dir(OUT_DIR)` resolves the OUT_DIR parameter: absolute paths as they
are, relative ones against the repository root (find_root), never against the kernel's working
directory.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import threading
import time
from pathlib import Path
from unittest import mock

KINDS = ("notebooks", "solutions", "exercises")
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BLANK_CODE = ("# YOUR CODE HERE", "raise NotImplementedError")
BLANK_MARKDOWN = "_YOUR ANSWER HERE_"
SOLUTION_ONLY_TAG = "solution-only"
KERNEL_NAME = "python3"
_NB_RE = re.compile(r"^(\d\d)_.*\.ipynb$")


COURSE_DATASET = "fashion_mnist"   # the only dataset with zoo models and evaluation records
COURSE_EPS = 0.1                   # the course's L∞ budget: the zoo's robust models and the records use it


def dataset_for(injected: str | None = None) -> str:
    """The dataset a lecture runs on: Fashion-MNIST, the only one with zoo models and records.

    DATASET is not a notebook parameter; a lecture calls `dataset_for(globals().get("DATASET"))`, so a
    run that passes one anyway (`papermill -p DATASET mnist`) stops with a ValueError naming it instead
    of silently running on Fashion-MNIST."""
    if injected not in (None, COURSE_DATASET):
        raise ValueError(f"DATASET: the course's zoo models and evaluation records are Fashion-MNIST only "
                         f"({COURSE_DATASET!r}), got {injected!r}; DATASET is not a parameter of the lectures "
                         "(advlab.data and advlab.training work on other datasets in your own code)")
    return COURSE_DATASET


def eps_parameter(eps) -> float:
    """A lecture's EPS parameter, checked (a number in (0, 1]), as a float. When it is not the course's
    0.1 it says so: the zoo's robust models were trained, and the recorded runs the text quotes were
    measured, at 0.1, so this run's numbers compare with each other, not with those."""
    from advlab.validate import check_eps
    eps = float(check_eps(eps, "EPS"))
    if not 0 < eps <= 1:
        raise ValueError(f"EPS: an L∞ budget in (0, 1] (images live in [0, 1]), got {eps!r}")
    if eps != COURSE_EPS:
        print(f"EPS = {eps}: this run attacks at L∞ ε = {eps}. The zoo's robust models were trained, and the "
              f"recorded runs the text quotes were measured, at ε = {COURSE_EPS}: compare this run's numbers "
              "with each other, not with those.")
    return eps


def _is_course_root(folder: Path) -> bool:
    from advlab.resources import MARKER
    return (folder / "notebooks").is_dir() and ((folder / "advlab").is_dir() or (folder / "pyproject.toml").is_file()
                                                or (folder / MARKER).is_file())


def find_root(start: str | Path | None = None) -> Path | None:
    """The course's root at or above `start` (default: the current directory): the first folder, walking
    up, that holds notebooks/ and advlab/ (or pyproject.toml, or the marker of a folder made by
    `advlab course init`); None if there is none."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_course_root(folder):
            return folder
    return None


def repo_root(root: str | Path | None = None) -> Path:
    """The folder holding notebooks/: `root`, else the current directory if it has notebooks/, else
    the course root above the current directory (find_root), else the checkout this package lives
    in, else the course copy shipped in the wheel (advlab.resources), else the current directory."""
    if root is not None:
        return Path(root)
    cwd = Path.cwd()
    if (cwd / "notebooks").is_dir():
        return cwd
    found = find_root(cwd)
    if found is not None:
        return found
    from advlab import resources
    return resources.course_root() or cwd


def results_dir(out_dir: str | Path, root: str | Path | None = None, create: bool = True) -> Path:
    """The folder a notebook writes its result files to, from its OUT_DIR parameter.

    An absolute OUT_DIR is used as it is (`advlab course run` passes absolute paths). A relative one
    is taken relative to the repository root, not to the kernel's working directory, so that
    `jupyter lab notebooks/`, papermill from the repository root and a kernel started anywhere inside
    the checkout all write build/results/NN at the top of the checkout. The root is `root`, else
    find_root() from the current directory (a checkout or a folder made by `advlab course init`),
    else the checkout this package lives in, else the current directory. The folder is created unless create=False."""
    path = Path(out_dir).expanduser()
    if not path.is_absolute():
        if root is None:
            root = find_root()
        if root is None:
            from advlab import resources
            root = resources.checkout() or Path.cwd()     # never inside an installed package
        path = Path(root) / path
    path = path.resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _parse_only(only) -> set[str] | None:
    if only is None or only == "":
        return None
    items = only.split(",") if isinstance(only, str) else list(only)
    out = set()
    for it in items:
        it = str(it).strip()
        if not it:
            continue
        if not it.isdigit():
            raise ValueError(f"only: expected notebook numbers like '00,01', got {only!r}")
        out.add(f"{int(it):02d}")
    return out


def list_notebooks(kind: str = "notebooks", only=None, root: str | Path | None = None) -> list[Path]:
    """notebooks/NN_*.ipynb (or solutions/, exercises/) sorted by name, filtered by `only`."""
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {KINDS}, got {kind!r}")
    wanted = _parse_only(only)
    folder = repo_root(root) / kind
    paths = sorted(p for p in folder.glob("*.ipynb") if _NB_RE.match(p.name))
    return [p for p in paths if wanted is None or p.name[:2] in wanted]


# ---------------------------------------------------------------------------------------------
# notebook hygiene


def _read(path) -> "nbformat.NotebookNode":  # noqa: F821
    import nbformat
    return nbformat.read(str(path), as_version=4)


def dumps(nb) -> str:
    """The canonical text of a notebook: nbformat's JSON (indent 1, sorted keys) + a newline."""
    import nbformat
    s = nbformat.writes(nb, version=4)
    return s if s.endswith("\n") else s + "\n"


def _strip_nb(nb) -> bool:
    """Remove outputs, execution counts and execution metadata in place; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code":
            if cell.get("outputs"):
                cell.outputs = []
                changed = True
            if cell.get("execution_count") is not None:
                cell.execution_count = None
                changed = True
        for key in ("execution", "papermill", "collapsed", "scrolled"):
            if key in cell.get("metadata", {}):
                del cell.metadata[key]
                changed = True
    for key in ("papermill", "widgets"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    return changed


def strip_outputs(path: str | Path) -> bool:
    """Rewrite the notebook at `path` without outputs, execution counts and papermill metadata.
    Returns True if the file changed."""
    path = Path(path)
    nb = _read(path)
    _strip_nb(nb)
    text = dumps(nb)
    if path.read_text(encoding="utf-8") == text:
        return False
    path.write_text(text, encoding="utf-8")
    return True


def find_unstripped(paths) -> list[str]:
    """Problems of committed notebooks: 'PATH: cell N has outputs' / '... an execution count'."""
    problems = []
    for path in paths:
        nb = _read(path)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if cell.get("outputs"):
                problems.append(f"{path}: cell {i} has outputs")
            if cell.get("execution_count") is not None:
                problems.append(f"{path}: cell {i} has an execution count")
        if "papermill" in nb.metadata:
            problems.append(f"{path}: has papermill metadata (an executed copy?)")
    return problems


# ---------------------------------------------------------------------------------------------
# exercises from solutions


def blank_solution(source: str, where: str = "", markdown: bool = False) -> tuple[str, int]:
    """Replace every BEGIN/END SOLUTION region of a cell's source by the blank, keeping the
    indentation of the BEGIN line. Returns (new source, number of regions)."""
    out, inside, n, indent = [], False, 0, ""
    for lineno, line in enumerate(source.split("\n"), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"{where}: line {lineno}: nested {BEGIN!r}")
            inside, n = True, n + 1
            indent = line[: len(line) - len(line.lstrip())]
            if markdown:
                out.append(indent + BLANK_MARKDOWN)
            else:
                out.extend(indent + b for b in BLANK_CODE)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{where}: line {lineno}: {END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: {BEGIN!r} without {END!r}")
    return "\n".join(out), n


def exercise_from_solution(nb, where: str = ""):
    """The exercise notebook of a solution notebook (a new object; `nb` is not modified)."""
    ex = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(ex.cells):
        if SOLUTION_ONLY_TAG in cell.get("metadata", {}).get("tags", []):
            continue
        cell.source, _ = blank_solution(cell.source, f"{where} cell {i}", markdown=cell.cell_type == "markdown")
        cells.append(cell)
    ex.cells = cells
    _strip_nb(ex)
    return ex


def make_exercises(check: bool = False, root: str | Path | None = None) -> int:
    """Write exercises/NN_*.ipynb from solutions/NN_*.ipynb. check=True writes nothing and returns
    1 (listing the files) if any exercise notebook differs from what would be generated, or has
    no solution notebook. Both modes return 1 when solutions/ holds no notebook at all (a wrong root
    must not pass as "in sync")."""
    root = repo_root(root)
    sol_dir, ex_dir = root / "solutions", root / "exercises"
    drift = []
    expected = set()
    for sol in list_notebooks("solutions", root=root):
        target = ex_dir / sol.name
        expected.add(target.name)
        text = dumps(exercise_from_solution(_read(sol), str(sol.relative_to(root))))
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            continue
        drift.append(f"{target.relative_to(root)}" + (" (missing)" if current is None else " (differs)"))
        if not check:
            ex_dir.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    if not expected:
        print(f"no solution notebooks in {sol_dir} (solutions/NN_*.ipynb): nothing to generate exercises from; "
              f"run this from the course's repository or pass its root", file=sys.stderr)
        return 1
    orphans = [p for p in list_notebooks("exercises", root=root) if p.name not in expected]
    for p in orphans:
        drift.append(f"{p.relative_to(root)} (no solutions/{p.name})")
    if check:
        if drift:
            print("exercises out of sync with solutions (run `advlab course make-exercises`):")
            for d in drift:
                print(f"  {d}")
            return 1
        print(f"exercises in sync with solutions ({len(expected)} notebooks)")
        return 0
    for d in drift:
        if "(no solutions/" in d:
            print(f"warning: {d}", file=sys.stderr)
        else:
            print(f"wrote {d.split(' (')[0]}")
    if not [d for d in drift if "(no solutions/" not in d]:
        print(f"exercises already up to date ({len(expected)} notebooks)")
    return 0


# ---------------------------------------------------------------------------------------------
# execution


def _parameters_source(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return cell.source
    return ""


def notebook_parameters(nb) -> dict:
    """Names and values assigned in the cell tagged `parameters` (literal values only)."""
    import ast
    params = {}
    try:
        tree = ast.parse(_parameters_source(nb))
    except SyntaxError:
        return params
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    try:
                        params[t.id] = ast.literal_eval(node.value)
                    except ValueError:
                        params[t.id] = None
    return params


def _parameters_for(nb, profile: str, device: str, out_dir: Path, extra: dict | None) -> dict:
    defined = notebook_parameters(nb)
    params = {"PROFILE": profile, "DEVICE": device, "OUT_DIR": str(out_dir)}
    if "INTERACTIVE" in defined:
        params["INTERACTIVE"] = False
    params.update(extra or {})
    return params


# The kernels of batch runs log at ERROR level: ipykernel's app logger otherwise warns at every kernel
# start that it "is running over TCP without encryption" (ipykernel/kernelapp.py, init_sockets),
# once per notebook. The kernel and the runner talk over the local loopback only. Cell outputs,
# Python warnings inside cells and kernel errors are unaffected.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
PROGRESS_MODES = ("cells", "bar", "none")


class _CellProgress:
    """One line per executed code cell: `  [LABEL] cell 12/40 done in 3.1 s (25.0 s so far)  first line`."""

    def __init__(self, label: str, nb=None, stream=None):
        self.label, self.stream = label, stream
        self.bind(nb)
        self.t_start = time.perf_counter()
        self.t_cell = self.t_start

    def bind(self, nb) -> None:
        """Count the code cells of `nb`, the notebook as executed (with papermill's injected cell)."""
        self.code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"] if nb is not None else []

    def start(self, index: int) -> None:
        self.t_cell = time.perf_counter()

    def done(self, cell, index: int, note: str = "") -> None:
        if cell.cell_type != "code":
            return
        now = time.perf_counter()
        k = self.code_cells.index(index) + 1 if index in self.code_cells else index + 1
        first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip()), "")
        first = first if len(first) <= 60 else first[:57] + "..."
        print(f"  [{self.label}] cell {k}/{len(self.code_cells)} {note or 'done'} in {now - self.t_cell:.1f} s "
              f"({now - self.t_start:.1f} s so far)  {first}", file=self.stream or sys.stdout, flush=True)


def _progress_engine(progress: "_CellProgress"):
    """A papermill engine (nbclient's) that reports each cell to `progress`."""
    from papermill.engines import NBClientEngine

    class ProgressEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            start, complete = nb_man.cell_start, nb_man.cell_complete
            progress.bind(nb_man.nb)

            def cell_start(cell, cell_index=None, **kw):
                progress.start(cell_index)
                return start(cell, cell_index, **kw)

            def cell_complete(cell, cell_index=None, **kw):
                out = complete(cell, cell_index, **kw)
                failed = cell.get("metadata", {}).get("papermill", {}).get("status") == "failed"
                progress.done(cell, cell_index, "FAILED" if failed else "")
                return out

            nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    return ProgressEngine


def _papermill_execute(src: Path, dst: Path, params: dict, cwd: Path, timeout: int | None, label: str,
                       progress: str = "cells") -> None:
    """papermill.execute_notebook with a quiet kernel and, for progress="cells", a line per cell."""
    import papermill as pm
    from papermill.engines import papermill_engines

    engine = None
    if progress == "cells":
        engine = f"advlab-progress-{os.getpid()}-{threading.get_ident()}"   # one per concurrent notebook
        papermill_engines.register(engine, _progress_engine(_CellProgress(label)))
    pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name=KERNEL_NAME, cwd=str(cwd),
                        progress_bar=progress == "bar", execution_timeout=timeout, engine_name=engine,
                        extra_arguments=list(KERNEL_ARGUMENTS))


def _execute_exercises(src: Path, dst: Path, params: dict, cwd: Path, timeout: int | None, label: str = "",
                       progress: str = "cells") -> list[str]:
    """Run an exercise notebook cell by cell; tolerate only NotImplementedError. Returns the
    tolerated cells ('cell N'); raises RuntimeError on any other error (after saving dst)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from papermill.parameterize import parameterize_notebook

    from papermill.iorw import load_notebook_node

    nb = parameterize_notebook(load_notebook_node(str(src)), params, kernel_name=KERNEL_NAME)
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=list(KERNEL_ARGUMENTS))
    report = _CellProgress(label or src.name, nb) if progress == "cells" else None
    tolerated = []
    error = None
    client.reset_execution_trackers()
    with client.setup_kernel():
        info = client.wait_for_reply(client.kc.kernel_info())
        if info is not None and "language_info" in info["content"]:
            nb.metadata["language_info"] = info["content"]["language_info"]
        for i, cell in enumerate(nb.cells):
            if report:
                report.start(i)
            try:
                client.execute_cell(cell, i, execution_count=client.code_cells_executed + 1)
            except CellExecutionError as e:
                if e.ename == "NotImplementedError":
                    tags = cell.metadata.setdefault("tags", [])
                    if "raises-exception" not in tags:
                        tags.append("raises-exception")
                    tolerated.append(f"cell {i}")
                    if report:
                        report.done(cell, i, "blank (NotImplementedError)")
                    continue
                error = f"cell {i}: {e.ename}: {e.evalue}"
                if report:
                    report.done(cell, i, "FAILED")
                break
            if report:
                report.done(cell, i)
    dst.write_text(dumps(nb), encoding="utf-8")
    nbformat.validate(nb)
    if error:
        raise RuntimeError(f"{src.name}: {error} (only NotImplementedError of a blank is tolerated)")
    return tolerated


def _results_dir(out: Path, kind: str, number: str) -> Path:
    return out / "results" / number if kind == "notebooks" else out / "results" / kind / number


def _fake_cuda_env(out: Path) -> dict:
    """The environment that makes every kernel start under advlab.fake_cuda.FakeCuda: an IPYTHONDIR whose
    default profile's startup file enters it."""
    from advlab.fake_cuda import startup_code
    folder = out / ".fake_cuda_ipython"
    startup = folder / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-advlab-fake-cuda.py").write_text(startup_code())
    return {"IPYTHONDIR": str(folder)}


def run(profile: str = "quick", only=None, out: str | Path = "build", device: str = "cpu",
        kind: str = "notebooks", parameters: dict | None = None, timeout: int | None = 1800,
        root: str | Path | None = None, progress: str | bool = "cells", fake_cuda: bool = False,
        jobs: int = 1) -> int:
    """Execute the course notebooks with papermill; returns 0 if all ran, 1 otherwise.

    kind: "notebooks", "solutions", "exercises", a comma-separated list of them, or "all".
    Executed copies go to OUT/<kind>/NN_*.ipynb; each notebook writes its result files into the
    OUT_DIR it is given (OUT/results/NN for lectures); OUT/course_run.json lists each notebook's status and seconds. `parameters` adds/overrides parameters.
    Notebooks run with their executed copy's folder as working directory, as nbval does later.
    progress: "cells" (a line per executed code cell, with its time), "bar" (papermill's tqdm bar)
    or "none" (True and False mean "bar" and "none").
    fake_cuda: run with DEVICE = "cuda" on this machine's CPU under advlab.fake_cuda.FakeCuda (every kernel
    enters it from an IPython startup file in OUT/.fake_cuda_ipython), so device mixing fails as on a GPU.
    jobs: notebooks executed at once, each in its own kernel, for machines with many cores. With more than
    one, kernels get one torch thread each (OMP_NUM_THREADS=1 unless it is set); nbval must then re-run
    them with the same setting. On 2 cores it gains nothing: two one-thread kernels each ran twice as
    long as one two-thread kernel (lecture 00: 34.8 s against 17 s).
    """
    if profile not in ("quick", "full"):
        raise ValueError(f"profile: must be 'quick' or 'full', got {profile!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: must be a positive integer, got {jobs!r}")
    if isinstance(progress, bool):
        progress = "bar" if progress else "none"
    if progress not in PROGRESS_MODES:
        raise ValueError(f"progress: must be one of {PROGRESS_MODES}, got {progress!r}")
    kinds = KINDS if kind == "all" else tuple(k.strip() for k in kind.split(","))
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind: must be one of {KINDS} or 'all', got {kind!r}")
    out = Path(out).resolve()
    root = repo_root(root)
    if fake_cuda:
        device = "cuda"
    for var in ("ADVLAB_ZOO", "ADVLAB_DATA"):  # kernels run in OUT/<kind>/: make relative paths absolute
        if os.environ.get(var):
            os.environ[var] = os.pathsep.join(str(Path(d).resolve()) for d in os.environ[var].split(os.pathsep) if d)
    jobs_list = [(k, p) for k in kinds for p in list_notebooks(k, only, root)]
    if not jobs_list:
        have = {k: len(list_notebooks(k, None, root)) for k in kinds}
        why = (f"{root} has no {', '.join(k + '/' for k in kinds)} notebooks: run from a checkout or a folder made "
               "by `advlab course init DIR`, or pass --root" if not any(have.values())
               else f"only={only!r} matches none of them (numbers such as 00,01)")
        print(f"advlab course: no notebooks matched (kind={kind!r}, only={only!r}) under {root}: {why}", file=sys.stderr)
        return 1
    env = _fake_cuda_env(out) if fake_cuda else {}
    if jobs > 1 and not os.environ.get("OMP_NUM_THREADS"):
        env["OMP_NUM_THREADS"] = "1"
    failures, rows = [], []
    t_all = time.perf_counter()

    def execute(k: str, src: Path) -> tuple[str, str, float]:
        dst_dir = out / k
        dst_dir.mkdir(parents=True, exist_ok=True)
        dst = dst_dir / src.name
        res = _results_dir(out, k, src.name[:2])
        res.mkdir(parents=True, exist_ok=True)
        params = _parameters_for(_read(src), profile, device, res, parameters)
        label = f"{k}/{src.name}"
        print(f"[{label}] running (profile={profile}, device={device}) ...", flush=True)
        t0 = time.perf_counter()
        note = ""
        try:
            if k == "exercises":
                tolerated = _execute_exercises(src, dst, params, dst_dir, timeout, label, progress)
                note = f", {len(tolerated)} blank(s) not implemented" if tolerated else ""
            else:
                _papermill_execute(src, dst, params, dst_dir, timeout, label, progress)
            status = "ok"
        except Exception as e:  # noqa: BLE001 -- reported, the run goes on with the next notebook
            status = "FAILED"
            msg = str(e).strip().splitlines()
            failures.append(f"{label}: {type(e).__name__}: " + (msg[-1] if msg else ""))
            print("\n".join(msg[-25:]), file=sys.stderr)
        dt = time.perf_counter() - t0
        print(f"[{label}] {status} in {dt:.1f} s{note}", flush=True)
        return label, status, dt

    with mock.patch.dict(os.environ, env):
        if jobs == 1:
            rows = [execute(k, src) for k, src in jobs_list]
        else:   # kernels are subprocesses: threads only wait on them
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                rows = list(pool.map(lambda job: execute(*job), jobs_list))   # rows in the course's order
    total = time.perf_counter() - t_all
    print(f"\nadvlab course run: {len(rows) - len(failures)}/{len(rows)} notebooks ok in {total:.1f} s")
    for label, status, dt in rows:
        print(f"  {status:6s} {dt:7.1f} s  {label}")
    (out / "course_run.json").write_text(json.dumps(
        {"profile": profile, "device": device, "fake_cuda": fake_cuda, "jobs": jobs, "seconds": round(total, 1),
         "notebooks": [{"notebook": label, "status": status, "seconds": round(dt, 1)} for label, status, dt in rows],
         "failures": failures}, indent=2))
    print(f"executed notebooks: {', '.join(str(out / k) for k in kinds)} (the table: {out / 'course_run.json'})")
    print(f"results (json/csv/png): {out / 'results'}")
    from advlab.evaluation import leaderboard   # the course's results table, from the records of this checkout
    written = leaderboard.write(leaderboard.build(), out / "leaderboard")
    print(f"leaderboard (every defense x every attack, from docs/results/records): {written[0]}")
    if failures:
        print("failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    """`python -m advlab.course run|make-exercises|strip ...`; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m advlab.course", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill")
    r.add_argument("--profile", choices=("quick", "full"), default="quick")
    r.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 00,01")
    r.add_argument("--out", default="build")
    r.add_argument("--device", default="cpu")
    r.add_argument("--kind", default="notebooks", help="notebooks, solutions, exercises (comma-separated) or all")
    r.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    r.add_argument("--progress", choices=PROGRESS_MODES, default="cells",
                   help="cells: a line per executed code cell (default); bar: papermill's progress bar; none")
    r.add_argument("--jobs", type=int, default=1, help="notebooks executed at once (each kernel then gets one "
                   "torch thread unless OMP_NUM_THREADS is set); for machines with many cores")
    r.add_argument("--fake-cuda", action="store_true", help="run with DEVICE='cuda' on the CPU under "
                   "advlab.fake_cuda, which fails on device mixing as a GPU would (--device is ignored)")
    m = sub.add_parser("make-exercises", help="generate exercises/ from solutions/")
    m.add_argument("--check", action="store_true", help="only report drift, write nothing")
    s = sub.add_parser("strip", help="remove outputs from notebooks in place")
    s.add_argument("paths", nargs="*", help="default: every notebook in notebooks/, solutions/, exercises/")
    args = p.parse_args(argv)
    if args.action == "run":
        return run(args.profile, args.only, args.out, args.device, kind=args.kind, timeout=args.timeout,
                   progress=args.progress, fake_cuda=args.fake_cuda, jobs=args.jobs)
    if args.action == "make-exercises":
        return make_exercises(check=args.check)
    paths = args.paths or [p for k in KINDS for p in list_notebooks(k)]
    for path in paths:
        if strip_outputs(path):
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
