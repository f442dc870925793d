"""The website's browser check finds what it promises (a broken image, a broken internal link, a
Python traceback), and the book's sources are staged from the executed notebooks."""
import json
import shutil

import pytest

from advlab import course, site

needs_browser = pytest.mark.skipif(not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
                                   reason="needs Debian's chromium")
SCRIPT = f"<script>{site.CHECK_JS}</script>"


def _page(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}{SCRIPT}</body></html>")


def _png(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1, 1))
    fig.savefig(path)
    plt.close(fig)


@needs_browser
def test_the_check_flags_broken_images_links_and_tracebacks(tmp_path):
    root = tmp_path / "html"
    _png(tmp_path / "ok.png")
    (root / "img").mkdir(parents=True)
    shutil.copy(tmp_path / "ok.png", root / "img" / "ok.png")
    _page(root / "index.html", '<img src="img/ok.png"><a href="sub/page.html#x">next</a><a href="https://example.org">out</a>')
    _page(root / "sub" / "page.html", '<img src="../img/ok.png"><a href="../index.html">back</a>')
    assert site.check_page(root / "index.html", root) == []
    assert site.check_page(root / "sub" / "page.html", root) == []
    _page(root / "bad_img.html", '<img src="img/missing.png">')
    _page(root / "bad_link.html", '<a href="nowhere.html">x</a>')
    _page(root / "bad_tb.html", "<pre>Traceback (most recent call last):\n  File x\nValueError: boom</pre>")
    assert any("image did not load: img/missing.png" in p for p in site.check_page(root / "bad_img.html", root))
    assert any("broken link: nowhere.html" in p for p in site.check_page(root / "bad_link.html", root))
    assert any("traceback" in p for p in site.check_page(root / "bad_tb.html", root))
    problems = site.check(root, screenshots=("index.html",), log=lambda s: None)
    assert len(problems) == 3
    assert (tmp_path / "screenshots" / "index.png").stat().st_size > 1000


def test_stage_uses_the_executed_lectures_and_strips_the_exercises(tmp_path):
    root = course.find_root()
    executed = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="executed"):
        site.stage(executed, tmp_path / "src", root=root)
    (executed / "notebooks").mkdir(parents=True)
    for p in course.list_notebooks("notebooks", root=root):
        shutil.copy(p, executed / "notebooks" / p.name)
    src = site.stage(executed, tmp_path / "src", repository_url="https://example.org/advlab", root=root)
    toc = (src / "_toc.yml").read_text()
    assert "notebooks/00_setup_and_threat_models" in toc and "exercises/00_setup_and_threat_models" in toc
    config = json.loads((src / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["launch_buttons"]["colab_url"].startswith("https://colab")
    assert "colab" not in json.loads(site.stage(executed, tmp_path / "src2", root=root).joinpath("_config.yml").read_text())
    assert "| 10 |" in (src / "index.md").read_text()                  # the syllabus
    assert "worst case" in (src / "leaderboard.md").read_text()
    api = (src / "api" / "advlab_zoo_front.md").read_text()
    assert "## `load_model`" in api and "def load_model(name" in api
    for p in (src / "exercises").glob("*.ipynb"):
        nb = json.loads(p.read_text())
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
