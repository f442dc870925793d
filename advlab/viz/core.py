"""The general matplotlib helpers every lecture uses: image grids, perturbation galleries,
norm balls in 2-D, accuracy-vs-ε curves and saving figures (the per-lecture pictures build on
them and live in the sibling modules of advlab.viz).

    fig = viz.show_images(x[:16], labels=y[:16], class_names=data.class_names("fashion_mnist"))
    fig = viz.show_perturbations(x[:6], x_adv[:6])
    viz.save_figure(fig, OUT_DIR, "gallery")

Every helper returns its figure (or the axes it drew on, when it takes an `ax=`) and never calls
`plt.show()`: in Jupyter the inline backend shows the figure at the end of the cell; elsewhere
(scripts, papermill without a kernel, CI) the non-interactive Agg backend is selected when this
module is imported, unless a backend was already chosen (MPLBACKEND or an earlier
`import matplotlib.pyplot`). This module never imports IPython or ipywidgets.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import matplotlib


def _in_jupyter_kernel() -> bool:
    return "ipykernel" in sys.modules


if not _in_jupyter_kernel() and "MPLBACKEND" not in os.environ and "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

CORRECT_COLOR = "#1a7f37"
WRONG_COLOR = "#cf222e"


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _as_images(x) -> np.ndarray:
    """(N, C, H, W) / (N, H, W) / (C, H, W) / (H, W) -> (N, H, W) or (N, H, W, 3) for imshow."""
    a = _to_numpy(x)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[0] != a.shape[1]:
        a = a[None]  # a single (C, H, W) image
    if a.ndim == 4:
        a = a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)
    if a.ndim not in (3, 4):
        raise ValueError(f"x: expected images of shape (N, C, H, W), got shape {tuple(_to_numpy(x).shape)}")
    return a


def _label_list(v, n):
    if v is None:
        return [None] * n
    a = _to_numpy(v).astype(int).reshape(-1).tolist()
    if len(a) < n:
        raise ValueError(f"expected at least {n} labels, got {len(a)}")
    return a


def _name(c, class_names):
    if c is None:
        return ""
    return class_names[c] if class_names is not None else str(c)


def _grid(n: int, ncols: int, cell: float = 1.35, extra_h: float = 0.0, title_lines: int = 1):
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, nrows * (cell + 0.17 * title_lines) + extra_h),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def show_images(x, labels=None, preds=None, class_names=None, ncols: int = 8, title: str | None = None,
                cell_size: float = 1.35):
    """A grid of images with their labels; with `preds`, titles say the prediction, green when it
    equals the label and red otherwise. Returns the figure."""
    imgs = _as_images(x)
    n = len(imgs)
    if n == 0:
        raise ValueError("x: no images to show")
    labels, preds = _label_list(labels, n), _label_list(preds, n)
    two_lines = any(p is not None and lab is not None and p != lab for p, lab in zip(preds, labels))
    fig, axes = _grid(n, ncols, cell_size, extra_h=0.3 if title else 0.0, title_lines=2 if two_lines else 1)
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(imgs[i], cmap="gray" if imgs[i].ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        if preds[i] is not None:
            ok = labels[i] is None or preds[i] == labels[i]
            text = _name(preds[i], class_names)
            if labels[i] is not None and not ok:
                text += f"\n(true: {_name(labels[i], class_names)})"
            ax.set_title(text, fontsize=8, color=CORRECT_COLOR if ok else WRONG_COLOR)
        elif labels[i] is not None:
            ax.set_title(_name(labels[i], class_names), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _perturbation_grid(x, x_adv, n: int, row_labels: tuple[str, str], height: float, cmap: str,
                       title: str | None, label_size: int = 9):
    """Three rows per example column: x, x_adv and x_adv - x amplified to the full range of a diverging
    colormap (white = unchanged; the amplification is in the row label). Returns (fig, axes, n) for
    the caller's per-image titles on rows 0 and 1."""
    a, b = _as_images(x), _as_images(x_adv)
    if a.shape != b.shape:
        raise ValueError(f"x_adv: shape {b.shape} differs from x's {a.shape}")
    n = min(n, len(a))
    if n == 0:
        raise ValueError("x: no images to show")
    delta = (b - a)[:n]
    if delta.ndim == 4:  # colour: show the per-pixel mean over channels
        delta = delta.mean(-1)
    m = float(np.abs(delta).max()) or 1.0
    fig, axes = plt.subplots(3, n, figsize=(1.5 * n + 0.8, height), squeeze=False)
    im = None
    for i in range(n):
        for r, img in enumerate((a[i], b[i])):
            axes[r, i].imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        im = axes[2, i].imshow(delta[i], cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
        axes[2, i].set_title(f"|δ|∞={np.abs(delta[i]).max():.3f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    for r, text in enumerate(row_labels + (f"δ (±{m:.3f})",)):
        axes[r, 0].set_ylabel(text, fontsize=label_size)
    fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, pad=0.01)
    if title:
        fig.suptitle(title)
    return fig, axes, n


def show_perturbations(x, x_adv, labels=None, preds=None, preds_adv=None, class_names=None, n: int = 6,
                       title: str | None = None, cmap: str = "RdBu_r"):
    """Three rows per example column: the image, the perturbed image, and the perturbation
    x_adv - x amplified to the full colour range of a diverging colormap (white = unchanged).
    The amplification is printed in the row label. Titles give predictions (green when right).
    Returns the figure."""
    fig, axes, n = _perturbation_grid(x, x_adv, n, ("image", "perturbed"), 5.0, cmap, title)
    labels, preds, preds_adv = _label_list(labels, n), _label_list(preds, n), _label_list(preds_adv, n)
    for i in range(n):
        for r, p in enumerate((preds[i], preds_adv[i])):
            if p is not None:
                ok = labels[i] is None or p == labels[i]
                axes[r, i].set_title(_name(p, class_names), fontsize=8, color=CORRECT_COLOR if ok else WRONG_COLOR)
            elif r == 0 and labels[i] is not None:
                axes[r, i].set_title(_name(labels[i], class_names), fontsize=8)
    return fig


def _project_linf_2d(p, eps):
    return np.clip(p, -eps, eps)


def _project_l2_2d(p, eps):
    r = float(np.linalg.norm(p))
    return p if r <= eps else p * (eps / r)


def plot_norm_balls(eps_linf: float, eps_l2: float, ax=None, point=None, show_projection: bool = True):
    """The 2-D Linf ball (a square) and L2 ball (a disk) around the origin, an example point
    outside both, and its projections (closest points) onto each. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.6))
    r = max(eps_linf, eps_l2)
    p = np.asarray(point if point is not None else (1.45 * r, 0.75 * r), dtype=float)
    ax.add_patch(Rectangle((-eps_linf, -eps_linf), 2 * eps_linf, 2 * eps_linf, facecolor="#4c72b0", alpha=0.18,
                           edgecolor="#4c72b0", lw=2, label=f"L∞ ball, ε = {eps_linf:g}"))
    ax.add_patch(Circle((0, 0), eps_l2, facecolor="#dd8452", alpha=0.18, edgecolor="#dd8452", lw=2,
                        label=f"L2 ball, ε = {eps_l2:g}"))
    ax.plot([0], [0], "k+", ms=10)
    ax.annotate("x", (0, 0), textcoords="offset points", xytext=(5, -12))
    ax.plot(*p, "ko", ms=5)
    ax.annotate("x + δ", p, textcoords="offset points", xytext=(6, 4))
    if show_projection:
        for proj, color, name in ((_project_linf_2d(p, eps_linf), "#4c72b0", "L∞"),
                                  (_project_l2_2d(p, eps_l2), "#dd8452", "L2")):
            ax.add_patch(FancyArrowPatch(p, proj, arrowstyle="-|>", mutation_scale=12, color=color, lw=1.5,
                                         linestyle="--"))
            ax.plot(*proj, "o", color=color, ms=5, label=f"projection onto the {name} ball")
    lim = 1.25 * max(r, float(np.abs(p).max()))
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("δ₁")
    ax.set_ylabel("δ₂")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("threat models in 2-D")
    return ax


def plot_accuracy_vs_eps(results: dict, ax=None, title: str | None = None, xlabel: str = "ε",
                         chance: float | None = None, percent: bool = True):
    """One line per entry of `results`: {name: [(eps, accuracy in [0, 1]), ...]}. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.5))
    scale = 100.0 if percent else 1.0
    for name, pts in results.items():
        pts = sorted((float(e), float(a)) for e, a in pts)
        if not pts:
            continue
        e, a = zip(*pts)
        ax.plot(e, [scale * v for v in a], "o-", label=str(name), ms=4)
    if chance is not None:
        ax.axhline(scale * chance, color="0.5", ls=":", lw=1, label="chance")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)" if percent else "accuracy")
    ax.set_ylim(-0.03 * scale, 1.03 * scale)
    ax.grid(alpha=0.3)
    if results:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, out_dir, name: str, dpi: int = 110) -> Path:
    """Write `fig` as OUT_DIR/NAME.png (folders created as needed); returns the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (name if name.endswith(".png") else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return path


def _box(ax, xy, w, h, text, color, fontsize=9):
    """A rounded box at xy (lower left), w wide and h high, with centred text: the building block of
    the boxes-and-arrows diagrams."""
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                                edgecolor="0.25", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize)
