"""The course website: a Jupyter Book (1.x) built from the executed notebooks, checked in a real browser.

    advlab course run --out build                       # execute the lectures (papermill)
    advlab course site --executed build --out build/site [--check] [--repository-url URL]
    # = site.build(...) then site.check(...): build/site/_build/html/index.html

Pages: the syllabus (index), every executed lecture with its outputs, the exercise sets without
outputs, the leaderboard (from the records), the measured results (the README's tables) and an
API reference generated from the docstrings. Each notebook page has the theme's download button;
with a repository URL, also an open-in-Colab button (Colab opens notebooks from the repository, so
there is none without one). The book is built with execution off: the outputs are papermill's.

`check` loads every page in headless Chromium (Debian's `chromium`) and fails on an image that did
not load (checked in the page by a small script: complete and naturalWidth > 0), an internal link to
a missing file, or a Python traceback on the page; it saves screenshots of two pages.
jupyter-book is the `[site]` extra; nothing else in advlab imports this module.
"""
from __future__ import annotations

import html
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

CHECK_JS = """// advlab site check: records, after load, the images that failed to load
window.addEventListener('load', function () {
  var bad = [];
  for (var i = 0; i < document.images.length; i++) {
    var im = document.images[i];
    if (!(im.complete && im.naturalWidth > 0)) bad.push(im.getAttribute('src'));
  }
  document.body.setAttribute('data-advlab-broken-images', JSON.stringify(bad));
});
"""
API_MODULES = ("advlab.data", "advlab.models", "advlab.zoo", "advlab.zoo.front", "advlab.attacks", "advlab.purifiers",
               "advlab.purifiers.base", "advlab.purifiers.voting", "advlab.evaluation.adaptive",
               "advlab.evaluation.records", "advlab.evaluation.leaderboard", "advlab.evaluation.masking",
               "advlab.training.adversarial", "advlab.metrics", "advlab.validate", "advlab.course", "advlab.resources")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)")   # what a Python error output always shows


def _readme_sections(readme: Path, titles: tuple[str, ...]) -> str:
    """The README's sections with these titles (## level), links to repository files made plain text."""
    text = readme.read_text(encoding="utf-8")
    parts = re.split(r"(?m)^## ", text)
    keep = [p for p in parts[1:] if p.split("\n", 1)[0].strip() in titles]
    out = "\n".join("## " + p for p in keep)
    return re.sub(r"\[([^\]]+)\]\((?!https?://)[^)]+\)", r"\1", out)


def _api_page(module_name: str) -> str:
    import importlib
    mod = importlib.import_module(module_name)
    lines = [f"# `{module_name}`", "", "```text", inspect.getdoc(mod) or "(no module docstring)", "```", ""]
    names = getattr(mod, "__all__", None) or [n for n in vars(mod) if not n.startswith("_")]
    for name in sorted(names):
        try:
            obj = getattr(mod, name)
        except AttributeError:
            continue
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if getattr(obj, "__module__", "").split(".")[:2] != module_name.split(".")[:2] and not module_name.endswith(
                (".attacks", ".purifiers")):
            continue                          # imported from elsewhere: documented at home
        try:
            sig = str(inspect.signature(obj))
        except (TypeError, ValueError):
            sig = "(...)"
        kind = "class" if inspect.isclass(obj) else "def"
        lines += [f"## `{name}`", "", "```python", f"{kind} {name}{sig}", "```", "",
                  "```text", inspect.getdoc(obj) or "(no docstring)", "```", ""]
    return "\n".join(lines)


def stage(executed: str | Path, src: str | Path, repository_url: str | None = None,
          root: str | Path | None = None) -> Path:
    """Write the book's sources into `src`: executed lectures, exercise sets (no outputs), leaderboard,
    results, API pages, _config.yml and _toc.yml. Raises FileNotFoundError naming what is missing."""
    from advlab import course
    from advlab.evaluation import leaderboard
    root = course.repo_root(root)
    executed, src = Path(executed), Path(src)
    lectures = course.list_notebooks("notebooks", root=root)
    missing = [p.name for p in lectures if not (executed / "notebooks" / p.name).exists()]
    if missing:
        raise FileNotFoundError(f"executed: {executed / 'notebooks'} lacks {missing}; run `advlab course run --out "
                                f"{executed}` first (the site shows papermill's outputs, it executes nothing)")
    if src.exists():
        shutil.rmtree(src)
    (src / "notebooks").mkdir(parents=True)
    (src / "exercises").mkdir()
    (src / "api").mkdir()
    (src / "_static").mkdir()
    (src / "_static" / "advlab-check.js").write_text(CHECK_JS)
    for p in lectures:
        shutil.copy(executed / "notebooks" / p.name, src / "notebooks" / p.name)
    for p in course.list_notebooks("exercises", root=root):
        shutil.copy(p, src / "exercises" / p.name)
        course.strip_outputs(src / "exercises" / p.name)
    readme = root / "README.md"
    syllabus = _readme_sections(readme, ("Syllabus",)) if readme.exists() else ""
    (src / "index.md").write_text(
        "# advlab: adversarial attacks and generative purification\n\n"
        "A Jupyter-first course: from FGSM to published purification defenses, each evaluated under the strongest "
        "adaptive attack we can build. The lectures below are shown with the outputs of one papermill run "
        "(quick profile); download any of them with the button at the top of its page.\n\n" + syllabus + "\n")
    board = leaderboard.build()
    written = leaderboard.write(board, src / "leaderboard_files")
    images = "\n\n".join(f"![{p.stem}](leaderboard_files/{p.name})" for p in written if p.suffix == ".png")
    (src / "leaderboard.md").write_text("# Leaderboard\n\nEvery defense and classifier against every attack, read "
                                        "from the evaluation records (`advlab leaderboard`).\n\n"
                                        + leaderboard.markdown(board) + "\n\n" + images + "\n")
    results = _readme_sections(readme, ("Model zoo", "Purifiers (measured)", "Attacks: agreement and speed (measured)")) \
        if readme.exists() else ""
    (src / "results.md").write_text("# Measured results\n\nThe README's tables, each from a recorded run.\n\n" + results)
    api = []
    for m in API_MODULES:
        slug = m.replace(".", "_")
        (src / "api" / f"{slug}.md").write_text(_api_page(m))
        api.append(f"api/{slug}")
    (src / "api.md").write_text("# API reference\n\nGenerated from the docstrings of the library's public "
                                "modules.\n")
    toc = ["format: jb-book", "root: index", "parts:",
           "  - caption: Lectures", "    chapters:"] + [f"      - file: notebooks/{p.stem}" for p in lectures] + \
          ["  - caption: Exercise sets", "    chapters:"] + \
          [f"      - file: exercises/{p.stem}" for p in course.list_notebooks("exercises", root=root)] + \
          ["  - caption: Results", "    chapters:", "      - file: leaderboard", "      - file: results",
           "      - file: api", "        sections:"] + [f"          - file: {a}" for a in api]
    (src / "_toc.yml").write_text("\n".join(toc) + "\n")
    config = {"title": "advlab", "author": "the advlab authors", "only_build_toc_files": True,
              "execute": {"execute_notebooks": "off"},
              "html": {"use_download_button": True},
              "sphinx": {"config": {"html_static_path": ["_static"], "html_js_files": ["advlab-check.js"],
                                    "nb_merge_streams": True, "html_show_sourcelink": False,
                                    "suppress_warnings": ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]}}}
    if repository_url:
        config["repository"] = {"url": repository_url, "branch": "main", "path_to_book": ""}
        config["launch_buttons"] = {"colab_url": "https://colab.research.google.com", "notebook_interface": "jupyterlab"}
    (src / "_config.yml").write_text(json.dumps(config, indent=2) + "\n")   # JSON is YAML
    return src


def build(executed: str | Path = "build", out: str | Path = "build/site", repository_url: str | None = None,
          root: str | Path | None = None) -> Path:
    """Stage the sources into OUT/src and build the book; returns the folder of the html pages."""
    out = Path(out).resolve()
    if shutil.which("jupyter-book") is None and not (Path(sys.executable).parent / "jupyter-book").exists():
        raise FileNotFoundError("jupyter-book is not installed: pip install 'advlab[site]' (jupyter-book 1.x)")
    src = stage(executed, out / "src", repository_url, root)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(src), "--path-output", str(out), "--builder", "html"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed ({run.returncode}):\n{(run.stdout + run.stderr)[-4000:]}")
    return out / "_build" / "html"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise FileNotFoundError("no headless browser: install Debian's chromium (apt-get install chromium)")


def _browser(*args, timeout=120) -> str:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout


def check_page(page: Path, html_root: Path) -> list[str]:
    """Problems on one page as loaded by the browser: broken images, internal links to missing files,
    Python tracebacks."""
    dom = _browser("--virtual-time-budget=8000", "--dump-dom", page.resolve().as_uri())
    problems = []
    m = re.search(r'data-advlab-broken-images="([^"]*)"', dom)
    if m is None:
        problems.append("the page did not finish loading (no image check ran)")
    else:
        for src in json.loads(html.unescape(m.group(1))):
            problems.append(f"image did not load: {src}")
    for href in re.findall(r'<a [^>]*href="([^"]+)"', dom):
        href = html.unescape(href)
        if re.match(r"^(https?:|mailto:|#|data:|javascript:)", href):
            continue
        target = (page.parent / href.split("#", 1)[0].split("?", 1)[0]).resolve()
        if href.split("#", 1)[0] and not target.exists():
            problems.append(f"broken link: {href}")
    text = re.sub(r"<[^>]+>", "", dom)
    if TRACEBACK.search(html.unescape(text)):
        problems.append("a Python traceback is on the page")
    return [f"{page.relative_to(html_root)}: {p}" for p in problems]


def check(html_root: str | Path, screenshots: tuple[str, ...] = ("index.html", "notebooks/10_evaluating_defenses.html"),
          log=print) -> list[str]:
    """Load every page of the built site in headless Chromium; returns the problems (empty: all good).
    Saves a screenshot of each page in `screenshots` to HTML_ROOT/../screenshots/."""
    html_root = Path(html_root)
    pages = sorted(p for p in html_root.rglob("*.html")
                   if not any(part.startswith("_") for part in p.relative_to(html_root).parts)
                   and p.name not in ("search.html", "genindex.html", "py-modindex.html"))
    if not pages:
        return [f"{html_root}: no pages"]
    problems = []
    for i, page in enumerate(pages, 1):
        found = check_page(page, html_root)
        problems += found
        log(f"[{i}/{len(pages)}] {page.relative_to(html_root)}: {'ok' if not found else f'{len(found)} problem(s)'}")
    shots = html_root.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    for rel in screenshots:
        page = html_root / rel
        if not page.exists():
            problems.append(f"screenshot: no page {rel}")
            continue
        dst = shots / (Path(rel).stem + ".png")
        _browser("--window-size=1280,1600", "--virtual-time-budget=8000", f"--screenshot={dst}", page.resolve().as_uri())
        if not dst.exists() or dst.stat().st_size < 5000:
            problems.append(f"screenshot of {rel} failed")
        else:
            log(f"screenshot: {dst}")
    return problems
