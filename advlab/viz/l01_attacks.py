"""Lecture 01's pictures: why FGSM and PGD work and what they do, step by step.

    land = viz.loss_landscape(model, x[0], y[0]); viz.plot_loss_landscape(land, eps=0.1)
    viz.plot_pgd_toy("linf", eps=1.0)      # PGD's ascent steps and projections on a 2-D toy loss
    viz.plot_loss_traces([viz.attack_loss_trace(model, x, y, attacks.PGD(eps=0.1))[:, 0]])
    viz.show_targeted(x, x_adv, y, targets, preds_adv)

The loss landscape is a 2-D slice of input space through one image (the gradient-sign direction
and a random one): it shows how nearly linear the loss is within an ε-ball, which is the reason a
single gradient step (FGSM) already goes a long way. The toy shows projected gradient ascent
where it can be drawn exactly; the traces show the same ascent on a real network.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle

from advlab.viz.core import (CORRECT_COLOR, WRONG_COLOR, _label_list, _name, _perturbation_grid,
                             _to_numpy)


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
