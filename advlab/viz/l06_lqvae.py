"""Lecture 06's pictures: LQ-VAE's training and inference in one diagram, and how many code bits
an attack flips.

    viz.plot_lqvae_diagram()
    viz.plot_bit_flips({"PGD": code_flips(...), "CW": ...}, latent_dim=64)

LQ-VAE purifies through a binary code; the histogram shows that small input perturbations flip
few of its bits, which is why the decoded image, and the prediction, barely move.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from advlab.viz.core import _box, _to_numpy


def plot_lqvae_diagram(ax=None):
    """Boxes-and-arrows picture of LQ-VAE (Kyatham, Mishra & Prathosh, *Variational Inference with
    Latent Space Quantization for Adversarial Resilience*, Algorithm 1): the encoder f with its Lipschitz
    penalty, z ~ N(mu, sigma^2), the two quantisers H~ (training, differentiable) and H (sign), the
    decoders h (on H~(z): its loss L_h trains f and h) and g (on H(z): L_g trains g only), and the
    inference path x -> f -> mu -> H -> g -> classifier. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 6.4)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=13, color="0.2", lw=1.4)
    h = 0.85
    _box(ax, (0.1, 3.3), 1.3, h, "image x", "#eeeeee")
    _box(ax, (1.9, 3.3), 2.0, h, "encoder f_θ\n(Lipschitz penalty)", "#c6dbef", fontsize=8)
    _box(ax, (4.4, 3.3), 1.9, h, "z ~ N(μ, σ²)\n(training)", "#eeeeee", fontsize=8)
    _box(ax, (6.8, 4.6), 1.6, h, "H~(z)\nsoft: tanh(2z/t)", "#fdd0a2", fontsize=8)
    _box(ax, (6.8, 2.0), 1.6, h, "H(z)\nsign: ±1 bits", "#fdae6b", fontsize=8)
    _box(ax, (8.9, 4.6), 1.5, h, "decoder 2 h_ψ", "#c7e9c0", fontsize=8)
    _box(ax, (8.9, 2.0), 1.5, h, "decoder 1 g_φ", "#74c476", fontsize=8)
    _box(ax, (10.8, 4.6), 1.1, h, "L_h", "#f7f7f7", fontsize=9)
    _box(ax, (10.8, 2.0), 1.1, h, "L_g", "#f7f7f7", fontsize=9)
    for a, b in (((1.45, 3.72), (1.85, 3.72)), ((3.95, 3.72), (4.35, 3.72)), ((6.35, 3.9), (6.75, 5.0)),
                 ((8.45, 5.02), (8.85, 5.02)), ((10.45, 5.02), (10.75, 5.02)),
                 ((8.45, 2.42), (8.85, 2.42)), ((10.45, 2.42), (10.75, 2.42))):
        ax.add_patch(FancyArrowPatch(a, b, **arrow))
    ax.add_patch(FancyArrowPatch((6.35, 3.5), (6.75, 2.5), linestyle="--", **arrow))
    ax.text(6.2, 2.9, "detached", fontsize=7, ha="right", color="0.3")
    ax.text(11.35, 5.65, "trains f (+ KL + penalty) and h", ha="center", fontsize=7.5, color="#08519c")
    ax.text(11.35, 1.65, "trains g only", ha="center", fontsize=7.5, color="#006d2c")
    ax.text(2.9, 4.4, "L_f = L_h + KL + Σ(‖∇ₓf(x)‖₂ − K)²", ha="center", fontsize=7.5, color="#08519c")
    ax.text(6.0, 0.95, "inference (the purifier): x → f → μ → H(μ) → g → classifier   "
                       "(deterministic; no search: one forward pass)", ha="center", fontsize=8.5,
            color="#a50f15", fontweight="bold")
    ax.text(6.0, 0.35, "H has zero gradient almost everywhere: an attacker must approximate it "
                       "(straight-through, BPDA)", ha="center", fontsize=8, color="0.3")
    ax.set_title("LQ-VAE training (Algorithm 1) and inference", fontsize=10)
    return ax


def plot_bit_flips(flips: dict, latent_dim: int, ax=None, threshold: float = 0.06, max_bits: int | None = None,
                   title: str | None = None):
    """Histogram of the number of code bits an attack flips, one bar series per attack.

    flips: {attack name: (N,) fractions of flipped bits per image (as code_flips returns)};
    latent_dim: bits per code (the fractions are multiples of 1 / latent_dim); threshold: a dotted line
    and, in the legend, the share of images below it (the LQ-VAE paper of Kyatham, Mishra & Prathosh:
    ~90% of CW adversaries on MNIST flip fewer than 6% of the bits). The x axis counts whole bits: its
    ticks are integers. Returns the axes."""
    if not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(f"latent_dim: must be an int >= 1, got {latent_dim!r}")
    if not flips:
        raise ValueError("flips: expected at least one attack")
    arrays = {}
    for name, f in flips.items():
        a = _to_numpy(torch.as_tensor(f)).astype(float).ravel()
        if a.size == 0 or (a < 0).any() or (a > 1).any():
            raise ValueError(f"flips[{name!r}]: expected fractions in [0, 1], got {a.size} values in "
                             f"[{a.min() if a.size else 'nan'}, {a.max() if a.size else 'nan'}]")
        arrays[name] = np.rint(a * latent_dim).astype(int)
    top = max_bits if max_bits is not None else max(int(b.max()) for b in arrays.values())
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    k = len(arrays)
    width = 0.8 / k
    bins = np.arange(top + 1)
    for j, (name, bits) in enumerate(arrays.items()):
        counts = np.bincount(np.minimum(bits, top), minlength=top + 1)[: top + 1]
        below = 100 * float((bits / latent_dim < threshold).mean())
        ax.bar(bins + (j - (k - 1) / 2) * width, 100 * counts / len(bits), width=width,
               label=f"{name}: {below:.0f}% of {len(bits)} images < {100 * threshold:g}% flipped")
    ax.axvline(threshold * latent_dim, color="0.3", ls=":", lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if max_bits is not None:  # the last bar collects everything from max_bits on
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"≥{top}" if round(v) == top else f"{v:g}"))
    ax.set_xlabel(f"bits flipped (of {latent_dim})" + (f"; last bar: ≥ {top}" if max_bits is not None else ""))
    ax.set_ylabel("images (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
