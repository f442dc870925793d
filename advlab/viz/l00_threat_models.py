"""Lecture 00's pictures: what a perturbation budget looks like and who the attacker is.

    viz.show_threat_model_noise(x[:4])   # random noise that spends each L∞ / L2 budget, with measured norms
    viz.plot_threat_models()             # input -> defense -> classifier, and what each attacker sees

`budget_noise` is the baseline the lecture compares attacks against: random noise of the full
budget, which rarely changes a prediction, while an attack of the same size does.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.patches import FancyArrowPatch

from advlab.viz.core import _as_images, _box


def budget_noise(x: torch.Tensor, eps: float, norm: str = "linf", seed: int = 0) -> torch.Tensor:
    """x plus random noise that spends the whole budget, clipped to [0, 1].

    linf: every pixel moves by +-eps (a random corner of the Linf ball);
    l2:   a random direction scaled to L2 length eps (a random point on the L2 sphere).
    Clipping to the image box can only shorten the perturbation. Not an attack: a baseline.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm: must be 'linf' or 'l2', got {norm!r}")
    if eps < 0:
        raise ValueError(f"eps: must be >= 0, got {eps!r}")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    if norm == "linf":
        delta = eps * noise.sign()
    else:
        flat = noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = eps * noise / flat.view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)


def show_threat_model_noise(x: torch.Tensor, eps_linf=(0.03, 0.1, 0.3), eps_l2=(0.5, 1.5, 4.0), seed: int = 0,
                            title: str | None = None):
    """For each image (rows): the clean image, then random budget-spending noise at each Linf and
    each L2 budget (columns). Under each noisy image, the norms of its perturbation actually measured
    after clipping to [0, 1], e.g. "L∞ = 0.10" and "L2 = 2.27" (clipping can only shorten it)."""
    x = x[:6]
    cols = [("clean", None, None)] + [("L∞", "linf", e) for e in eps_linf] + [("L2", "l2", e) for e in eps_l2]
    fig, axes = plt.subplots(len(x), len(cols), figsize=(1.5 * len(cols), 1.75 * len(x) + 0.4), squeeze=False)
    for j, (name, norm, eps) in enumerate(cols):
        xn = x if norm is None else budget_noise(x, eps, norm, seed)
        d = (xn - x).flatten(1)
        for i in range(len(x)):
            ax = axes[i, j]
            img = _as_images(xn[i:i + 1])[0]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("clean" if norm is None else f"{name} noise, ε = {eps:g}", fontsize=8)
            if norm is not None:
                ax.set_xlabel(f"L∞ = {d[i].abs().max():.2f}\nL2 = {d[i].norm():.2f}", fontsize=7, linespacing=1.1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_threat_models(ax=None):
    """Boxes-and-arrows picture of a defended classifier (input -> purifier -> classifier ->
    prediction) and, underneath, which part each kind of attacker sees and differentiates
    through. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(9.5, 4.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 6.2)
    ax.axis("off")
    y0, h = 4.7, 0.95
    boxes = [(0.2, "input x'\n(in the ε-ball)", "#eeeeee"), (2.7, "defense\n(e.g. purifier)", "#c6dbef"),
             (5.2, "classifier f\n(weights θ)", "#c7e9c0"), (7.7, "prediction\n(scores / label)", "#eeeeee")]
    w = 2.0
    for x, text, color in boxes:
        _box(ax, (x, y0), w, h, text, color)
    for (x, _, _), (x2, _, _) in zip(boxes, boxes[1:]):
        ax.add_patch(FancyArrowPatch((x + w + 0.05, y0 + h / 2), (x2 - 0.05, y0 + h / 2), arrowstyle="-|>",
                                     mutation_scale=14, color="0.2", lw=1.5))
    rows = [  # (label, start, end, colour, what it does)
        ("white-box", 2.7, 7.2, "#6a51a3", "knows everything; runs standard gradient attacks end to end"),
        ("grey-box", 5.2, 7.2, "#2171b5", "knows f, not the defense: attacks f alone, then feeds x' through both"),
        ("black-box", 0.2, 9.7, "#636363", "only sends inputs and reads outputs (queries), or transfers from a substitute"),
        ("adaptive", 2.7, 7.2, "#cb181d", "knows everything and adapts: BPDA, EoT, custom losses for this defense"),
    ]
    for k, (name, a, b, color, what) in enumerate(rows):
        yy = 3.75 - 0.9 * k
        ax.add_patch(FancyArrowPatch((a, yy), (b, yy), arrowstyle="<|-|>", mutation_scale=12, color=color, lw=2.2))
        ax.text(0.15, yy + 0.1, name, color=color, fontsize=10, fontweight="bold", va="bottom")
        ax.text((a + b) / 2 if name != "black-box" else 5.0, yy - 0.1, what, color=color, fontsize=7.5,
                ha="center", va="top")
    ax.set_title("who the attacker is: what each one sees (arrows: the span it differentiates through or queries)",
                 fontsize=9.5)
    return ax
