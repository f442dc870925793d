"""Lecture 05's pictures: a VAE-GAN in one diagram, and discriminator-guided purification as a
strip of images.

    viz.plot_vaegan_diagram()
    viz.plot_purification_steps(images, names, d_prob, preds, label=y0)

The strip follows one image from the clean input, through the attack, to the decoder's
reconstruction and each purification step, titled with the discriminator's probability of "real"
and the classifier's prediction, so one sees both scores move together.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch

from advlab.viz.core import CORRECT_COLOR, WRONG_COLOR, _as_images, _box, _name


def plot_vaegan_diagram(ax=None):
    """Boxes-and-arrows picture of a VAE-GAN (Larsen et al. 2016): encoder -> q(z|x) -> decoder, the
    discriminator scoring real, reconstructed and sampled images, and its features Dis_l giving the
    reconstruction loss; under it, the purifier of Agarwal, Verma & Momin (*Enhancing Adversarial
    Robustness through a Purification Network*), which lecture 05 builds on a VAE-GAN. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.8))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=14, color="0.2", lw=1.5)
    h = 0.9
    _box(ax, (0.1, 3.6), 1.4, h, "image x", "#eeeeee")
    _box(ax, (1.9, 3.6), 1.6, h, "encoder\nq(z|x) = N(μ, σ²)", "#c7e9c0", fontsize=8)
    _box(ax, (3.9, 3.6), 1.5, h, "decoder\nDec(z)", "#c6dbef")
    _box(ax, (5.8, 3.6), 1.5, h, "reconstruction\nx̃ = Dec(z)", "#eeeeee", fontsize=8)
    _box(ax, (7.7, 2.9), 2.2, 1.6, "discriminator Dis\nreal x vs x̃ and\nDec(z_p), z_p ~ N(0, I)\n"
         "features Dis_l(·)", "#fdd0a2", fontsize=8)
    for a, b in (((1.55, 4.05), (1.85, 4.05)), ((3.55, 4.05), (3.85, 4.05)), ((5.45, 4.05), (5.75, 4.05)),
                 ((7.35, 4.05), (7.65, 4.05))):
        ax.add_patch(FancyArrowPatch(a, b, **arrow))
    ax.text(5.0, 2.75, "encoder: KL(q(z|x) ‖ N(0, I)) + ‖Dis_l(x̃) − Dis_l(x)‖² (a learned similarity, "
                       "not pixels)\ndecoder: the same feature loss + fool Dis;   Dis: tell x from x̃ and "
                       "Dec(z_p)", ha="center", va="top", fontsize=8)
    ax.text(5.0, 1.2, "the purifier (Agarwal, Verma & Momin): x → z = μ(x) → a few steps up Dis's \"real\" "
                      "score → Dec(z) → classifier", ha="center", va="top", fontsize=8.5, color="#08519c",
            fontweight="bold")
    ax.set_title("a VAE-GAN in one picture", fontsize=10)
    return ax


def plot_purification_steps(images, names, d_prob, preds, label=None, class_names=None, title=None):
    """One image along a purification, as a strip: images (K, C, H, W) in [0, 1], names (K,) column
    names, d_prob (K,) the discriminator's probability of "real", preds (K,) the classifier's labels
    (green when equal to `label`). Returns the figure."""
    images = torch.as_tensor(images)
    K = len(images)
    if images.dim() != 4:
        raise ValueError(f"images: expected shape (K, C, H, W), got {tuple(images.shape)}")
    if not (len(names) == len(d_prob) == len(preds) == K):
        raise ValueError(f"names, d_prob, preds: expected {K} entries each, got {len(names)}, {len(d_prob)} "
                         f"and {len(preds)}")
    arr = _as_images(images)
    fig, axes = plt.subplots(1, K, figsize=(1.45 * K, 2.3), squeeze=False)
    for k, a in enumerate(axes[0]):
        a.imshow(arr[k], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        a.set_xticks([])
        a.set_yticks([])
        p = int(preds[k])
        ok = label is None or p == int(label)
        a.set_title(f"{names[k]}\nD: {float(d_prob[k]):.2f}\n{_name(p, class_names)}", fontsize=7,
                    color=CORRECT_COLOR if ok else WRONG_COLOR)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
