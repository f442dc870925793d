"""The course's text against the course's files: the syllabus (README and lecture 00) against the notebooks
present, forward references to lectures not written yet, internal labels in student-facing text, each
lecture's opening (objectives, prerequisites, measured times) and references (against docs/references.bib),
the parameters cells (one comment per line, parsed alike by papermill and advlab.course), and the course
helpers the notebooks rely on (results_dir, the runner's per-cell progress and quiet kernels)."""
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from advlab import course

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIB = ROOT / "docs" / "references.bib"
LECTURES = course.list_notebooks("notebooks", root=ROOT)
ALL = [p for kind in course.KINDS for p in course.list_notebooks(kind, root=ROOT)]
PRESENT = {p.name[:2] for p in LECTURES}

# internal labels that must not reach students: the papers' file numbers, the seed paper, issue numbers,
# design documents and their sections, work sessions
INTERNAL = [
    (re.compile(r"\bpaper[\s-]?0\d\d\b", re.I), "a paper's internal number: name it by its authors and title"),
    (re.compile(r"\bseed paper\b", re.I), "'seed paper': name the paper by its authors and title"),
    (re.compile(r"\bissues? #?\d+", re.I), "an issue number"),
    (re.compile(r"DESIGN\.md", re.I), "DESIGN.md is not part of the course"),
    (re.compile(r"§\s?\d"), "a § label: write 'section N'"),
    (re.compile(r"\bsession[\s-]\d+", re.I), "a work session's number"),
]
LECTURE_REF = re.compile(r"\b[Ll]ectures?\s+(\d\d)(?:\s*(?:[–-]|to)\s*(\d\d))?")


def _rel(p):
    return str(Path(p).relative_to(ROOT))


def _markdown(path):
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]


def _prose(text):
    """Text without fenced code blocks and inline code spans (command lines and file names may keep
    identifiers such as `scripts/paper_tables.py 004`)."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", " ", text)


def _table_rows(text, header_start):
    """The rows (lists of stripped cells) of the Markdown table whose header line starts with header_start."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith(header_start))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip().startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def _readme_syllabus():
    text = README.read_text(encoding="utf-8")
    section = text.split("## Syllabus", 1)[1]
    return {r[0]: r[-1] for r in _table_rows(section, "| nb |")}


def _lecture00_table():
    path = ROOT / "notebooks" / "00_setup_and_threat_models.ipynb"
    cell = next(s for s in _markdown(path) if "| nb | title | builds | status |" in s)
    return {r[0]: r[-1] for r in _table_rows(cell, "| nb | title | builds | status |")}


# (a) the syllabus ---------------------------------------------------------------------------------
def test_lectures_exist():
    assert LECTURES, "no notebooks/NN_*.ipynb"


def test_readme_syllabus_matches_notebooks():
    table = _readme_syllabus()
    written = {nn for nn, status in table.items() if status.startswith("written")}
    not_written = {nn for nn, status in table.items() if status.startswith(("not yet written", "coming"))}
    assert written | not_written == set(table), f"README syllabus: unknown status in {table}"
    assert not (written - PRESENT), f"README marks {sorted(written - PRESENT)} written, but notebooks/ has no such notebook"
    assert not (PRESENT - written), f"notebooks/ has {sorted(PRESENT - written)}, which README's syllabus does not mark written"


def test_lecture00_course_table_matches_notebooks_and_readme():
    table = _lecture00_table()
    assert set(table.values()) <= {"written", "coming"}, f"lecture 00's course table: statuses {set(table.values())}"
    written = {nn for nn, status in table.items() if status == "written"}
    assert not (written - PRESENT), f"lecture 00 marks {sorted(written - PRESENT)} written, but notebooks/ lacks them"
    assert not (PRESENT - written), f"notebooks/ has {sorted(PRESENT - written)}, not marked written in lecture 00"
    assert set(table) == set(_readme_syllabus()), "lecture 00's course table and README's syllabus list different lectures"


def test_syllabus_check_catches_disagreement():
    """The parsers above see a changed status (guards the guard)."""
    cell = next(s for s in _markdown(ROOT / "notebooks" / "00_setup_and_threat_models.ipynb")
                if "| nb | title | builds | status |" in s)
    changed = re.sub(r"\| written \|$", "| coming |", cell, count=1, flags=re.M)
    rows = {r[0]: r[-1] for r in _table_rows(changed, "| nb | title | builds | status |")}
    assert {nn for nn, s in rows.items() if s == "written"} != PRESENT


# (b) forward references and internal labels in student-facing text ----------------------------------
STUDENT_TEXT = [(p, i, s) for p in ALL for i, s in enumerate(_markdown(p))]


def _label_problems(where, text):
    prose = _prose(text)
    return [f"{where}: {m.group(0)!r} ({why})" for pat, why in INTERNAL for m in pat.finditer(prose)]


def _forward_problems(where, text):
    problems = []
    for m in LECTURE_REF.finditer(text):
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        missing = [f"{k:02d}" for k in range(first, last + 1) if f"{k:02d}" not in PRESENT]
        if missing and "coming" not in text[m.end(): m.end() + 40]:
            problems.append(f"{where}: {text[max(0, m.start() - 30): m.end() + 20]!r} refers to lecture(s) "
                            f"{missing}, not written yet: say '(coming)'")
    return problems


def test_no_internal_labels_in_notebooks():
    problems = [p for path, i, s in STUDENT_TEXT for p in _label_problems(f"{_rel(path)} markdown cell {i}", s)]
    assert not problems, "\n".join(problems)


def test_no_internal_labels_in_readme():
    problems = _label_problems("README.md", README.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_forward_references_say_coming():
    problems = [p for path, i, s in STUDENT_TEXT for p in _forward_problems(f"{_rel(path)} markdown cell {i}", s)]
    problems += _forward_problems("README.md", _prose(README.read_text(encoding="utf-8")))
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_should():
    assert _label_problems("x", "as paper 002 shows") and _label_problems("x", "the seed paper's loss")
    assert _label_problems("x", "Issue 4 sets") and _label_problems("x", "DESIGN.md §4")
    assert not _label_problems("x", "run `scripts/paper_tables.py 004` or read `paper004_n1000_seed0.md`")
    missing = next((f"{k:02d}" for k in range(100) if f"{k:02d}" not in PRESENT), None)
    if missing:
        assert _forward_problems("x", f"see lecture {missing} for more")
        assert not _forward_problems("x", f"see lecture {missing} (coming) for more")


# (c) each lecture's opening and references ----------------------------------------------------------
def _bib():
    text = BIB.read_text(encoding="utf-8")
    entries = {}
    for m in re.finditer(r"@\w+\{([^,\s]+),(.*?)\n\}", text, re.S):
        title = re.search(r"^\s*title\s*=\s*\{(.*)\},?\s*$", m.group(2), re.M)
        entries[m.group(1)] = title.group(1) if title else None
    return entries


def _norm(title):
    return re.sub(r"[^a-z0-9]+", " ", re.sub(r"\\.|[{}]", "", title.lower())).strip()


def _readme_quick_times():
    """{'00': 13, ...}: the quick-profile CPU times of the lectures measured in the README's test run."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    m = re.search(r"The lectures took (.*?)(?:, and the |\. )", text)
    return {nn: int(s) for nn, s in re.findall(r"\b(\d\d) (\d+) s\b", m.group(1))} if m else {}


def test_bibliography_entries_are_complete():
    text = BIB.read_text(encoding="utf-8")
    entries = re.findall(r"@(\w+)\{([^,\s]+),(.*?)\n\}", text, re.S)
    assert len(entries) >= 20
    keys = [k for _, k, _ in entries]
    assert len(keys) == len(set(keys)), "duplicate keys in docs/references.bib"
    for kind, key, body in entries:
        for field in ("author", "title", "year"):
            assert re.search(rf"^\s*{field}\s*=", body, re.M), f"docs/references.bib: {key} has no {field}"
        assert re.search(r"^\s*(booktitle|journal|howpublished|publisher)\s*=", body, re.M), f"{key}: no venue"
        assert re.search(r"^\s*url\s*=", body, re.M) or "No public link" in body, f"{key}: no link"


@pytest.mark.parametrize("path", LECTURES, ids=_rel)
def test_lecture_ends_with_references_from_the_bibliography(path):
    md = _markdown(path)
    assert md and md[-1].startswith("## References"), f"{_rel(path)}: the last Markdown cell must be '## References'"
    bib = _bib()
    refs = re.findall(r"^- \[([^\]]+)\] (.*)$", md[-1], re.M)
    assert refs, f"{_rel(path)}: no references ('- [key] Authors. *Title*. Venue, year. link')"
    for key, line in refs:
        assert key in bib, f"{_rel(path)}: reference [{key}] is not in docs/references.bib"
        assert _norm(bib[key]) in _norm(line), f"{_rel(path)}: [{key}]'s title differs from docs/references.bib"
        assert re.search(r"\b(19|20)\d\d\b", line), f"{_rel(path)}: [{key}] has no year"


@pytest.mark.parametrize("path", LECTURES, ids=_rel)
def test_lecture_opens_with_objectives_prerequisites_and_time(path):
    md = _markdown(path)
    opening = next((s for s in md[:3] if "Learning objectives" in s), None)
    assert opening, f"{_rel(path)}: one of the first Markdown cells must state the learning objectives"
    for part in ("**Prerequisites.**", "**Time.**", "| quick", "| full"):
        assert part in opening, f"{_rel(path)}: the opening has no {part!r}"
    quick = next(ln for ln in opening.splitlines() if ln.startswith("| quick"))
    measured = _readme_quick_times().get(path.name[:2])
    if measured is None:
        assert "not measured" in quick, f"{_rel(path)}: README has no measured time for it; say 'not measured'"
    else:
        assert re.search(rf"\b{measured} s\b", quick), \
            f"{_rel(path)}: the quick CPU time must be README's measured {measured} s (README: 'The lectures took ...')"


def test_readme_measured_times_parse():
    times = _readme_quick_times()
    assert not times or set(times) <= PRESENT, f"README's measured times name lectures that do not exist: {times}"


# (d) parameters cells -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_parameters_cell_is_commented_and_parsed_by_papermill(path):
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for line in cell.source.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert "#" in line, f"{_rel(path)}: parameters line without a comment saying what it is: {line!r}"
    found = list(pm.inspect_notebook(str(path)))
    assert found == list(course.notebook_parameters(nb)), \
        f"{_rel(path)}: papermill parses the parameters as {found}; a comment it cannot read makes it drop a parameter"


@pytest.mark.parametrize("path", ALL, ids=_rel)
def test_results_go_to_the_repository_not_the_kernel_cwd(path):
    code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
    assert "course.results_dir(OUT_DIR)" in code, f"{_rel(path)}: resolve OUT_DIR with course.results_dir(OUT_DIR)"
    assert "Path(OUT_DIR)" not in code, f"{_rel(path)}: Path(OUT_DIR) is relative to the kernel's working directory"


# (e) the course helpers the notebooks rely on --------------------------------------------------------
def test_results_dir_resolves_from_the_repository_root(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / "advlab").mkdir()
    monkeypatch.chdir(repo / "notebooks")                                # `jupyter lab notebooks/`
    assert course.find_root() == repo.resolve()
    got = course.results_dir("build/results/05")
    assert got == (repo / "build" / "results" / "05").resolve() and got.is_dir()
    assert not (repo / "notebooks" / "build").exists()
    absolute = tmp_path / "elsewhere" / "05"
    assert course.results_dir(str(absolute)) == absolute.resolve() and absolute.is_dir()   # `advlab course run`
    assert course.results_dir("x", root=tmp_path / "r", create=False) == (tmp_path / "r" / "x").resolve()
    assert not (tmp_path / "r").exists()
    monkeypatch.chdir(tmp_path)
    assert course.find_root() is None


def test_find_root_needs_the_package_or_pyproject(tmp_path):
    (tmp_path / "notebooks").mkdir()
    assert course.find_root(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text("")
    assert course.find_root(tmp_path / "notebooks") == tmp_path.resolve()


def test_run_reports_cells_and_starts_quiet_kernels(tmp_path, capfd):
    nb = new_notebook(cells=[new_code_cell('PROFILE = "quick"  # the profile\nOUT_DIR = "x"  # results',
                                           metadata={"tags": ["parameters"]}),
                             new_code_cell("print('first')"), new_code_cell("y = 2 * 21")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, str(tmp_path / "notebooks" / "05_tiny.ipynb"))
    assert course.run(out=tmp_path / "out", root=tmp_path) == 0
    out, err = capfd.readouterr()
    cells = re.findall(r"\[notebooks/05_tiny\.ipynb\] cell (\d+)/(\d+) done in \d+\.\d s", out)
    assert [c for c, _ in cells] == ["1", "2", "3", "4"] and {n for _, n in cells} == {"4"}, out  # + papermill's cell
    assert "without encryption" not in out + err, "the kernel's TCP warning reached the log"
