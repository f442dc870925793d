"""ipywidgets explorers for the lectures (imported only when used: `import advlab` never imports
ipywidgets or IPython).

    widgets.threat_model_explorer(x)     # lecture 00: sliders over the Linf and L2 budgets
"""
from __future__ import annotations

import torch


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("advlab.widgets needs ipywidgets: pip install ipywidgets") from e
    return ipywidgets


def threat_model_explorer(x: torch.Tensor, eps_linf: float = 0.1, eps_l2: float = 1.5, max_linf: float = 0.5,
                          max_l2: float = 8.0, seed: int = 0):
    """Sliders over an Linf and an L2 budget (and over the image, when x holds several) showing
    the image, random noise that spends the whole Linf budget and random noise that spends the
    whole L2 budget, each titled with the norms measured after clipping to [0, 1].

    Returns the widget (display it, or leave it as the last expression of a cell). `.update()`
    redraws with the current slider values, which is how tests drive it without a browser.
    """
    from advlab.data import check_images
    check_images(x, "x")
    if len(x) == 0:
        raise ValueError("x: needs at least one image")
    w = _ipywidgets()
    import matplotlib.pyplot as plt

    from advlab import viz

    s_linf = w.FloatSlider(value=eps_linf, min=0.0, max=max_linf, step=0.01, description="ε (L∞)",
                           continuous_update=False, readout_format=".2f")
    s_l2 = w.FloatSlider(value=eps_l2, min=0.0, max=max_l2, step=0.1, description="ε (L2)",
                         continuous_update=False, readout_format=".1f")
    s_idx = w.IntSlider(value=0, min=0, max=len(x) - 1, description="image", continuous_update=False)
    s_seed = w.IntSlider(value=seed, min=0, max=99, description="noise seed", continuous_update=False)
    out = w.Output()
    controls = [s_linf, s_l2] + ([s_idx] if len(x) > 1 else []) + [s_seed]
    box = w.VBox([w.HBox(controls[:2]), w.HBox(controls[2:]), out])

    def render(*_):
        i = s_idx.value
        xi = x[i:i + 1]
        panels = [("clean", xi),
                  (f"L∞ noise, ε = {s_linf.value:.2f}", viz.budget_noise(xi, s_linf.value, "linf", s_seed.value)),
                  (f"L2 noise, ε = {s_l2.value:.1f}", viz.budget_noise(xi, s_l2.value, "l2", s_seed.value))]
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.9))
        for ax, (name, img) in zip(axes, panels):
            d = (img - xi).flatten()
            ax.imshow(viz._as_images(img)[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(f"‖δ‖∞ = {d.abs().max():.3f}   ‖δ‖₂ = {d.norm():.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        box.last_figure = fig
        with out:
            out.clear_output(wait=True)
            if _in_kernel():
                from IPython.display import display
                display(fig)
        plt.close(fig)  # shown once, inside the Output widget; never again at the end of the cell

    for s in controls:
        s.observe(render, names="value")
    box.update = render
    render()
    return box


def _in_kernel() -> bool:
    import sys
    return "ipykernel" in sys.modules
