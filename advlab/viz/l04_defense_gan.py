"""Lecture 04's pictures: a GAN in one diagram, and Defense-GAN's latent search step by step.

    viz.plot_gan_diagram()
    viz.plot_latent_search(errors, frames, targets, best, show_steps=[0, 10, 50, 200])

Defense-GAN classifies G(z*) instead of the input, z* found by gradient descent on the
reconstruction error from several random restarts; the figure shows that error falling for every
restart and G(z_t) of the chosen one turning into (a clean version of) the input.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import FancyArrowPatch

from advlab.viz.core import CORRECT_COLOR, WRONG_COLOR, _as_images, _box, _name


def plot_gan_diagram(ax=None):
    """Boxes-and-arrows picture of a WGAN-GP: z ~ N(0, I/d) -> generator G -> fake images, and the
    critic D scoring real and fake images (its score gap estimates the Wasserstein distance); under
    it, Defense-GAN's use of G: search z so that G(z) is close to the input. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 3.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=14, color="0.2", lw=1.5)
    h = 0.9
    _box(ax, (0.1, 3.6), 1.8, h, "latent z\n~ N(0, I/d)", "#eeeeee")
    _box(ax, (2.5, 3.6), 1.8, h, "generator G", "#c6dbef")
    _box(ax, (4.9, 3.6), 1.8, h, "fake image\nG(z)", "#eeeeee")
    _box(ax, (4.9, 2.2), 1.8, h, "real image x\n(training set)", "#eeeeee")
    _box(ax, (7.3, 2.9), 2.5, h, "critic D: a score\nE[D(x)] − E[D(G(z))]\n≈ Wasserstein distance", "#fdd0a2",
         fontsize=8)
    for a, b in (((1.95, 4.05), (2.45, 4.05)), ((4.35, 4.05), (4.85, 4.05)), ((6.75, 4.05), (7.25, 3.55)),
                 ((6.75, 2.65), (7.25, 3.25))):
        ax.add_patch(FancyArrowPatch(a, b, **arrow))
    ax.text(5.0, 1.75, "D learns to score real images high and fakes low (kept 1-Lipschitz by the gradient "
                       "penalty);\nG learns to raise the score of its fakes. After training, G maps the prior "
                       "onto images like the data.", ha="center", va="top", fontsize=8)
    ax.text(5.0, 0.55, "Defense-GAN: for an input x, search z* = argmin_z ||G(z) − x||² (L steps, R restarts) "
                       "and classify G(z*) instead of x.", ha="center", va="top", fontsize=8.5, color="#08519c",
            fontweight="bold")
    ax.set_title("a GAN in one picture", fontsize=10)
    return ax


def plot_latent_search(errors, frames, targets, best, show_steps, row_labels=None, preds=None, labels=None,
                       class_names=None, decay_step=None):
    """Defense-GAN's latent search as a figure, one row per image.

    Left: the reconstruction error (mean squared error per pixel, log scale) against the step t for
    every restart (grey) and the chosen one (colour). Right: G(z_t) of the chosen restart at each
    step of `show_steps`, then the target image.
    errors: (T+1, R, N) error of z_t for t = 0..T; frames: (len(show_steps), R, N, C, H, W) images
    G(z_t) at those steps; targets: (N, C, H, W); best: (N,) chosen restart; preds: optional
    (len(show_steps) + 1, N) predicted labels of the frames and of the target (titles, green when
    equal to `labels`); decay_step: the step where the learning rate drops (a dotted line).
    Returns the figure.
    """
    errors, frames = torch.as_tensor(errors), torch.as_tensor(frames)
    targets, best = torch.as_tensor(targets), torch.as_tensor(best)
    if errors.dim() != 3:
        raise ValueError(f"errors: expected shape (T+1, R, N), got {tuple(errors.shape)}")
    T1, R, N = errors.shape
    steps = list(show_steps)
    if frames.dim() != 6 or tuple(frames.shape[:3]) != (len(steps), R, N):
        raise ValueError(f"frames: expected shape ({len(steps)}, {R}, {N}, C, H, W) (one image per shown step, "
                         f"restart and image), got {tuple(frames.shape)}")
    if any(not 0 <= s < T1 for s in steps):
        raise ValueError(f"show_steps: every step must lie in [0, {T1 - 1}], got {steps}")
    if tuple(best.shape) != (N,) or tuple(targets.shape[:1]) != (N,):
        raise ValueError(f"best, targets: expected {N} entries each, got {tuple(best.shape)} and "
                         f"{tuple(targets.shape)}")
    row_labels = list(row_labels) if row_labels is not None else [f"image {i}" for i in range(N)]
    ncol = len(steps) + 1
    fig = plt.figure(figsize=(3.6 + 1.15 * ncol, 1.75 * N + 0.5))
    gs = fig.add_gridspec(N, ncol + 3, width_ratios=[1.0, 1.0, 0.25] + [0.42] * ncol)
    t = np.arange(T1)
    for i in range(N):
        ax = fig.add_subplot(gs[i, :2])
        for r in range(R):
            if r != int(best[i]):
                ax.plot(t, errors[:, r, i].numpy(), color="0.7", lw=0.9)
        ax.plot(t, errors[:, int(best[i]), i].numpy(), color="#cb181d", lw=1.8,
                label=f"chosen restart ({int(best[i])}), error {errors[-1, int(best[i]), i].item():.4f}")
        if decay_step is not None:
            ax.axvline(decay_step, color="0.4", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel(f"{row_labels[i]}\n‖G(z_t) − x‖² / pixels", fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
        ax.tick_params(labelsize=7)
        if i == N - 1:
            ax.set_xlabel("step t" + (" (dotted: learning rate ÷ 10)" if decay_step is not None else ""), fontsize=8)
        else:
            ax.set_title(f"{R} restarts (grey), the chosen one (red)", fontsize=8)
        imgs = [frames[k, int(best[i]), i] for k in range(len(steps))] + [targets[i]]
        names = [f"t = {s}" for s in steps] + ["target x"]
        for k, (img, name) in enumerate(zip(imgs, names)):
            a = fig.add_subplot(gs[i, 3 + k])
            a.imshow(_as_images(img[None])[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
            title = name
            if preds is not None:
                p = int(preds[k][i])
                ok = labels is None or p == int(labels[i])
                title += "\n" + _name(p, class_names)
                a.set_title(title, fontsize=7, color=CORRECT_COLOR if ok else WRONG_COLOR)
            else:
                a.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig
