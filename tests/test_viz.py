"""advlab.viz and advlab.widgets: figures come back (never shown), files get written, and
`import advlab` stays free of Jupyter."""
import os
import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from advlab import viz


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("advlab.viz must never call plt.show()")

    monkeypatch.setattr(plt, "show", forbidden)
    yield
    plt.close("all")


def _images(n=6, c=1, seed=0):
    return torch.rand((n, c, 28, 28), generator=torch.Generator().manual_seed(seed))


def test_import_advlab_stays_jupyter_free_and_viz_uses_agg():
    code = ("import advlab, sys, matplotlib; advlab.data; advlab.viz; advlab.checks; advlab.course; "
            "print([m for m in sys.modules if 'ipywidgets' in m or 'IPython' in m]); print(matplotlib.get_backend())")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    modules, backend = out.strip().splitlines()
    assert modules == "[]"
    assert backend.lower() == "agg"  # non-interactive outside Jupyter


def test_show_images_labels_and_predictions():
    x = _images(10)
    y = torch.arange(10)
    fig = viz.show_images(x, labels=y, class_names=[f"c{i}" for i in range(10)], ncols=5, title="t")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert [a.get_title() for a in fig.axes[:3]] == ["c0", "c1", "c2"]
    preds = y.clone()
    preds[1] = 3
    fig = viz.show_images(x, labels=y, preds=preds, class_names=[f"c{i}" for i in range(10)])
    assert fig.axes[0].get_title() == "c0" and fig.axes[1].get_title() == "c3\n(true: c1)"
    assert fig.axes[1].title.get_color() == viz.WRONG_COLOR
    viz.show_images(_images(3, c=3))  # colour images
    with pytest.raises(ValueError, match="x"):
        viz.show_images(torch.zeros(2, 2, 2, 2, 2))


def test_show_perturbations():
    x = _images(4)
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    fig = viz.show_perturbations(x, x_adv, labels=torch.arange(4), preds_adv=torch.tensor([0, 2, 2, 3]), n=3)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 3 * 3 + 1  # 3 rows x 3 examples + colour bar
    with pytest.raises(ValueError, match="x_adv"):
        viz.show_perturbations(x, x_adv[:, :, :10])


def test_norm_balls_and_projections():
    ax = viz.plot_norm_balls(0.5, 1.0)
    assert ax.get_aspect() == 1.0
    fig, ax2 = plt.subplots()
    assert viz.plot_norm_balls(1.0, 1.0, ax=ax2, point=(3.0, 4.0)) is ax2
    import numpy as np
    assert np.allclose(viz._project_l2_2d(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    assert np.allclose(viz._project_linf_2d(np.array([3.0, -0.5]), 1.0), [1.0, -0.5])


def test_accuracy_vs_eps_and_save(tmp_path):
    ax = viz.plot_accuracy_vs_eps({"PGD": [(0.1, 0.2), (0.0, 0.9)], "FGSM": [(0.0, 0.9), (0.1, 0.5)]}, chance=0.1)
    assert len(ax.get_lines()) == 3
    assert list(ax.get_lines()[0].get_xdata()) == [0.0, 0.1]  # sorted by eps
    path = viz.save_figure(ax.figure, tmp_path / "sub", "acc")
    assert path == tmp_path / "sub" / "acc.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_budget_noise_spends_the_budget_inside_the_box():
    x = _images(4)
    for norm, eps in (("linf", 0.1), ("l2", 1.5)):
        xn = viz.budget_noise(x, eps, norm, seed=3)
        assert xn.shape == x.shape and xn.dtype == x.dtype
        assert xn.min() >= 0 and xn.max() <= 1
        d = (xn - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= eps + 1e-5).all()
        assert torch.equal(xn, viz.budget_noise(x, eps, norm, seed=3))
    mid = torch.full((1, 1, 28, 28), 0.5)
    d = viz.budget_noise(mid, 0.1, "linf") - mid
    assert torch.allclose(d.abs(), torch.full_like(d, 0.1), atol=1e-6)  # every pixel moves by exactly eps
    assert abs((viz.budget_noise(mid, 1.5, "l2") - mid).norm().item() - 1.5) < 1e-4
    with pytest.raises(ValueError, match="norm"):
        viz.budget_noise(x, 0.1, "l1")


def test_threat_model_figures():
    fig = viz.show_threat_model_noise(_images(2), eps_linf=(0.1,), eps_l2=(1.5,))
    assert len(fig.axes) == 2 * 3
    assert isinstance(viz.plot_threat_models(), matplotlib.axes.Axes)


def test_threat_model_explorer_updates_without_a_browser():
    pytest.importorskip("ipywidgets")
    from advlab import widgets
    w = widgets.threat_model_explorer(_images(3), eps_linf=0.1, eps_l2=1.5)
    first = w.last_figure
    assert "ε = 0.10" in first.axes[1].get_title()
    sliders = [c for row in w.children[:2] for c in row.children]
    sliders[0].value = 0.25  # the Linf slider re-renders
    assert w.last_figure is not first and "ε = 0.25" in w.last_figure.axes[1].get_title()
    with pytest.raises(ValueError, match="x"):
        widgets.threat_model_explorer(torch.zeros(2, 28, 28))
