"""The general matplotlib helpers every lecture uses: image grids, perturbation galleries,
norm balls in 2-D, accuracy-vs-ε curves, labelled accuracy bars, 2-D points coloured by class
and saving figures (the per-lecture pictures build on
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


def _accuracy_items(values, labels):
    if isinstance(values, dict):
        if labels is not None:
            raise ValueError("labels: give either a dict {label: accuracy} or values and labels, not both")
        items = [(str(k), v) for k, v in values.items()]
    else:
        vals = list(values)
        labels = [str(i) for i in range(len(vals))] if labels is None else [str(k) for k in labels]
        if len(labels) != len(vals):
            raise ValueError(f"labels: expected {len(vals)} labels (one per value), got {len(labels)}")
        items = list(zip(labels, vals))
    if not items:
        raise ValueError("values: expected at least one accuracy")
    out = []
    for k, v in items:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"values[{k!r}]: expected a number in [0, 1], got {v!r}") from None
        if v == v and not -1e-9 <= v <= 1 + 1e-9:
            raise ValueError(f"values[{k!r}]: expected an accuracy in [0, 1] (a fraction, not a percentage), got {v!r}")
        out.append((k, v))
    return out


def plot_accuracy_bars(values, labels=None, ax=None, horizontal: bool = False, reference: float | None = None,
                       reference_label: str = "clean", colors=None, color: str = "#4c72b0",
                       title: str | None = None, value_label: str = "accuracy (%)", decimals: int = 1,
                       label_rotation: float = 0.0, fontsize: float = 8):
    """A bar per accuracy, every bar labelled with its value, so 0% is as readable as 90%.

    values: {label: accuracy in [0, 1]}, or a sequence with `labels`; NaN draws no bar and reads "n/a".
    horizontal: bars along x, the first label at the top (good for long attack names).
    reference: an accuracy drawn as a dotted line (e.g. the clean accuracy), named in a legend.
    colors: one colour per bar (default: `color` for all).
    A bar too short to see (0%, or below half a percent of the axis) gets an outlined marker at its
    value, on top of the axis, besides its label. Returns the axes.
    """
    items = _accuracy_items(values, labels)
    if colors is not None:
        colors = list(colors)
        if len(colors) != len(items):
            raise ValueError(f"colors: expected {len(items)} colours (one per bar), got {len(colors)}")
    else:
        colors = [color] * len(items)
    if ax is None:
        n = len(items)
        _, ax = plt.subplots(figsize=(6.0, 0.45 * n + 1.2) if horizontal else (max(4.0, 0.75 * n + 1.5), 3.4))
    pos = np.arange(len(items))
    vals = np.array([100.0 * v for _, v in items])
    drawn = np.nan_to_num(vals, nan=0.0)
    bar = ax.barh if horizontal else ax.bar
    bars = bar(pos, drawn, 0.7, color=colors, edgecolor="0.25", linewidth=0.8, zorder=2)
    top = 100.0
    for i, (v, b, c) in enumerate(zip(vals, bars, colors)):
        text = "n/a" if v != v else f"{v:.{decimals}f}%"
        if v != v:
            b.set_visible(False)
        tiny = v != v or v < 0.005 * top
        if tiny and v == v:
            xy = (v, i) if horizontal else (i, v)
            ax.plot(*xy, marker="D", ms=6.5, mfc="white", mec=c, mew=1.8, clip_on=False, zorder=4,
                    linestyle="none")
        off = 7.0 if tiny else 3.0  # points: clear of the marker
        if horizontal:
            ax.annotate(text, (drawn[i], i), xytext=(off, 0), textcoords="offset points", va="center", ha="left",
                        fontsize=fontsize, zorder=5)
        else:
            ax.annotate(text, (i, drawn[i]), xytext=(0, off), textcoords="offset points", va="bottom",
                        ha="center", fontsize=fontsize, zorder=5)
    names = [k for k, _ in items]
    # the category labels clear the markers drawn on the axis for 0% bars
    ax.tick_params(axis="y" if horizontal else "x", pad=7.0)
    if horizontal:
        ax.set_yticks(pos, names, fontsize=fontsize + 0.5)
        ax.set_xlim(0, 1.13 * top)
        ax.set_xticks(np.arange(0, 101, 20))
        ax.set_ylim(len(items) - 0.5, -0.5)  # the first label at the top
        ax.set_xlabel(value_label)
        ax.grid(alpha=0.3, axis="x", zorder=0)
    else:
        ax.set_xticks(pos, names, fontsize=fontsize + 0.5, rotation=label_rotation,
                      ha="right" if label_rotation else "center")
        ax.set_ylim(0, 1.1 * top)
        ax.set_yticks(np.arange(0, 101, 20))
        ax.set_ylabel(value_label)
        ax.grid(alpha=0.3, axis="y", zorder=0)
    if reference is not None:
        ref = 100.0 * float(reference)
        line = (ax.axvline if horizontal else ax.axhline)(ref, color="0.35", ls=":", lw=1.2, zorder=3,
                                                           label=f"{reference_label}: {ref:.{decimals}f}%")
        ax.legend(handles=[line], fontsize=fontsize - 0.5, loc="best", framealpha=0.9)
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def scatter_by_class(points, labels, class_names=None, ax=None, s: float = 6, alpha: float = 0.8,
                     cmap: str | None = None, legend: str | None = "outside", title: str | None = None):
    """2-D points (N, 2) coloured by their integer class labels (N,), with a legend that names every
    class present (`class_names[c]`, or the number). Points are drawn in their given order (no class
    hides another wholesale). legend: "outside" (right of the axes), a matplotlib loc such as
    "best", or None. Returns the axes."""
    p = _to_numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points: expected shape (N, 2), got {tuple(p.shape)}")
    lab = _to_numpy(labels).reshape(-1)
    if len(lab) != len(p):
        raise ValueError(f"labels: expected {len(p)} labels (one per point), got {len(lab)}")
    if len(lab) and (lab != np.round(lab)).any():
        raise ValueError("labels: expected integer class labels")
    lab = lab.astype(int)
    classes = sorted(set(lab.tolist()))
    k = max(classes) + 1 if classes else 1
    if class_names is not None and k > len(class_names):
        raise ValueError(f"class_names: label {k - 1} has no name ({len(class_names)} names)")
    cm = plt.get_cmap(cmap or ("tab10" if k <= 10 else "tab20" if k <= 20 else "viridis"))
    n_colors = getattr(cm, "N", 256)
    color_of = (lambda c: cm(c % n_colors)) if n_colors <= 20 else (lambda c: cm(c / max(k - 1, 1)))
    if ax is None:
        _, ax = plt.subplots(figsize=(5.6, 4.2))
    ax.scatter(p[:, 0], p[:, 1], c=[color_of(c) for c in lab], s=s, alpha=alpha, linewidths=0)
    if legend is not None and classes:
        from matplotlib.lines import Line2D
        handles = [Line2D([], [], marker="o", ls="none", color=color_of(c), ms=6, label=_name(c, class_names))
                   for c in classes]
        kw = dict(loc="center left", bbox_to_anchor=(1.01, 0.5)) if legend == "outside" else dict(loc=legend)
        ax.legend(handles=handles, fontsize=7, title="class", title_fontsize=7.5, frameon=legend != "outside", **kw)
    if title:
        ax.set_title(title, fontsize=9)
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
