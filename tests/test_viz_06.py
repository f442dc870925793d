"""advlab.viz pictures of lecture 06: the LQ-VAE diagram and the bit-flip histogram."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from advlab import viz


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_lqvae_diagram_draws_on_given_axes():
    fig, ax = plt.subplots()
    assert viz.plot_lqvae_diagram(ax=ax) is ax
    texts = " ".join(t.get_text() for t in ax.texts)
    for word in ("encoder f_θ", "H~(z)", "H(z)", "decoder 2 h_ψ", "decoder 1 g_φ", "L_h", "L_g", "inference"):
        assert word in texts


def test_bit_flip_histogram_counts_and_legend():
    flips = {"CW": torch.tensor([0, 1, 1, 2, 8]) / 64, "FGSM": np.array([3, 3, 4, 5, 6]) / 64}
    ax = viz.plot_bit_flips(flips, latent_dim=64)
    bars = ax.patches
    assert len(bars) == 2 * 9                         # bins 0..8 for each attack
    heights = [b.get_height() for b in bars[:9]]
    assert heights[:3] == [20.0, 40.0, 20.0] and heights[8] == 20.0
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0].startswith("CW: 80% of 5 images < 6% flipped")      # 0, 1, 1, 2 bits < 3.84
    assert texts[1].startswith("FGSM: 40% of 5 images")                  # 3, 3 of 3..6


def test_bit_flip_histogram_caps_and_bad_input():
    ax = viz.plot_bit_flips({"a": [0.0, 0.5]}, latent_dim=64, max_bits=10)
    assert len(ax.patches) == 11 and ax.patches[10].get_height() == 50.0
    with pytest.raises(ValueError, match="flips"):
        viz.plot_bit_flips({"a": [1.5]}, latent_dim=64)
    with pytest.raises(ValueError, match="latent_dim"):
        viz.plot_bit_flips({"a": [0.1]}, latent_dim=0)
    with pytest.raises(ValueError, match="flips"):
        viz.plot_bit_flips({}, latent_dim=8)
