"""Lecture 01's pictures and explorer: advlab.viz (loss landscape, PGD in 2-D, loss traces,
targeted gallery) and advlab.widgets.eps_explorer, on a tiny fixed network (no zoo needed)."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advlab import attacks, checks, viz


@pytest.fixture(autouse=True)
def _no_show_and_close(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("advlab.viz must never call plt.show()")

    monkeypatch.setattr(plt, "show", forbidden)
    yield
    plt.close("all")


@pytest.fixture
def net_and_data():
    net = checks._toy_classifier()
    x = checks.fixed_images(6, seed=3)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_loss_landscape_slice_and_plot(net_and_data):
    net, x, y = net_and_data
    land = viz.loss_landscape(net, x[0], y[0], extent=0.2, n=9, seed=0)
    assert land["loss"].shape == (9, 9) and land["margin"].shape == (9, 9) and land["a"].shape == (9,)
    mid = 4
    assert land["a"][mid] == pytest.approx(0.0, abs=1e-7)
    # the centre of the slice is x itself, and the linear prediction is exact there
    assert land["loss"][mid, mid] == pytest.approx(land["loss0"], abs=1e-4)
    assert land["linear_u"][mid] == pytest.approx(land["loss0"], abs=1e-5)
    # along the gradient sign the loss goes up; FGSM's point (a = eps, b = 0) is on the slice
    assert land["along_u"][-1] > land["loss0"]
    xe = (x[:1] + 0.2 * torch.autograd.functional.jacobian(
        lambda z: (net(z).scatter(1, y[:1, None], -1e9).amax(1) - net(z).gather(1, y[:1, None]).squeeze(1)).sum(),
        x[:1]).sign()).clamp(0, 1)
    with torch.no_grad():
        z = net(xe)
    m = (z.scatter(1, y[:1, None], float("-inf")).amax(1) - z.gather(1, y[:1, None]).squeeze(1)).item()
    assert land["loss"][mid, -1] == pytest.approx(m, abs=1e-4)
    ce = viz.loss_landscape(net, x[0], y[0], extent=0.2, n=9, loss="ce")
    assert ce["loss"].min() >= 0 and ce["loss_name"] == "ce"
    fig = viz.plot_loss_landscape(land, eps=0.1, title="t")
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) >= 3
    with pytest.raises(ValueError, match="loss"):
        viz.loss_landscape(net, x[0], y[0], loss="hinge")
    with pytest.raises(ValueError, match="x"):
        viz.loss_landscape(net, x, y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_toy_stays_in_the_ball_and_climbs(norm):
    path = viz.pgd_toy_2d(norm, eps=1.0, alpha=0.3, steps=12, start=(-0.5, 0.4))
    assert len(path) == 12
    size = (lambda d: np.abs(d).max()) if norm == "linf" else np.linalg.norm
    assert all(size(proj) <= 1.0 + 1e-9 for _, _, proj in path)
    assert viz.toy_loss_2d(path[-1][2]) > viz.toy_loss_2d(np.array([-0.5, 0.4]))
    assert any(not np.allclose(moved, proj) for _, moved, proj in path)  # the projection did act
    ax = viz.plot_pgd_toy(norm, starts=[(0, 0), (-0.5, 0.4)])
    assert isinstance(ax, matplotlib.axes.Axes)
    with pytest.raises(ValueError, match="norm"):
        viz.pgd_toy_2d("l1")


def test_attack_loss_trace_records_every_step(net_and_data):
    net, x, y = net_and_data
    atk = attacks.PGD(eps=0.1, alpha=0.02, steps=7, random_start=True, seed=3)
    trace, x_adv = viz.attack_loss_trace(net, x, y, atk, return_adv=True)
    assert trace.shape == (8, len(x))
    assert atk.checks is True and atk.chunk_size == 1000         # the caller's attack is untouched
    assert torch.equal(x_adv, atk(net, x, y))                      # same seed, same result
    with torch.no_grad():
        assert torch.allclose(trace[-1], F.cross_entropy(net(x_adv), y, reduction="none"), atol=1e-5)
    bim = viz.attack_loss_trace(net, x, y, attacks.BIM(eps=0.1, alpha=0.02, steps=5))
    with torch.no_grad():
        assert torch.allclose(bim[0], F.cross_entropy(net(x), y, reduction="none"), atol=1e-5)  # BIM starts at x
    assert bool((bim[-1] >= bim[0]).all())
    ax = viz.plot_loss_traces([bim[:, 0], trace[:, 0]], labels=["BIM (start at x)", "PGD"])
    assert len(ax.get_lines()) == 2


def test_show_targeted(net_and_data):
    _, x, y = net_and_data
    x_adv = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    fig = viz.show_targeted(x, x_adv, labels=y, targets=torch.zeros_like(y), preds_adv=torch.tensor([0, 1, 0, 2, 0, 3]),
                            class_names=[f"c{i}" for i in range(10)], n=4)
    assert len(fig.axes) == 3 * 4 + 1
    assert fig.axes[1 * 4 + 0].title.get_color() == viz.CORRECT_COLOR  # reached the target
    assert fig.axes[1 * 4 + 1].title.get_color() == viz.WRONG_COLOR


def test_eps_explorer_updates_without_a_browser(net_and_data):
    pytest.importorskip("ipywidgets")
    from advlab import widgets
    net, x, y = net_and_data
    factories = {"FGSM": lambda e: attacks.FGSM(eps=e), "PGD": lambda e: attacks.PGD(eps=e, alpha=max(e, 1e-3) / 4, steps=5)}
    w = widgets.eps_explorer(net, x, y, factories, [0.0, 0.05, 0.1], class_names=[f"c{i}" for i in range(10)])
    first = w.last_figure
    assert w.last_result["attack"].startswith("FGSM(eps=0.05")
    assert abs(float(w.last_result["probs_adv"].sum()) - 1) < 1e-5
    eps_slider, dropdown, image = w.children[0].children
    eps_slider.value = 0.1
    assert w.last_figure is not first and "eps=0.1" in w.last_result["attack"]
    dropdown.value = "PGD"
    assert w.last_result["attack"].startswith("PGD(eps=0.1")
    image.value = 2
    assert w.last_result["index"] == 2 and w.last_result["label"] == int(y[2])
    eps_slider.value = 0.0
    assert w.last_result["pred_adv"] == w.last_result["pred_clean"]   # ε = 0 changes nothing
    assert w.last_result["attack"] == "no attack (ε = 0)"
    pgd_by_eps = {"PGD": lambda e: attacks.PGD(eps=e, alpha=2.5 * e / 5, steps=5)}   # alpha = 0 would be invalid
    assert widgets.eps_explorer(net, x, y, pgd_by_eps, [0.0, 0.1], eps=0.0).last_result["attack"].startswith("no attack")
    single = widgets.eps_explorer(net, x[:1], y[:1], lambda e: attacks.FGSM(eps=e), [0.1])
    assert len(single.children[0].children) == 1                          # no dropdown, no image slider
    with pytest.raises(ValueError, match="attack_factory"):
        widgets.eps_explorer(net, x, y, 3, [0.1])
    with pytest.raises(ValueError, match="eps_values"):
        widgets.eps_explorer(net, x, y, factories, [])
    with pytest.raises(ValueError, match="eps"):
        widgets.eps_explorer(net, x, y, factories, [0.1], eps=0.2)
    with pytest.raises(ValueError, match="y"):
        widgets.eps_explorer(net, x, y[:2], factories, [0.1])
