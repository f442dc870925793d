"""Lecture 07's pictures: CARSO's training and inference in one diagram, and how its aggregation
rule weighs K draws against the plain mean.

    viz.plot_carso_diagram()
    viz.plot_aggregation_rules()

CARSO (Ballarin, Ansuini & Bortolussi) conditions a VAE's decoder on the classifier's own internal
representation of the (possibly attacked) input; at inference only the condition compressor and the
decoder run, K times, and the classifier's logits on the K reconstructions are aggregated.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch

from advlab.viz.core import _box


def plot_carso_diagram(ax=None):
    """Boxes-and-arrows picture of CARSO: the frozen classifier's conv activations on the input, each
    compressed by its own small CNN into the condition c; the image encoder (training only) and the
    posterior q(z | x, c); the decoder p(x | z, c) whose loss is BCE against the *clean* image + beta KL;
    and the inference path: K prior draws z_j ~ N(0, I), decoded with c, classified, aggregated.
    Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 5))
    ax.set_xlim(0, 12.4)
    ax.set_ylim(0, 6.6)
    ax.axis("off")
    arrow = dict(arrowstyle="-|>", mutation_scale=13, color="0.2", lw=1.4)
    h = 0.85
    _box(ax, (0.1, 3.0), 1.5, h, "input x̃\n(clean or attacked)", "#eeeeee", fontsize=8)
    _box(ax, (2.1, 4.6), 2.2, h, "classifier (frozen)\nconv activations", "#fdd0a2", fontsize=8)
    _box(ax, (4.8, 4.6), 2.1, h, "one small CNN per layer\n→ concat → Linear: c", "#fdae6b", fontsize=8)
    _box(ax, (2.1, 1.6), 2.2, h, "image encoder\n(training only)", "#c6dbef", fontsize=8)
    _box(ax, (4.8, 1.6), 2.1, h, "q(z | x̃, c)\nμ, log σ²", "#c6dbef", fontsize=8)
    _box(ax, (7.5, 3.0), 1.9, h, "decoder\np(x | z, c)", "#74c476", fontsize=8)
    _box(ax, (10.0, 4.3), 2.2, h, "training loss: BCE to the\nclean x + β · KL", "#f7f7f7", fontsize=8)
    _box(ax, (10.0, 1.8), 2.2, h, "classifier on K draws\n→ aggregate → label", "#fcbba1", fontsize=8)
    for a, b in (((1.65, 3.6), (2.05, 4.9)), ((4.35, 5.02), (4.75, 5.02)), ((1.65, 3.2), (2.05, 2.0)),
                 ((4.35, 2.02), (4.75, 2.02)), ((6.95, 4.9), (7.45, 3.7)), ((6.95, 2.1), (7.45, 3.2)),
                 ((9.45, 3.6), (9.95, 4.6)), ((9.45, 3.2), (9.95, 2.2))):
        ax.add_patch(FancyArrowPatch(a, b, **arrow))
    ax.add_patch(FancyArrowPatch((5.85, 4.55), (5.85, 2.5), linestyle="--", **arrow))
    ax.text(5.95, 3.5, "c", fontsize=9, color="0.3")
    ax.text(8.45, 2.35, "inference: z_j ~ N(0, I),\nj = 1..K, no encoder", ha="center", fontsize=7.5, color="#a50f15")
    ax.text(6.2, 0.75, "at inference only the classifier's activations, the compressors, the decoder and the classifier "
                       "run: x̃ → c → K reconstructions → K logit vectors → one decision", ha="center", fontsize=8.5,
            color="#a50f15", fontweight="bold")
    ax.text(6.2, 0.2, "every piece is differentiable: an adaptive attacker differentiates through c, the decoder, the "
                      "classifier and the aggregation", ha="center", fontsize=8, color="0.3")
    ax.set_title("CARSO: a representation-conditional VAE on an adversarially trained classifier", fontsize=10)
    return ax


def plot_aggregation_rules(logits, ax=None, class_names=None, rules=("carso", "mean_probs", "mean_logits", "vote")):
    """Bars of each rule's probability per class for one image's K draws, logits (K, C) (numpy or
    torch). CARSO's rule p_c ∝ exp(Σ_j exp(l_jc)) is dominated by the single most confident draw;
    the mean softmax weighs every draw alike. Returns the axes."""
    import torch
    from advlab.purifiers.voting import aggregate
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64) if not torch.is_tensor(logits) else logits)
    if z.dim() != 2:
        raise ValueError(f"logits: expected (K, C) logits of one image, got shape {tuple(z.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3))
    k, c = z.shape
    width = 0.8 / len(rules)
    colors = ("#e6550d", "#3182bd", "#9ecae1", "#969696")
    for i, rule in enumerate(rules):
        scores = aggregate(z[:, None, :].float(), rule)[0]
        p = torch.softmax(scores.double(), 0) if rule != "vote" else torch.nn.functional.one_hot(
            z.argmax(1), c).sum(0).double() / k
        ax.bar(np.arange(c) + (i - (len(rules) - 1) / 2) * width, p.numpy(), width, color=colors[i % len(colors)],
               label={"carso": "CARSO: ∝ exp(Σ_j exp(l_jc))", "mean_probs": "mean softmax",
                      "mean_logits": "softmax of the mean logit", "vote": "vote share"}.get(rule, rule))
    ax.set_xticks(range(c), class_names if class_names is not None else range(c), rotation=30, fontsize=8)
    ax.set(ylabel="probability", ylim=(0, 1.05), title=f"one image, {k} draws: what each rule makes of them")
    ax.legend(fontsize=7)
    return ax
