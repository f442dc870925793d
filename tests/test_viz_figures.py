"""The figure fixes of issue 21 in advlab.viz: every accuracy bar labelled (0% visible), points coloured
by class with a legend of class names, readable noise captions, integer bit ticks, papers named by their
authors, and explorers that leave a static picture (not "VBox(children=...)") in a static copy."""
import base64
import json
import os
import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from advlab import viz


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def _markers(ax):
    """the outlined markers drawn for bars too short to see"""
    return [ln for ln in ax.lines if ln.get_marker() == "D"]


@pytest.mark.parametrize("horizontal", [False, True])
def test_accuracy_bars_label_every_bar_and_mark_zero(horizontal):
    vals = {"clean": 0.915, "PGD": 0.0, "FGSM": 0.38, "APGD": 0.0, "tiny": 0.001}
    ax = viz.plot_accuracy_bars(vals, horizontal=horizontal, reference=0.915)
    assert _texts(ax) == ["91.5%", "0.0%", "38.0%", "0.0%", "0.1%"]       # every bar, 0% included
    assert len(ax.patches) == 5
    lengths = [b.get_width() if horizontal else b.get_height() for b in ax.patches]
    assert np.allclose(lengths, [91.5, 0.0, 38.0, 0.0, 0.1])
    marks = _markers(ax)
    assert len(marks) == 3                                                  # the two zeros and 0.1%
    pos = [float(m.get_ydata()[0] if horizontal else m.get_xdata()[0]) for m in marks]
    assert pos == [1.0, 3.0, 4.0]
    assert all(not m.get_clip_on() for m in marks)                          # visible on top of the axis
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean: 91.5%"]
    names = [t.get_text() for t in (ax.get_yticklabels() if horizontal else ax.get_xticklabels())]
    assert names == list(vals)
    if horizontal:
        assert ax.get_ylim()[0] > ax.get_ylim()[1]                          # the first label on top


def test_accuracy_bars_sequence_colors_nan_and_bad_input(tmp_path):
    fig, ax = plt.subplots()
    out = viz.plot_accuracy_bars([0.5, float("nan"), 0.0], labels=["a", "b", "c"], ax=ax, colors=["r", "g", "b"],
                                 title="t", decimals=0)
    assert out is ax and ax.get_title() == "t"
    assert _texts(ax) == ["50%", "n/a", "0%"]
    assert not ax.patches[1].get_visible() and len(_markers(ax)) == 1
    assert viz.save_figure(fig, tmp_path, "bars").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="percentage"):
        viz.plot_accuracy_bars({"a": 45.0})
    with pytest.raises(ValueError, match="labels"):
        viz.plot_accuracy_bars([0.1, 0.2], labels=["a"])
    with pytest.raises(ValueError, match="colors"):
        viz.plot_accuracy_bars({"a": 0.1}, colors=["r", "g"])
    with pytest.raises(ValueError, match="values"):
        viz.plot_accuracy_bars({})


def test_scatter_by_class_has_a_legend_with_class_names():
    g = np.random.default_rng(0)
    labels = torch.tensor([3, 0, 1, 3, 1, 0, 2])
    names = ["T-shirt", "Trouser", "Pullover", "Dress"]
    ax = viz.scatter_by_class(torch.as_tensor(g.normal(size=(7, 2))), labels, class_names=names, title="by class")
    legend = ax.get_legend()
    assert legend is not None and legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == names              # sorted by class, named
    colours = ax.collections[0].get_facecolors()
    assert len(colours) == 7 and np.allclose(colours[0], colours[3])        # one colour per class, data order kept
    handles = legend.legend_handles
    assert np.allclose(matplotlib.colors.to_rgba(handles[3].get_color())[:3], colours[0][:3])
    ax2 = viz.scatter_by_class(g.normal(size=(3, 2)), [0, 5, 5], legend="best")
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["0", "5"]   # numbers without class_names
    assert viz.scatter_by_class(g.normal(size=(3, 2)), [0, 1, 1], legend=None).get_legend() is None
    with pytest.raises(ValueError, match="points"):
        viz.scatter_by_class(np.zeros((3, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="labels"):
        viz.scatter_by_class(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="class_names"):
        viz.scatter_by_class(np.zeros((2, 2)), [0, 4], class_names=names)


def test_noise_captions_are_readable():
    x = torch.full((1, 1, 28, 28), 0.5)
    fig = viz.show_threat_model_noise(x, eps_linf=(0.1,), eps_l2=(1.5,))
    captions = [ax.get_xlabel() for ax in fig.axes]
    assert captions[0] == ""                                                # the clean image
    assert captions[1] == "L∞ = 0.10\nL2 = 2.80"                            # every pixel moved by 0.1: 0.1 * 28
    assert captions[2].startswith("L∞ = ") and captions[2].endswith("L2 = 1.50")
    assert [ax.get_title() for ax in fig.axes] == ["clean", "L∞ noise, ε = 0.1", "L2 noise, ε = 1.5"]


@pytest.mark.parametrize("bits, max_bits", [([0, 1, 2, 3, 9, 20], 16),      # lecture 06: 0..16 bins
                                             ([0, 1, 2, 2, 3, 16], None), ([0, 0, 1], None), ([0, 5, 41], None)])
def test_bit_flip_ticks_are_whole_bits(bits, max_bits):
    # with 17 bins (0..16) matplotlib's default locator ticks at 2.5, 7.5, 12.5 bits
    ax = viz.plot_bit_flips({"CW": np.array(bits) / 64}, latent_dim=64, max_bits=max_bits)
    ax.figure.canvas.draw()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    labels = [t.get_text() for t in ax.get_xticklabels() if lo <= t.get_position()[0] <= hi]
    assert all("." not in t for t in labels), labels
    if max_bits is not None:
        assert f"≥{max_bits}" in labels                                     # the capped last bar says so


def test_no_internal_paper_labels_in_figures_or_docstrings():
    import inspect

    from advlab.viz import core, l00_threat_models, l01_attacks, l04_defense_gan, l05_vaegan, l06_lqvae, widgets
    for mod in (viz, core, l00_threat_models, l01_attacks, l04_defense_gan, l05_vaegan, l06_lqvae, widgets):
        src = inspect.getsource(mod)
        for label in ("paper 00", "seed paper", "Issue 4"):
            assert label not in src, f"{mod.__name__} still says {label!r}"
    fig, axes = plt.subplots(1, 2)
    viz.plot_vaegan_diagram(ax=axes[0])
    viz.plot_lqvae_diagram(ax=axes[1])
    assert "Agarwal, Verma & Momin" in " ".join(_texts(axes[0]))
    assert "Kyatham, Mishra & Prathosh" in viz.plot_lqvae_diagram.__doc__.replace("\n    ", " ")


# ---- explorers: a static picture of the default state -------------------------------------------------

def _net_and_data():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    x = torch.rand((3, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    return net, x, torch.tensor([0, 1, 2])


def _check_static(w, name, tmp_path, expect_path=True):
    assert isinstance(w.static_figure, matplotlib.figure.Figure)
    assert w.static_png[:4] == b"\x89PNG"
    bundle = w._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"])[:4] == b"\x89PNG"          # what a static copy shows
    assert "application/vnd.jupyter.widget-view+json" in bundle             # what a live frontend shows
    assert bundle["text/plain"].startswith(f"{name}: an interactive explorer")
    assert "VBox(" not in bundle["text/plain"]
    if expect_path:
        assert w.static_path == tmp_path / f"{name}.png" and w.static_path.read_bytes()[:4] == b"\x89PNG"
    else:
        assert w.static_path is None


def test_threat_model_explorer_keeps_a_static_default_figure(tmp_path):
    pytest.importorskip("ipywidgets")
    from advlab import widgets
    w = widgets.threat_model_explorer(torch.rand(2, 1, 28, 28), eps_linf=0.1, eps_l2=1.5, out_dir=tmp_path)
    _check_static(w, "threat_model_explorer", tmp_path)
    assert "ε (L∞) = 0.10, ε (L2) = 1.5, image 0" in w._repr_mimebundle_()["text/plain"]
    default_png = w.static_png
    sliders = [c for row in w.children[:2] for c in row.children]
    sliders[0].value = 0.3                                                  # moving a slider redraws ...
    assert w.last_figure is not w.static_figure and "0.30" in w.last_figure.axes[1].get_title()
    assert w.static_png == default_png and "ε = 0.10" in w.static_figure.axes[1].get_title()   # ... not the default
    _check_static(widgets.threat_model_explorer(torch.rand(1, 1, 28, 28), name="tm"), "tm", tmp_path, False)


def test_eps_explorer_keeps_a_static_default_figure(tmp_path):
    pytest.importorskip("ipywidgets")
    from advlab import attacks, widgets
    net, x, y = _net_and_data()
    w = widgets.eps_explorer(net, x, y, {"FGSM": lambda e: attacks.FGSM(eps=e)}, [0.0, 0.05], out_dir=tmp_path,
                             name="eps")
    _check_static(w, "eps", tmp_path)
    assert "FGSM(eps=0.05" in w._repr_mimebundle_()["text/plain"]
    assert w.static_figure is w.last_figure


def test_figure_explorer_draws_any_function(tmp_path):
    ipywidgets = pytest.importorskip("ipywidgets")
    from advlab import widgets
    calls = []

    def draw(t, k):
        calls.append((t, k))
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, t * k])
        ax.set_title(f"t = {t}, k = {k}")
        return fig

    w = widgets.figure_explorer(draw, name="temp", out_dir=tmp_path, t=ipywidgets.FloatSlider(value=0.5),
                                k=ipywidgets.Dropdown(options=[1, 2], value=1))
    _check_static(w, "temp", tmp_path)
    assert calls == [(0.5, 1)] and "t = 0.5, k = 1" in w._repr_mimebundle_()["text/plain"]
    w.children[0].children[1].value = 2
    assert calls[-1] == (0.5, 2) and w.last_figure.axes[0].get_title() == "t = 0.5, k = 2"
    with pytest.raises(ValueError, match="controls"):
        widgets.figure_explorer(draw)
    with pytest.raises(ValueError, match="t"):
        widgets.figure_explorer(draw, t=0.5)
    with pytest.raises(TypeError, match="Figure"):
        widgets.figure_explorer(lambda t: None, t=ipywidgets.FloatSlider())


def test_explorer_display_outside_a_kernel_shows_the_picture():
    """IPython's display machinery (as in a notebook cell, here without a kernel) formats the explorer
    with the PNG next to the widget view and readable text, never only "VBox(children=...)"."""
    pytest.importorskip("ipywidgets")
    code = ("import torch, json; from IPython.core.interactiveshell import InteractiveShell;"
            "from advlab import widgets;"
            "w = widgets.threat_model_explorer(torch.rand(1, 1, 28, 28));"
            "data, md = InteractiveShell.instance().display_formatter.format(w);"
            "print(json.dumps({'keys': sorted(data), 'text': data['text/plain'], 'png': data['image/png'][:8]}))")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["keys"] == ["application/vnd.jupyter.widget-view+json", "image/png", "text/plain"]
    assert got["text"].startswith("threat_model_explorer: an interactive explorer")
    assert base64.b64decode(got["png"] + "==")[:4] == b"\x89PNG"
