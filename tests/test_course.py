"""The course pipeline: committed notebooks are clean and parameterised, exercises are generated
from solutions, and the runners execute notebooks (the full run is marked `notebooks`)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from advlab import course

ROOT = Path(__file__).resolve().parent.parent
ALL = [p for kind in course.KINDS for p in course.list_notebooks(kind, root=ROOT)]
REQUIRED_PARAMETERS = ("PROFILE", "DEVICE", "SEED", "OUT_DIR")
LECTURE_PARAMETERS = REQUIRED_PARAMETERS + ("EPS",)


def _rel(p):
    return str(p.relative_to(ROOT))


# (a) committed notebooks ----------------------------------------------------------------------
def test_there_are_notebooks():
    assert course.list_notebooks("notebooks", root=ROOT), "no notebooks/NN_*.ipynb found"
    assert course.list_notebooks("solutions", root=ROOT), "no solutions/NN_*.ipynb found"


def test_committed_notebooks_have_no_outputs():
    problems = course.find_unstripped(ALL)
    assert not problems, ("committed notebooks must be stripped (python -m advlab.course strip):\n  "
                          + "\n  ".join(problems))


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_parameters_cell_and_kernel(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{_rel(path)}: needs exactly one code cell tagged 'parameters', found {len(tagged)}"
    assert tagged[0].cell_type == "code"
    params = course.notebook_parameters(nb)
    required = LECTURE_PARAMETERS if path.parent.name == "notebooks" else REQUIRED_PARAMETERS
    missing = [p for p in required if p not in params]
    assert not missing, f"{_rel(path)}: the parameters cell does not define {missing}"
    assert "DATASET" not in params, f"{_rel(path)}: DATASET is not a parameter (course.dataset_for)"
    if "EPS" in params:
        assert params["EPS"] == course.COURSE_EPS
    for line in tagged[0].source.strip().splitlines():     # every parameter says what it does
        assert "#" in line and line.split("#", 1)[1].strip(), f"{_rel(path)}: parameter line without help: {line!r}"
    source = "".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'course.dataset_for(globals().get("DATASET"))' in source, f"{_rel(path)}: no DATASET guard"
    if "EPS" in params:   # the parameter is used: checked once, and no attack hard-codes the course's budget
        assert "course.eps_parameter(EPS)" in source, _rel(path)
        assert not re.search(r"\beps=0\.1\b", source), f"{_rel(path)}: eps=0.1 typed instead of EPS"
    assert params["PROFILE"] == "quick", f"{_rel(path)}: the committed default profile must be 'quick'"
    ks = nb.metadata.get("kernelspec", {})
    assert ks.get("name") == "python3" and ks.get("language") == "python", f"{_rel(path)}: kernelspec {ks}"


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_no_solution_markers_outside_solutions(path):
    if path.parent.name == "solutions":
        return
    text = path.read_text(encoding="utf-8")
    assert course.BEGIN not in text and course.END not in text, f"{_rel(path)} contains solution markers"


# (b) exercises in sync with solutions ----------------------------------------------------------
def test_exercises_in_sync_with_solutions(capsys):
    assert course.make_exercises(check=True, root=ROOT) == 0, capsys.readouterr().out


@pytest.mark.parametrize("sol", course.list_notebooks("solutions", root=ROOT), ids=_rel)
def test_every_blank_comes_from_a_solution_region(sol):
    ex = ROOT / "exercises" / sol.name
    assert ex.exists(), f"{_rel(ex)} missing: run advlab course make-exercises"
    sol_nb, ex_nb = nbformat.read(sol, as_version=4), nbformat.read(ex, as_version=4)
    regions = sum(c.source.count(course.BEGIN) for c in sol_nb.cells)
    assert regions >= 2, f"{_rel(sol)}: an exercise set needs at least two exercises (BEGIN/END SOLUTION regions)"
    assert sum(c.source.count(course.END) for c in sol_nb.cells) == regions
    blanks = sum(len(re.findall(r"# YOUR CODE HERE\n\s*raise NotImplementedError", c.source))
                 for c in ex_nb.cells if c.cell_type == "code")
    blanks += sum(c.source.count(course.BLANK_MARKDOWN) for c in ex_nb.cells if c.cell_type == "markdown")
    assert blanks == regions, f"{_rel(ex)}: {blanks} blanks for {regions} solution regions"
    assert not any("# YOUR CODE HERE" in c.source for c in sol_nb.cells if c.cell_type == "code"), \
        f"{_rel(sol)} has an unfilled blank"
    kept = [c for c in sol_nb.cells if course.SOLUTION_ONLY_TAG not in c.metadata.get("tags", [])]
    assert len(ex_nb.cells) == len(kept)


@pytest.mark.parametrize("sol", course.list_notebooks("solutions", root=ROOT), ids=_rel)
def test_every_exercise_is_followed_by_a_check(sol):
    nb = nbformat.read(sol, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for i, src in enumerate(code):
        if course.BEGIN in src:
            following = "\n".join(code[i:i + 2])
            assert "checks." in following, f"{_rel(sol)}: the exercise in code cell {i} has no check after it"


# (c) make_exercises / strip on synthetic notebooks ----------------------------------------------
SOLUTION_SOURCE = """def f(x):
    \"\"\"Double x.\"\"\"
    y = 1
    ### BEGIN SOLUTION
    y = 2 * x
    if y > 3:
        y = 3
    ### END SOLUTION
    return y


class A:
    def g(self):
        ### BEGIN SOLUTION
        return 42
        ### END SOLUTION
"""
EXERCISE_SOURCE = """def f(x):
    \"\"\"Double x.\"\"\"
    y = 1
    # YOUR CODE HERE
    raise NotImplementedError
    return y


class A:
    def g(self):
        # YOUR CODE HERE
        raise NotImplementedError
"""


def _tiny_root(tmp_path, name="07_tiny.ipynb"):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "exercises").mkdir()
    (tmp_path / "notebooks").mkdir()
    cells = [new_markdown_cell("# Tiny"),
             new_code_cell('PROFILE = "quick"', metadata={"tags": ["parameters"]}),
             new_code_cell(SOLUTION_SOURCE, execution_count=3,
                           outputs=[new_output("stream", name="stdout", text="hi\n")]),
             new_code_cell("print('the answer is 42')", metadata={"tags": ["solution-only"]}),
             new_markdown_cell("Answer:\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION\n\nMore text.")]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.metadata["papermill"] = {"parameters": {}}
    path = tmp_path / "solutions" / name
    nbformat.write(nb, str(path))
    return path


def test_make_exercises_blanks_keep_indentation(tmp_path, capsys):
    _tiny_root(tmp_path)
    assert course.make_exercises(root=tmp_path) == 0
    ex = nbformat.read(tmp_path / "exercises" / "07_tiny.ipynb", as_version=4)
    assert [c.cell_type for c in ex.cells] == ["markdown", "code", "code", "markdown"]  # solution-only removed
    assert ex.cells[2].source == EXERCISE_SOURCE
    assert ex.cells[2].outputs == [] and ex.cells[2].execution_count is None
    assert ex.cells[3].source == f"Answer:\n\n{course.BLANK_MARKDOWN}\n\nMore text."
    assert "papermill" not in ex.metadata
    assert ex.metadata.kernelspec.name == "python3"
    text = (tmp_path / "exercises" / "07_tiny.ipynb").read_text()
    assert course.BEGIN not in text and course.END not in text
    assert text.endswith("}\n") and text == course.dumps(ex)
    compile(ex.cells[2].source, "exercise", "exec")  # still valid Python


def test_make_exercises_is_deterministic_and_detects_drift(tmp_path, capsys):
    sol = _tiny_root(tmp_path)
    target = tmp_path / "exercises" / sol.name
    assert course.make_exercises(check=True, root=tmp_path) == 1  # missing
    assert not target.exists()  # check writes nothing
    assert "exercises/07_tiny.ipynb (missing)" in capsys.readouterr().out
    course.make_exercises(root=tmp_path)
    first = target.read_bytes()
    assert course.make_exercises(check=True, root=tmp_path) == 0
    course.make_exercises(root=tmp_path)
    assert target.read_bytes() == first  # byte-identical regeneration
    # a hand edit of the exercise is drift
    target.write_text(first.decode().replace("Double x.", "Triple x."))
    capsys.readouterr()
    assert course.make_exercises(check=True, root=tmp_path) == 1
    assert "exercises/07_tiny.ipynb (differs)" in capsys.readouterr().out
    # so is an edit of the solution that was not regenerated
    course.make_exercises(root=tmp_path)
    nb = nbformat.read(sol, as_version=4)
    nb.cells[0].source = "# Tiny, edited"
    nbformat.write(nb, str(sol))
    assert course.make_exercises(check=True, root=tmp_path) == 1
    # and an exercise without a solution
    course.make_exercises(root=tmp_path)
    (tmp_path / "exercises" / "08_orphan.ipynb").write_text(first.decode())
    capsys.readouterr()
    assert course.make_exercises(check=True, root=tmp_path) == 1
    assert "08_orphan.ipynb (no solutions/08_orphan.ipynb)" in capsys.readouterr().out


@pytest.mark.parametrize("source,error", [
    ("### BEGIN SOLUTION\nx = 1\n", "without"),
    ("x = 1\n### END SOLUTION\n", "without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "nested"),
])
def test_unbalanced_markers_are_errors(source, error):
    with pytest.raises(ValueError, match=error):
        course.blank_solution(source, "nb cell 0")


def test_strip_outputs_and_find_unstripped(tmp_path):
    path = _tiny_root(tmp_path)
    problems = course.find_unstripped([path])
    assert any("cell 2 has outputs" in p for p in problems)
    assert any("execution count" in p for p in problems)
    assert course.strip_outputs(path) is True
    assert course.find_unstripped([path]) == []
    assert course.strip_outputs(path) is False  # idempotent, file untouched


def test_list_notebooks_and_only(tmp_path):
    for name in ("00_a.ipynb", "01_b.ipynb", "10_c.ipynb", "notes.ipynb"):
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        nbformat.write(new_notebook(), str(tmp_path / "notebooks" / name))
    names = lambda only: [p.name for p in course.list_notebooks("notebooks", only, root=tmp_path)]  # noqa: E731
    assert names(None) == ["00_a.ipynb", "01_b.ipynb", "10_c.ipynb"]
    assert names("00,10") == ["00_a.ipynb", "10_c.ipynb"]
    assert names("1") == ["01_b.ipynb"]
    with pytest.raises(ValueError, match="only"):
        course.list_notebooks("notebooks", "intro", root=tmp_path)
    with pytest.raises(ValueError, match="kind"):
        course.list_notebooks("slides", root=tmp_path)


def test_notebook_parameters():
    nb = new_notebook(cells=[new_code_cell('A = 1\nB = "x"  # comment\nC = D = 0.5\nE = f(1)',
                                           metadata={"tags": ["parameters"]})])
    assert course.notebook_parameters(nb) == {"A": 1, "B": "x", "C": 0.5, "D": 0.5, "E": None}


# the runners, on tiny synthetic notebooks (one kernel each) -------------------------------------
def _write(path, cells, params='PROFILE = "quick"\nDEVICE = "cpu"\nOUT_DIR = "x"\nINTERACTIVE = True'):
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_code_cell(params, metadata={"tags": ["parameters"]})]
                      + [new_code_cell(c) for c in cells],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))


def test_run_executes_with_parameters(tmp_path, capsys):
    _write(tmp_path / "notebooks" / "05_params.ipynb", [
        "import json, os, pathlib\n"
        "pathlib.Path(OUT_DIR, 'p.json').write_text(json.dumps({'PROFILE': PROFILE, 'DEVICE': DEVICE, "
        "'INTERACTIVE': INTERACTIVE, 'cwd': os.getcwd()}))"])
    out = tmp_path / "out"
    assert course.run(profile="full", out=out, root=tmp_path) == 0
    got = json.loads((out / "results" / "05" / "p.json").read_text())
    assert got == {"PROFILE": "full", "DEVICE": "cpu", "INTERACTIVE": False, "cwd": str((out / "notebooks").resolve())}
    assert (out / "notebooks" / "05_params.ipynb").exists()
    text = capsys.readouterr().out
    assert re.search(r"\[notebooks/05_params.ipynb\] ok in \d+\.\d s", text)
    assert "executed notebooks:" in text and "results (json/csv/png):" in text
    assert "leaderboard (every defense x every attack" in text     # course run writes the leaderboard too
    assert "fmnist/pgd-at" in (out / "leaderboard" / "leaderboard.md").read_text()


def test_exercise_runner_tolerates_only_not_implemented(tmp_path, capsys):
    _write(tmp_path / "exercises" / "05_blank.ipynb", [
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError",
        "y = None\n# YOUR CODE HERE\nraise NotImplementedError",
        "print('after the blank', y)"])
    _write(tmp_path / "exercises" / "06_bug.ipynb", ["1 / 0", "print('never')"])
    out = tmp_path / "out"
    assert course.run(kind="exercises", only="05", out=out, root=tmp_path) == 0
    nb = nbformat.read(out / "exercises" / "05_blank.ipynb", as_version=4)
    assert "raises-exception" in nb.cells[3].metadata.tags and nb.cells[3].outputs[0].ename == "NotImplementedError"
    assert nb.cells[4].outputs[0].text == "after the blank None\n"
    assert "1 blank(s) not implemented" in capsys.readouterr().out
    assert course.run(kind="exercises", out=out, root=tmp_path) == 1
    err = capsys.readouterr().err
    assert "06_bug.ipynb" in err and "ZeroDivisionError" in err


def test_run_with_two_jobs_overlaps_notebooks_and_keeps_the_order(tmp_path, capsys, monkeypatch):
    """jobs=2: two kernels at once (each notebook waits, up to 60 s, until the other has started), one torch
    thread each, every cell line labelled with its own notebook, course_run.json in the course's order."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for nn, other in (("05", "06"), ("06", "05")):
        _write(tmp_path / "notebooks" / f"{nn}_n.ipynb", [
            "import os, pathlib, time, torch\n"
            f"pathlib.Path(OUT_DIR, '..', 'started_{nn}').touch()\n"
            "t0 = time.time()\n"
            f"while not pathlib.Path(OUT_DIR, '..', 'started_{other}').exists() and time.time() - t0 < 60:\n"
            "    time.sleep(0.1)\n"
            f"pathlib.Path(OUT_DIR, 'r.txt').write_text(f\"{{pathlib.Path(OUT_DIR, '..', 'started_{other}').exists()}} \"\n"
            "                                     f\"{os.environ.get('OMP_NUM_THREADS')} {torch.get_num_threads()}\")",
            f"print('{nn} done')"])
    out = tmp_path / "out"
    assert course.run(out=out, root=tmp_path, jobs=2) == 0
    for nn in ("05", "06"):
        assert (out / "results" / nn / "r.txt").read_text() == "True 1 1"     # overlapped, one thread
    text = capsys.readouterr().out
    for nn in ("05", "06"):   # each notebook's own cells under its own label
        assert re.search(rf"\[notebooks/{nn}_n.ipynb\] cell 4/4 done in [\d.]+ s .*print\('{nn} done'\)", text)
    rec = json.loads((out / "course_run.json").read_text())
    assert [r["notebook"] for r in rec["notebooks"]] == ["notebooks/05_n.ipynb", "notebooks/06_n.ipynb"]
    assert rec["jobs"] == 2 and rec["failures"] == []
    with pytest.raises(ValueError, match="jobs"):
        course.run(out=out, root=tmp_path, jobs=0)


def test_run_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        course.run(profile="medium", root=tmp_path)
    with pytest.raises(ValueError, match="kind"):
        course.run(kind="slides", root=tmp_path)
    (tmp_path / "notebooks").mkdir()
    assert course.run(out=tmp_path / "o", root=tmp_path) == 1  # nothing to run is a failure


# (d) the real course: papermill, then nbval -----------------------------------------------------
def _needs_zoo_cnn():
    from advlab import zoo
    try:
        zoo.info("fmnist/cnn")
    except zoo.NotTrainedError as e:
        pytest.skip(str(e))


@pytest.mark.notebooks
def test_course_runs_and_validates(tmp_path):
    _needs_zoo_cnn()
    out = tmp_path / "course"
    assert course.run(profile="quick", out=out, kind="all", root=ROOT) == 0
    executed = sorted(str(p) for k in course.KINDS for p in (out / k).glob("*.ipynb"))
    assert executed
    nbval = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.nbval_semicolon", "--nbval", *executed,
         "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "-p", "no:cacheprovider", "-q"],
        cwd=ROOT, capture_output=True, text=True)
    assert nbval.returncode == 0, nbval.stdout[-6000:] + nbval.stderr[-2000:]


def test_dataset_is_not_a_parameter_and_says_so():
    assert course.dataset_for(None) == course.dataset_for("fashion_mnist") == "fashion_mnist"
    with pytest.raises(ValueError, match="DATASET.*mnist"):
        course.dataset_for("mnist")


def test_eps_parameter(capsys):
    assert course.eps_parameter(0.1) == 0.1 and capsys.readouterr().out == ""
    assert course.eps_parameter(0.05) == 0.05
    assert "ε = 0.05" in capsys.readouterr().out                 # the run says it left the recorded setting
    for bad in (0, -0.1, 1.5, "0.1", float("nan"), None):
        with pytest.raises(ValueError, match="EPS"):
            course.eps_parameter(bad)


def test_a_lecture_run_with_eps_records_it(tmp_path):
    """papermill -p EPS 0.05 through the course runner: lecture 00's results say 0.05 and its attacks use it."""
    _needs_zoo_cnn()
    out = tmp_path / "out"
    assert course.run(only="00", out=out, root=ROOT, parameters={"EPS": 0.05}, progress="none") == 0
    res = json.loads((out / "results" / "00" / "results.json").read_text())
    assert res["eps"] == 0.05 and res["threat_model"]["linf"] == 0.05
    nb = nbformat.read(out / "notebooks" / "00_setup_and_threat_models.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "L∞ ε = 0.05" in text and "EPS = 0.05: this run attacks" in text


def test_make_exercises_without_solution_notebooks_fails(tmp_path, capsys):
    """A root without solutions/NN_*.ipynb (a wrong folder, a broken install) must not pass as 'in sync'."""
    (tmp_path / "solutions").mkdir()
    assert course.make_exercises(check=True, root=tmp_path) == 1
    assert course.make_exercises(root=tmp_path) == 1
    assert "no solution notebooks" in capsys.readouterr().err
    assert not (tmp_path / "exercises").exists()


@pytest.mark.parametrize("path", course.list_notebooks("exercises", root=ROOT), ids=_rel)
def test_exercise_blanks_never_raise_at_top_level(path):
    """Every blank sits inside a function, so an exercise set runs top to bottom under plain papermill
    (the checks report ⏳ for the blanks) and needs no tolerant executor."""
    nb = nbformat.read(path, as_version=4)
    top = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
           and any(line.startswith("raise NotImplementedError") for line in c.source.splitlines())]
    assert not top, f"{_rel(path)}: cells {top} raise NotImplementedError at top level"
