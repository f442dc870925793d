"""advlab outside the repository: the library imports without Jupyter, and a wheel built from the
checkout installs into a fresh virtual environment elsewhere, loads the zoo, reads the shipped
records, copies the course out with `advlab course init` and executes lectures 00, 05 and 06 there
(05 and 06 read the recorded results that the wheel ships).

The fresh environment gets the already-installed third-party packages (torch alone is gigabytes)
through a .pth file pointing at links to them, never advlab itself: advlab comes from the wheel only.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JUPYTER = ("IPython", "ipywidgets", "ipykernel", "papermill", "nbformat", "nbclient", "nbval", "jupyterlab",
           "jupyter_client", "jupyter_server", "scipy", "botorch", "sklearn")
CORE = {"torch", "torchvision", "numpy", "matplotlib", "tqdm", "safetensors", "pytorch-msssim"}   # SSIM: CMAP


def test_the_library_never_imports_jupyter():
    code = (
        "import sys, advlab\n"
        "from advlab import zoo, attacks, purifiers, evaluation, data, models, training, viz, resources\n"
        "from advlab.evaluation import adaptive, leaderboard, records, masking\n"
        "import advlab.purifiers.lqvae, advlab.purifiers.vaegan, advlab.purifiers.defense_gan\n"
        "import advlab.purifiers.carso, advlab.purifiers.mlvgm, advlab.checks\n"
        "zoo.list()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {JUPYTER!r})\n"
        "print(bad); sys.exit(1 if bad else 0)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def _git_files() -> list[str]:
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [f for f in out if f and not f.startswith("tests/") and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the tracked (and untracked, not ignored) files: no stale build/ of
    the checkout can leak into it."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    src = tmp_path_factory.mktemp("src")
    for f in _git_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(dist), "."], cwd=src, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (whl,) = dist.glob("advlab-*.whl")
    return whl


def test_the_wheel_carries_the_course_and_only_core_dependencies(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("advlab/py.typed", "advlab/zoo/manifest.json", "advlab/_course/notebooks/00_setup_and_threat_models.ipynb",
                 "advlab/_course/solutions/",
                 "advlab/_course/docs/results/records/README.md"):
        assert any(n.startswith(must) for n in names), must
    for kind in ("notebooks", "exercises", "solutions"):
        shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith(f"advlab/_course/{kind}/") and n.endswith(".ipynb")}
        assert shipped == {p.name for p in (REPO / kind).glob("*.ipynb")}, kind
    man = json.loads((REPO / "advlab/zoo/manifest.json").read_text())
    assert {f"advlab/zoo/{r['file']}" for r in man.values()} <= names             # every zoo weight file
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = {r.split(";")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in requires if "extra ==" not in r}
    assert core == CORE, core
    extras = {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Provides-Extra:")}
    assert {"course", "test", "dev", "mlvgm"} <= extras
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB")


@pytest.fixture(scope="module")
def fresh_env(wheel, tmp_path_factory) -> Path:
    """A new virtual environment outside the checkout with the wheel installed."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    deps = root / "deps"          # links to this environment's third-party packages, advlab left out
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        low = entry.name.lower()
        if low.startswith(("advlab", "__editable__", "_advlab", "__pycache__")) or low.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    (purelib / "zz_deps.pth").write_text(str(deps) + "\n")
    py = venv / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True, timeout=600, cwd=root)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return venv


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVLAB_") or k == "ADVLAB_DATA"}
    env.pop("PYTHONPATH", None)
    return env | extra


def test_the_installed_wheel_loads_the_zoo_and_reads_its_records(fresh_env, tmp_path):
    code = ("import advlab, json, sys\n"
            "from advlab import zoo, resources\n"
            "from advlab.evaluation import records\n"
            "assert 'site-packages' in advlab.__file__, advlab.__file__\n"
            "assert resources.checkout() is None and resources.packaged() is not None\n"
            "clf = zoo.load_model('fmnist/pgd-at')\n"
            "rows = {r['name']: r for r in zoo.list()}\n"
            "print(json.dumps({'file': advlab.__file__, 'records': str(records.records_dir()),\n"
            "                  'pgd_at': rows['fmnist/pgd-at']['robust'], 'n': len(rows)}))\n")
    run = subprocess.run([str(fresh_env / "bin" / "python"), "-c", code], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "_course" in out["records"] and str(REPO) not in out["file"]
    from advlab.evaluation import records
    assert out["pgd_at"] == pytest.approx(records.read_record("fmnist/pgd-at", "adaptive_full_linf0.1")["result"]["headline"]["acc"])


@pytest.mark.timeout(1200)
def test_course_init_then_lecture_00_runs_from_the_copy(fresh_env, tmp_path):
    advlab = str(fresh_env / "bin" / "advlab")
    course = tmp_path / "my-course"
    init = subprocess.run([advlab, "course", "init", str(course)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stderr[-3000:]
    assert f"jupyter lab {course}" in init.stdout
    for kind in ("notebooks", "exercises", "solutions"):
        assert {p.name for p in (course / kind).glob("*.ipynb")} == {p.name for p in (REPO / kind).glob("*.ipynb")}
    assert (course / "docs/results/records").is_dir()
    # a second init keeps a student's edits; a foreign non-empty folder is refused with the argument named
    nb = course / "notebooks" / "00_setup_and_threat_models.ipynb"
    nb.write_text(nb.read_text().replace("# 00 · Setup", "# 00 · Setup (my notes)"))
    assert subprocess.run([advlab, "course", "init", str(course)], env=_env(), capture_output=True, timeout=300).returncode == 0
    assert "(my notes)" in nb.read_text()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    bad = subprocess.run([advlab, "course", "init", str(tmp_path / "other")], env=_env(), capture_output=True, text=True)
    assert bad.returncode == 2 and "dest" in bad.stderr
    # lectures 00, 05 and 06 (these two read the recorded results) from the copy, with the course's own
    # runner: results land in the copy's build/
    run = subprocess.run([advlab, "course", "run", "--only", "00,05,06", "--out", "build"], cwd=course, env=_env(),
                         capture_output=True, text=True, timeout=1100)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    res = json.loads((course / "build" / "results" / "00" / "results.json").read_text())
    assert res["model"] == "fmnist/cnn" and 0.8 < res["clean_acc"] <= 1.0
    for nb in (course / "build" / "notebooks").glob("*.ipynb"):
        executed = json.loads(nb.read_text())
        assert not any(o.get("output_type") == "error" for c in executed["cells"] for o in c.get("outputs", [])), nb.name
    assert len(list((course / "build" / "notebooks").glob("*.ipynb"))) == 3
