"""advlab.viz pictures of lecture 05: the VAE-GAN diagram and the purification strip."""
import matplotlib.pyplot as plt
import pytest
import torch

from advlab import viz


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_vaegan_diagram_draws_on_given_axes():
    fig, ax = plt.subplots()
    assert viz.plot_vaegan_diagram(ax=ax) is ax
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "encoder" in texts and "decoder" in texts and "discriminator" in texts
    assert "Agarwal, Verma & Momin" in texts and "paper 00" not in texts   # authors, not an internal label


def test_purification_steps_titles_and_colours():
    imgs = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fig = viz.plot_purification_steps(imgs, ["x", "x_adv", "Dec(μ)", "step 1"], [0.9, 0.2, 0.6, 0.71],
                                      torch.tensor([3, 1, 3, 3]), label=3, class_names=[str(i) for i in range(10)],
                                      title="t")
    assert len(fig.axes) == 4
    titles = [a.get_title() for a in fig.axes]
    assert titles[1] == "x_adv\nD: 0.20\n1" and titles[3] == "step 1\nD: 0.71\n3"
    assert fig.axes[1].title.get_color() == viz.WRONG_COLOR and fig.axes[0].title.get_color() == viz.CORRECT_COLOR


def test_purification_steps_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="names, d_prob, preds"):
        viz.plot_purification_steps(torch.rand(3, 1, 28, 28), ["a", "b"], [0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="images"):
        viz.plot_purification_steps(torch.rand(3, 28, 28), ["a", "b", "c"], [0.1, 0.2, 0.3], [0, 1, 2])
