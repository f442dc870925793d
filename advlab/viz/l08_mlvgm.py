"""Lecture 08's pictures: MLVGM purification as a diagram of its latent levels, the schedules, the
Bayesian-optimisation search, random schedules against their rank correlation with the linear one, and
attack success rate against the L2 bound.

    viz.plot_mlvgm_diagram()
    viz.plot_schedules({"linear": a_lin, "cosine": a_cos})
    viz.plot_bo_history(record["history"])
    viz.plot_spearman_study(rows)
    viz.plot_l2_curves(record["curves"]["by_model"])

MLVGM purification (Serez, Cristani, Del Bue, Murino & Morerio) encodes the input into one latent per level
of a hierarchical generative model, replaces a fraction a_i of each level's code by a prior draw, and
decodes: coarse levels keep the class, fine levels (where an attack's detail lives) are resampled.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch

from advlab.viz.core import _box

LEVEL_COLORS = ("#6baed6", "#9ecae1", "#c6dbef")


def plot_mlvgm_diagram(ax=None, sizes=((8, 4), (4, 7), (2, 14))):
    """Boxes-and-arrows picture of the purification: the bottom-up encoder's features per level, the
    top-down path from the coarsest level, and at each level the mix z_i = (1 - a_i) z_e_i + a_i z_s_i of
    the posterior mean z_e_i (what x says) and a prior draw z_s_i (what the model invents), then the
    decoder's mean. sizes: (channels, side) per level, coarsest first. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 5))
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, 6.4)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=13, color="0.2", lw=1.3)
    h = 0.8
    _box(ax, (0.1, 0.6), 1.5, h, "input x\n(maybe attacked)", "#eeeeee", fontsize=8)
    ys = (4.9, 3.3, 1.7)
    for i, ((c, s), y) in enumerate(zip(sizes, ys)):
        _box(ax, (2.2, y), 2.0, h, f"encoder features\nh_{i + 1} ({s}×{s})", "#fdd0a2", fontsize=8)
        _box(ax, (5.0, y), 3.1, h, f"level {i + 1}: z ({c}×{s}×{s})\n(1 − a_{i + 1}) z_e + a_{i + 1} z_s",
             LEVEL_COLORS[i], fontsize=8)
        _box(ax, (8.9, y + 0.05), 1.6, h - 0.1, f"prior draw z_s\np(z_{i + 1} | z_<{i + 1}), T", "#e5f5e0", fontsize=7.5)
        ax.add_patch(FancyArrowPatch((4.25, y + h / 2), (4.95, y + h / 2), **arrow))
        ax.add_patch(FancyArrowPatch((8.85, y + h / 2), (8.15, y + h / 2), **arrow))
        ax.text(4.6, y + h / 2 + 0.12, "z_e", fontsize=7.5, ha="center", color="0.3")
        if i:
            ax.add_patch(FancyArrowPatch((6.55, ys[i - 1] - 0.05), (6.55, y + h + 0.05), **arrow))
            ax.add_patch(FancyArrowPatch((3.2, y + h + 0.05), (3.2, ys[i - 1] - 0.05), **arrow))
    ax.add_patch(FancyArrowPatch((1.6, 1.0), (3.2, 1.65), **arrow))
    _box(ax, (5.0, 0.2), 3.1, 0.8, "decoder mean → x′ → classifier", "#74c476", fontsize=8.5)
    ax.add_patch(FancyArrowPatch((6.55, ys[-1] - 0.05), (6.55, 1.05), **arrow))
    ax.text(10.9, 5.3, "coarse: keep\n(a small)", fontsize=8.5, color="#08519c", fontweight="bold")
    ax.text(10.9, 2.0, "fine: resample\n(a near 1)", fontsize=8.5, color="#2171b5", fontweight="bold")
    ax.text(2.3, 6.0, "bottom-up (deterministic)", fontsize=8, color="0.35")
    ax.text(5.2, 6.0, "top-down, along the already-mixed path", fontsize=8, color="0.35")
    ax.set_title("MLVGM purification: one latent per level, each mixed between the input's code and a prior draw",
                 fontsize=10)
    return ax


def plot_schedules(schedules: dict, ax=None):
    """a_i against the level (1 = coarsest) for each named schedule {name: sequence}. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    for name, a in schedules.items():
        a = np.asarray([float(t) for t in a])
        ax.plot(np.arange(1, len(a) + 1), a, marker="o", label=name)
    n = max(len(a) for a in schedules.values())
    ax.set_xticks(range(1, n + 1))
    ax.set(xlabel="level (1 = coarsest)", ylabel="a_i (weight of the prior draw)", ylim=(-0.03, 1.03),
           title="interpolation schedules")
    ax.legend(fontsize=8)
    return ax


def plot_bo_history(history: list, axes=None):
    """Two panels from a schedule search's history (dicts with step, kind, alphas, objective): the objective
    per evaluation (starting points and BO steps marked) with the best so far, and each a_i per evaluation.
    Returns the axes."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    steps = np.array([h["step"] for h in history])
    obj = np.array([h["objective"] for h in history])
    start = np.array([h["kind"] == "start" for h in history])
    ax = axes[0]
    ax.scatter(steps[start], 100 * obj[start], color="#969696", label="starting points", zorder=3)
    ax.scatter(steps[~start], 100 * obj[~start], color="#3182bd", s=16, label="BO steps", zorder=3)
    ax.plot(steps, 100 * np.maximum.accumulate(obj), color="#e6550d", label="best so far")
    ax.set(xlabel="evaluation", ylabel="objective: accuracy (%)", title="the search")
    ax.legend(fontsize=8)
    a = np.array([h["alphas"] for h in history])
    for i in range(a.shape[1]):
        axes[1].plot(steps, a[:, i], marker=".", color=("#08519c", "#3182bd", "#9ecae1")[i] if i < 3 else None,
                     label=f"a_{i + 1}")
    best = int(np.argmax(obj))
    axes[1].axvline(steps[best], color="#e6550d", ls=":", lw=1)
    axes[1].set(xlabel="evaluation", ylabel="a_i", ylim=(-0.03, 1.03), title="the alphas it tried (dotted: the best)")
    axes[1].legend(fontsize=8)
    return axes


def plot_spearman_study(rows: list, ax=None, marks: dict | None = None):
    """Accuracy of random alpha vectors (dicts with spearman, acc) against their Spearman correlation with the
    linear schedule, jittered horizontally (few levels: few distinct correlations), with the median per
    correlation; marks {name: accuracy} draws horizontal reference lines. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    rho = np.array([r["spearman"] for r in rows])
    acc = 100 * np.array([r["acc"] for r in rows])
    jitter = np.random.default_rng(0).uniform(-0.06, 0.06, len(rho))
    ax.scatter(rho + jitter, acc, s=14, color="#3182bd", alpha=0.7, label="random alpha vectors")
    for u in np.unique(rho):
        m = np.median(acc[rho == u])
        ax.plot([u - 0.12, u + 0.12], [m, m], color="#08306b", lw=2)
    for i, (name, v) in enumerate((marks or {}).items()):
        ax.axhline(100 * v, ls="--", lw=1, color=("#e6550d", "#31a354", "#756bb1", "0.4")[i % 4], label=name)
    ax.set(xlabel="Spearman correlation with the linear schedule", ylabel="accuracy (%)",
           title="random schedules (bars: median per correlation)")
    ax.legend(fontsize=7.5)
    return ax


def plot_l2_curves(by_model: dict, ax=None):
    """Attack success rate (%) against the L2 bound for each model {name: {bounds, success}}. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    for name, r in by_model.items():
        alone = "alone" in name
        ax.plot(r["bounds"], 100 * np.asarray(r["success"]), marker="o", ls="--" if alone else "-",
                color="0.4" if alone else None, label=name)
    ax.set(xlabel="L2 bound", ylabel="attack success rate (%)", ylim=(-2, 102),
           title="success rate against the L2 bound")
    ax.legend(fontsize=8)
    return ax
