"""advlab.viz pictures of lecture 04: the GAN diagram and the latent search figure."""
import matplotlib.pyplot as plt
import pytest
import torch

from advlab import viz


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_gan_diagram_draws_on_given_axes():
    fig, ax = plt.subplots()
    assert viz.plot_gan_diagram(ax=ax) is ax
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "generator G" in texts and "critic D" in texts and "Defense-GAN" in texts


def _trace(T=10, R=3, N=2, steps=(0, 4, 10)):
    g = torch.Generator().manual_seed(0)
    errors = torch.rand(T + 1, R, N, generator=g) + 0.01
    frames = torch.rand(len(steps), R, N, 1, 28, 28, generator=g)
    return errors, frames, torch.rand(N, 1, 28, 28, generator=g), torch.tensor([2, 0]), list(steps)


def test_latent_search_figure_rows_and_titles():
    errors, frames, targets, best, steps = _trace()
    preds = torch.tensor([[1, 2], [1, 2], [3, 2], [3, 4]])
    fig = viz.plot_latent_search(errors, frames, targets, best, steps, row_labels=["clean", "adv"], preds=preds,
                                 labels=torch.tensor([3, 2]), class_names=[str(i) for i in range(10)], decay_step=8)
    # per row: one curve axis and len(steps) + 1 images
    assert len(fig.axes) == 2 * (1 + len(steps) + 1)
    titles = [a.get_title() for a in fig.axes]
    assert "t = 4\n1" in titles and "target x\n3" in titles
    curve = fig.axes[0]
    assert len(curve.lines) == 3 + 1                       # 3 restarts (chosen one in colour) + the decay line
    assert "chosen restart (2)" in curve.get_legend().get_texts()[0].get_text()


@pytest.mark.parametrize("change,match", [
    (dict(errors=torch.rand(11, 3)), "errors"),
    (dict(frames=torch.rand(2, 3, 2, 1, 28, 28)), "frames"),
    (dict(steps=[0, 4, 11]), "show_steps"),
    (dict(best=torch.tensor([0])), "best"),
])
def test_latent_search_figure_bad_shapes(change, match):
    errors, frames, targets, best, steps = _trace()
    kw = dict(errors=errors, frames=frames, targets=targets, best=best, steps=steps) | change
    with pytest.raises(ValueError, match=match):
        viz.plot_latent_search(kw["errors"], kw["frames"], kw["targets"], kw["best"], kw["steps"])
