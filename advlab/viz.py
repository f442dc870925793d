"""Matplotlib pictures used across the lectures.

    fig = viz.show_images(x[:16], labels=y[:16], class_names=data.class_names("fashion_mnist"))
    fig = viz.show_perturbations(x[:6], x_adv[:6])
    viz.save_figure(fig, OUT_DIR, "gallery")

Every helper returns its figure (or the axes it drew on, when it takes an `ax=`) and never calls
`plt.show()`: in Jupyter the inline backend shows the figure at the end of the cell; elsewhere
(scripts, papermill without a kernel, CI) the non-interactive Agg backend is selected on import,
unless a backend was already chosen (MPLBACKEND or an earlier `import matplotlib.pyplot`).
This module never imports IPython or ipywidgets.
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


# ---------------------------------------------------------------------------------------------
# lecture 00: what a budget looks like, and who the attacker is


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
    each L2 budget (columns), titled with the norms actually measured after clipping to [0, 1]."""
    x = x[:6]
    cols = [("clean", None, None)] + [("L∞", "linf", e) for e in eps_linf] + [("L2", "l2", e) for e in eps_l2]
    fig, axes = plt.subplots(len(x), len(cols), figsize=(1.45 * len(cols), 1.55 * len(x) + 0.4), squeeze=False)
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
                ax.set_title("clean" if norm is None else f"{name} ε={eps:g}", fontsize=8)
            if norm is not None:
                ax.set_xlabel(f"∞:{d[i].abs().max():.2f} 2:{d[i].norm():.2f}", fontsize=6.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _box(ax, xy, w, h, text, color, fontsize=9):
    ax.add_patch(FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.02,rounding_size=0.08", facecolor=color,
                                edgecolor="0.25", lw=1.2))
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=fontsize)


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


# ---------------------------------------------------------------------------------------------
# lecture 01: the loss around an image, PGD in 2-D, loss traces of an attack, targeted galleries


def _one_image(x: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or x.dim() not in (3, 4) or (x.dim() == 4 and len(x) != 1):
        raise ValueError(f"x: expected one image of shape (C, H, W) or (1, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    x = x if x.dim() == 4 else x[None]
    y = torch.as_tensor(y, device=x.device).reshape(-1)[:1].long()
    return x.detach(), y


def loss_landscape(model, x: torch.Tensor, y, extent: float = 0.25, n: int = 25, seed: int = 0,
                   loss: str = "margin", batch_size: int = 256) -> dict:
    """A loss of `model` on a 2-D slice of input space through one image x:

        x(a, b) = clip(x + a * u + b * v, 0, 1),   a, b in [-extent, extent] (n points each),

    u = sign of the input gradient of the loss at x (the FGSM direction) and v = a random sign
    vector (from `seed`): both are corners of the L∞ ball, so (a, b) = (ε, 0) is FGSM's point.
    loss: "margin" (max_{j≠y} z_j - z_y on the logits z: > 0 exactly when x(a, b) is
    misclassified) or "ce" (cross-entropy).

    Returns a dict of numpy arrays: a, b (n,); loss, margin (n, n) indexed [b, a]; loss0 = the
    loss at x; along_u and along_v = the loss on the two axes; linear_u = the first-order
    prediction loss0 + ∇L(x)·(x(a, 0) - x) along u (exact displacement, clipping included).
    """
    from advlab.attacks.base import ce_loss, eval_mode, margin_loss
    if loss not in ("margin", "ce"):
        raise ValueError(f"loss: must be 'margin' or 'ce', got {loss!r}")
    loss_fn = margin_loss if loss == "margin" else ce_loss
    x, y = _one_image(x, y)
    with eval_mode(model), torch.enable_grad():
        xr = x.clone().requires_grad_(True)
        loss0 = loss_fn(model(xr), y).sum()
        grad, = torch.autograd.grad(loss0, xr)
    g = torch.Generator().manual_seed(seed)
    u = grad.sign()
    v = torch.randint(0, 2, x.shape, generator=g).to(x.device, x.dtype) * 2 - 1
    steps = torch.linspace(-extent, extent, n, device=x.device, dtype=x.dtype)
    bb, aa = torch.meshgrid(steps, steps, indexing="ij")              # [b, a]
    pts = (x + aa.reshape(-1, 1, 1, 1) * u + bb.reshape(-1, 1, 1, 1) * v).clamp(0, 1)
    values, margin = [], []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, len(pts), batch_size):
            logits = model(pts[i:i + batch_size])
            yy = y.expand(len(logits))
            values.append(loss_fn(logits, yy))
            margin.append(margin_loss(logits, yy))
    values = torch.cat(values).reshape(n, n)
    margin = torch.cat(margin).reshape(n, n)
    disp = (x + steps.reshape(-1, 1, 1, 1) * u).clamp(0, 1) - x
    linear = loss0.detach() + (disp.flatten(1) * grad.flatten(1)).sum(1)
    mid = n // 2
    return {"a": _to_numpy(steps), "b": _to_numpy(steps), "loss": _to_numpy(values), "margin": _to_numpy(margin),
            "loss_name": loss, "loss0": float(loss0.detach()), "along_u": _to_numpy(values[mid]),
            "along_v": _to_numpy(values[:, mid]), "linear_u": _to_numpy(linear)}


def plot_loss_landscape(land: dict, eps: float | None = None, title: str | None = None):
    """Three views of `loss_landscape(...)`: the loss surface, its contour map (with the decision
    boundary, the L∞ ball of radius eps and FGSM's point) and the two axis slices against the
    first-order (linear) prediction. Returns the figure."""
    a, b, loss = land["a"], land["b"], land["loss"]
    A, B = np.meshgrid(a, b)
    fig = plt.figure(figsize=(13.0, 3.9))
    ax1 = fig.add_subplot(1, 3, 1, projection="3d")
    ax1.plot_surface(A, B, loss, cmap="viridis", linewidth=0, antialiased=True, alpha=0.95)
    ax1.set_xlabel("a (gradient sign)", fontsize=8)
    ax1.set_ylabel("b (random sign)", fontsize=8)
    lname = {"margin": "margin loss", "ce": "cross-entropy"}.get(land.get("loss_name"), "loss")
    ax1.set_zlabel(lname, fontsize=8)
    ax1.tick_params(labelsize=7)
    ax1.view_init(elev=28, azim=-125)
    ax1.set_title(f"{lname} on the slice", fontsize=9)
    ax2 = fig.add_subplot(1, 3, 2)
    cs = ax2.contourf(A, B, loss, levels=20, cmap="viridis")
    fig.colorbar(cs, ax=ax2, shrink=0.9)
    if (land["margin"] > 0).any() and (land["margin"] < 0).any():
        ax2.contour(A, B, land["margin"], levels=[0.0], colors=WRONG_COLOR, linewidths=1.8, linestyles="--")
        ax2.plot([], [], "--", color=WRONG_COLOR, label="decision boundary")
    if eps is not None:
        ax2.add_patch(Rectangle((-eps, -eps), 2 * eps, 2 * eps, fill=False, edgecolor="white", lw=1.5,
                                label=f"L∞ ball, ε = {eps:g}"))
        ax2.plot([eps], [0], "*", color="white", mec="k", ms=13, label="FGSM: (ε, 0)")
    ax2.plot([0], [0], "o", color="white", mec="k", ms=6, label="x")
    ax2.set_xlabel("a: along sign(∇ₓL)")
    ax2.set_ylabel("b: along a random sign vector")
    ax2.set_aspect("equal")
    ax2.legend(fontsize=7, loc="lower left", framealpha=0.8)
    ax2.set_title("contours (red: where the prediction changes)", fontsize=9)
    ax3 = fig.add_subplot(1, 3, 3)
    ax3.plot(a, land["along_u"], "-", color="#4c72b0", lw=2, label="along sign(∇ₓL) (b = 0)")
    ax3.plot(a, land["linear_u"], ":", color="k", lw=1.8, label="linear prediction L(x) + ∇ₓL·δ")
    ax3.plot(b, land["along_v"], "-", color="#dd8452", lw=2, label="along the random direction (a = 0)")
    if land.get("loss_name") == "margin":
        ax3.axhline(0, color=WRONG_COLOR, lw=1, ls="--")
    if eps is not None:
        for s in (-eps, eps):
            ax3.axvline(s, color="0.5", ls="--", lw=1)
    lo = min(land["along_u"].min(), land["along_v"].min())
    hi = max(land["along_u"].max(), land["along_v"].max())
    ax3.set_ylim(lo - 0.05 * (hi - lo + 1e-6), hi + 0.15 * (hi - lo + 1e-6))
    ax3.set_xlabel("step size a (or b)")
    ax3.set_ylabel(lname)
    ax3.grid(alpha=0.3)
    ax3.legend(fontsize=7, loc="upper left")
    ax3.set_title("the two axes of the slice", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


_TOY_C = np.array([1.8, 0.6])
_TOY_A = np.array([[1.0, 0.3], [0.3, 2.0]])


def toy_loss_2d(d: np.ndarray) -> np.ndarray:
    """A concave 2-D stand-in for the loss: -(d - c)ᵀA(d - c), largest at c = (1.8, 0.6), outside
    the unit balls. d: (..., 2) -> (...)."""
    e = np.asarray(d, dtype=float) - _TOY_C
    return -np.einsum("...i,ij,...j->...", e, _TOY_A, e)


def _toy_grad(d: np.ndarray) -> np.ndarray:
    return -2.0 * _TOY_A @ (np.asarray(d, dtype=float) - _TOY_C)


def pgd_toy_2d(norm: str = "linf", eps: float = 1.0, alpha: float = 0.3, steps: int = 10, start=(0.0, 0.0)):
    """PGD on `toy_loss_2d` in the plane, with advlab's own projections (attacks.base.project_linf /
    project_l2). Returns a list of (iterate, after the ascent step, after the projection) triples
    of 2-vectors, one per step, starting from `start`."""
    from advlab.attacks.base import project_l2, project_linf
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm: must be 'linf' or 'l2', got {norm!r}")
    d = np.asarray(start, dtype=float)
    path = []
    for _ in range(steps):
        g = _toy_grad(d)
        step = np.sign(g) if norm == "linf" else g / (np.linalg.norm(g) + 1e-12)
        moved = d + alpha * step
        t = torch.tensor(moved[None], dtype=torch.float64)
        proj = (project_linf(t, eps) if norm == "linf" else project_l2(t, eps))[0].numpy()
        path.append((d, moved, proj))
        d = proj
    return path


def plot_pgd_toy(norm: str = "linf", eps: float = 1.0, alpha: float = 0.3, steps: int = 10, starts=((0.0, 0.0),),
                 ax=None, fgsm: bool = True):
    """The picture of PGD: contours of `toy_loss_2d`, the ε ball (a square for L∞, a disk for L2)
    and the iterates from each start; solid arrows = ascent steps, dashed = projections back into
    the ball (black). With fgsm=True the one-step FGSM point from the origin is marked too. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 4.8))
    lim = 1.9 * eps
    g = np.linspace(-lim, lim, 121)
    G1, G2 = np.meshgrid(g, g)
    Z = toy_loss_2d(np.stack([G1, G2], -1))
    ax.contourf(G1, G2, Z, levels=14, cmap="YlOrRd", alpha=0.35)  # redder = higher loss
    ax.contour(G1, G2, Z, levels=14, colors="0.45", linewidths=0.5)
    if norm == "linf":
        ax.add_patch(Rectangle((-eps, -eps), 2 * eps, 2 * eps, facecolor="#4c72b0", alpha=0.15, edgecolor="#4c72b0",
                               lw=2))
    else:
        ax.add_patch(Circle((0, 0), eps, facecolor="#dd8452", alpha=0.15, edgecolor="#dd8452", lw=2))
    colors = ["#1a7f37", "#8250df", "#bf8700", "#cf222e"]
    for k, start in enumerate(starts):
        c = colors[k % len(colors)]
        path = pgd_toy_2d(norm, eps, alpha, steps, start)
        for d, moved, proj in path:
            ax.add_patch(FancyArrowPatch(d, moved, arrowstyle="-|>", mutation_scale=9, color=c, lw=1.2))
            if not np.allclose(moved, proj):
                ax.add_patch(FancyArrowPatch(moved, proj, arrowstyle="-|>", mutation_scale=8, color="k", lw=0.9,
                                             linestyle=(0, (2, 2))))
        ax.plot(*np.asarray(start), "o", color=c, ms=6,
                label="start at x (BIM)" if np.allclose(start, 0) else f"random start {k}")
        ax.plot(*path[-1][2], "s", color=c, ms=6, mec="k")
    if fgsm:
        g0 = _toy_grad(np.zeros(2))
        p = eps * (np.sign(g0) if norm == "linf" else g0 / np.linalg.norm(g0))
        ax.plot(*p, "*", color="k", ms=13, label="FGSM (one step of size ε)")
    ax.plot(*_TOY_C, "x", color=WRONG_COLOR, ms=9, mew=2, label="loss maximum (outside the ball)")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("δ₁")
    ax.set_ylabel("δ₂")
    ax.legend(fontsize=7, loc="lower left")
    name = "L∞" if norm == "linf" else "L2"
    ax.set_title(f"PGD-{name}, ε = {eps:g}, α = {alpha:g}, {steps} steps\n(arrows: ascent steps; dashed: "
                 f"projections; squares: last iterates)", fontsize=8.5)
    return ax


def attack_loss_trace(model, x: torch.Tensor, y: torch.Tensor, attack, loss_fn=None, return_adv: bool = False):
    """The per-example loss at every iterate of an iterative attack, observed from outside: the
    model is wrapped so that each gradient evaluation on the whole batch records the loss, and
    the loss of the returned x_adv is appended. Returns a (T + 1, N) tensor (T = the number of
    gradient evaluations; for PGD/BIM with eot_iter=1, T = steps and row 0 is the starting point),
    or (trace, x_adv) with return_adv=True. loss_fn(logits, y) -> (N,), default cross-entropy.

    The attack is copied with its runtime checks off and one chunk for the whole batch, so that
    only the attack's own steps are recorded; `attack` itself is not changed."""
    import copy

    import torch.nn as nn

    from advlab.attacks.base import ce_loss, eval_mode
    loss_fn = loss_fn or ce_loss
    y = y.to(x.device)
    records: list[torch.Tensor] = []

    class _Recorder(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, xin):
            out = self.inner(xin)
            if torch.is_grad_enabled() and len(xin) == len(x):
                records.append(loss_fn(out.detach().float(), y))
            return out

    atk = copy.copy(attack)
    atk.checks = False
    atk.chunk_size = max(len(x), 1)
    x_adv = atk(_Recorder(model), x, y)
    with torch.no_grad(), eval_mode(model):
        records.append(loss_fn(model(x_adv).float(), y))
    trace = torch.stack(records)
    return (trace, x_adv) if return_adv else trace


def plot_loss_traces(traces, labels=None, ax=None, title: str | None = None, ylabel: str = "cross-entropy loss"):
    """One line per trace (a (T + 1,) sequence of losses over the iterations). Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    labels = labels or [None] * len(traces)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (t, lab) in enumerate(zip(traces, labels)):
        t = _to_numpy(t)
        style = dict(color="k", lw=2.0, ls="--") if lab and "BIM" in lab else dict(color=colors[k % len(colors)], lw=1.3)
        ax.plot(np.arange(len(t)), t, label=lab, **style)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if any(labels):
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def show_targeted(x, x_adv, labels, targets, preds_adv, class_names=None, n: int = 8, title: str | None = None,
                  cmap: str = "RdBu_r"):
    """A targeted-attack gallery, one column per example: the clean image (its true class), the
    adversarial image (the class the model now predicts: green when it is the target) and the
    perturbation, amplified as in `show_perturbations`. Returns the figure."""
    fig, axes, n = _perturbation_grid(x, x_adv, n, ("image (true class)", "adversarial\n(prediction)"), 5.3, cmap,
                                      title, label_size=8)
    labels, targets, preds_adv = _label_list(labels, n), _label_list(targets, n), _label_list(preds_adv, n)
    for i in range(n):
        axes[0, i].set_title(_name(labels[i], class_names), fontsize=8)
        hit = preds_adv[i] == targets[i]
        axes[1, i].set_title(f"→ {_name(preds_adv[i], class_names)}" + ("" if hit else
                             f"\n(target: {_name(targets[i], class_names)})"),
                             fontsize=8, color=CORRECT_COLOR if hit else WRONG_COLOR)
    return fig


# ---------------------------------------------------------------------------------------------
# lecture 04: a GAN in one picture, Defense-GAN's latent search step by step


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


# ---------------------------------------------------------------------------------------------
# lecture 05: the VAE-GAN in one picture, discriminator-guided purification step by step


def plot_vaegan_diagram(ax=None):
    """Boxes-and-arrows picture of a VAE-GAN (Larsen et al. 2016): encoder -> q(z|x) -> decoder, the
    discriminator scoring real, reconstructed and sampled images, and its features Dis_l giving the
    reconstruction loss; under it, paper 002's purifier. Returns the axes."""
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
    ax.text(5.0, 1.2, "paper 002's purifier: x → z = μ(x) → a few steps up Dis's \"real\" score → "
                      "Dec(z) → classifier", ha="center", va="top", fontsize=8.5, color="#08519c",
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


# lecture 06: LQ-VAE's Algorithm 1 in one picture, the bit-flip histogram


def plot_lqvae_diagram(ax=None):
    """Boxes-and-arrows picture of LQ-VAE (paper 004, Algorithm 1): the encoder f with its Lipschitz
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
    and, in the legend, the share of images below it (paper 004: ~90% of CW adversaries on MNIST flip
    fewer than 6% of the bits). Returns the axes."""
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
    ax.set_xlabel(f"bits flipped (of {latent_dim})" + (f"; last bar: ≥ {top}" if max_bits is not None else ""))
    ax.set_ylabel("images (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
