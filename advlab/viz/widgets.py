"""ipywidgets explorers for the lectures: sliders and dropdowns over the pictures of advlab.viz,
so a budget or an attack can be varied without rerunning a cell. Reachable as advlab.viz.widgets
and, as before, advlab.widgets (the same module). ipywidgets and IPython are imported only when an
explorer is built: importing this module, advlab or advlab.viz never imports them.

    widgets.threat_model_explorer(x)     # lecture 00: sliders over the Linf and L2 budgets
    widgets.eps_explorer(model, x, y, {"FGSM": lambda e: attacks.FGSM(eps=e)}, [0.0, 0.05, 0.1])
                                         # lecture 01: an eps slider and an attack dropdown
    widgets.figure_explorer(draw, t=ipywidgets.FloatSlider(...))
                                         # any draw(**values) -> Figure under its controls

Static copies. A widget lives in the kernel: a notebook executed by papermill or nbval, or shown
on a website, keeps no live widget, and used to show only "VBox(children=...)". Every explorer
therefore also draws a static matplotlib figure of its default state (`.static_figure`, saved as
OUT_DIR/NAME.png when given `out_dir`) and carries it in its display data: a live Jupyter frontend
shows the interactive widget, a static renderer (nbconvert, a website) the picture, and the plain
text says what it is.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import torch


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("advlab.viz.widgets needs ipywidgets: pip install ipywidgets") from e
    return ipywidgets


_EXPLORER_CLASS = None


def _explorer_class():
    """A VBox whose display data adds, to the live widget view, a PNG of the explorer's default state
    and a plain-text description: frontends with a widget manager show the widget, static renderers
    (nbconvert without widget state, websites) show the picture instead of "VBox(children=...)"."""
    global _EXPLORER_CLASS
    if _EXPLORER_CLASS is None:
        w = _ipywidgets()

        class Explorer(w.VBox):
            def _repr_mimebundle_(self, **kwargs):
                data = super()._repr_mimebundle_(**kwargs) or {}
                data = dict(data[0] if isinstance(data, tuple) else data)
                png = getattr(self, "static_png", None)
                data["text/plain"] = getattr(self, "static_text", None) or data.get("text/plain", "")
                if png:
                    data["image/png"] = base64.b64encode(png).decode("ascii")
                return data

        Explorer.__name__ = Explorer.__qualname__ = "Explorer"
        _EXPLORER_CLASS = Explorer
    return _EXPLORER_CLASS


def _png_bytes(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _freeze_default(box, fig, name: str, state: str, out_dir, dpi: int = 90):
    """Keep `fig` (the first render) as the explorer's static picture: .static_figure, .static_png,
    .static_text, and OUT_DIR/NAME.png when out_dir is given (.static_path, else None)."""
    box.static_figure = fig
    box.static_png = _png_bytes(fig, dpi)
    box.static_path = None
    if out_dir is not None:
        from advlab.viz.core import save_figure
        box.static_path = save_figure(fig, out_dir, name)
    box.static_text = (f"{name}: an interactive explorer (live in a running Jupyter kernel); "
                       f"the picture shows its default state: {state}")


def _show_in(out, fig):
    """Show fig inside the Output widget when a kernel is there to show it."""
    with out:
        out.clear_output(wait=True)
        if _in_kernel():
            from IPython.display import display
            display(fig)


def threat_model_explorer(x: torch.Tensor, eps_linf: float = 0.1, eps_l2: float = 1.5, max_linf: float = 0.5,
                          max_l2: float = 8.0, seed: int = 0, out_dir=None, name: str = "threat_model_explorer"):
    """Sliders over an Linf and an L2 budget (and over the image, when x holds several) showing
    the image, random noise that spends the whole Linf budget and random noise that spends the
    whole L2 budget, each titled with the norms measured after clipping to [0, 1].

    Returns the widget (display it, or leave it as the last expression of a cell). `.update()`
    redraws with the current slider values, which is how tests drive it without a browser;
    `.last_figure` is the figure drawn last. `.static_figure` is the figure of the default state
    (the arguments), which a static copy of the notebook shows in place of the widget; with
    `out_dir` it is also saved as OUT_DIR/NAME.png (`.static_path`).
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
    box = _explorer_class()([w.HBox(controls[:2]), w.HBox(controls[2:]), out])

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
        _show_in(out, fig)
        plt.close(fig)  # shown once, inside the Output widget; never again at the end of the cell

    for s in controls:
        s.observe(render, names="value")
    box.update = render
    render()
    _freeze_default(box, box.last_figure, name, f"ε (L∞) = {s_linf.value:.2f}, ε (L2) = {s_l2.value:.1f}, "
                    f"image {s_idx.value}, noise seed {s_seed.value}", out_dir)
    return box


def eps_explorer(model, x: torch.Tensor, y: torch.Tensor, attack_factory, eps_values, class_names=None,
                 eps: float | None = None, index: int = 0, out_dir=None, name: str = "eps_explorer"):
    """An ε slider and an attack dropdown (and an image slider when x holds several images)
    showing, for one image, the clean image, the adversarial image, the perturbation (amplified)
    and the class probabilities before and after the attack. Titles give the predicted classes
    and the attack's repr, i.e. the exact settings that produced the picture.

    attack_factory: {name: eps -> attack} (the dropdown picks the name), or one callable
        eps -> attack. An attack is any `atk(model, x, y) -> x_adv`, e.g. advlab.attacks.PGD.
    eps_values: the ε values the slider offers; each (attack, ε, image) is attacked once, then
        cached, so moving back and forth is instant. ε = 0 shows the clean image (no attack is
        built, so factories need not accept 0, e.g. a PGD whose step size is proportional to ε).
    eps: the starting ε (default: the second value, or the only one); index: the starting image.

    Returns the widget (display it, or leave it as the last expression of a cell). `.update()`
    redraws with the current controls, `.last_figure` is the figure drawn last and
    `.last_result` a dict (attack repr, eps, label, clean and adversarial prediction and
    probabilities), which is how tests drive it without a browser. `.static_figure` is the figure
    of the default state (the first attack, `eps`, `index`), which a static copy of the notebook
    shows in place of the widget; with `out_dir` it is also saved as OUT_DIR/NAME.png
    (`.static_path`).
    """
    from advlab.data import check_images, check_labels
    check_images(x, "x")
    if len(x) == 0:
        raise ValueError("x: needs at least one image")
    check_labels(y, len(x), None, "y")
    if callable(attack_factory) and not isinstance(attack_factory, dict):
        factories = {"attack": attack_factory}
    elif isinstance(attack_factory, dict) and attack_factory and all(callable(f) for f in attack_factory.values()):
        factories = {str(k): f for k, f in attack_factory.items()}
    else:
        raise ValueError("attack_factory: expected a callable eps -> attack, or a non-empty dict "
                         f"{{name: eps -> attack}}, got {type(attack_factory).__name__}")
    try:
        eps_list = [float(e) for e in eps_values]
    except (TypeError, ValueError):
        raise ValueError(f"eps_values: expected a sequence of numbers, got {eps_values!r}") from None
    if not eps_list or any(e != e or e < 0 for e in eps_list):
        raise ValueError(f"eps_values: expected a non-empty sequence of numbers >= 0, got {eps_values!r}")
    if eps is None:
        eps = eps_list[1] if len(eps_list) > 1 else eps_list[0]
    if float(eps) not in eps_list:
        raise ValueError(f"eps: {eps!r} is not one of eps_values {eps_list}")
    if not 0 <= index < len(x):
        raise ValueError(f"index: must be in [0, {len(x) - 1}], got {index!r}")
    w = _ipywidgets()
    import matplotlib.pyplot as plt
    import numpy as np

    from advlab import viz

    s_eps = w.SelectionSlider(options=[(f"{e:g}", e) for e in eps_list], value=float(eps), description="ε",
                              continuous_update=False)
    d_atk = w.Dropdown(options=list(factories), value=next(iter(factories)), description="attack")
    s_idx = w.IntSlider(value=index, min=0, max=len(x) - 1, description="image", continuous_update=False)
    out = w.Output()
    controls = [s_eps] + ([d_atk] if len(factories) > 1 else []) + ([s_idx] if len(x) > 1 else [])
    box = _explorer_class()([w.HBox(controls), out])
    cache: dict = {}
    names = (lambda c: class_names[c]) if class_names is not None else str

    def attacked(name, e, i):
        key = (name, e, i)
        if key not in cache:
            xi, yi = x[i:i + 1], y[i:i + 1]
            if e == 0:
                rep, xa = "no attack (ε = 0)", xi.detach().clone()
            else:
                atk = factories[name](e)
                rep, xa = repr(atk), atk(model, xi, yi).detach()
            with torch.no_grad():
                was = model.training if hasattr(model, "training") else False
                if hasattr(model, "eval"):
                    model.eval()
                try:
                    p = torch.softmax(model(torch.cat([xi, xa])).float(), 1).cpu()
                finally:
                    if hasattr(model, "train"):
                        model.train(was)
            cache[key] = (rep, xa, p[0], p[1])
        return cache[key]

    def render(*_):
        name, e, i = d_atk.value, s_eps.value, s_idx.value
        rep, xa, p_clean, p_adv = attacked(name, e, i)
        xi, label = x[i:i + 1], int(y[i])
        pc, pa = int(p_clean.argmax()), int(p_adv.argmax())
        d = (xa - xi).flatten().float()
        fig, axes = plt.subplots(1, 4, figsize=(12.0, 3.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
        axes[0].imshow(viz._as_images(xi)[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0].set_title(f"clean: {names(label)}\npredicted {names(pc)} ({100 * p_clean[pc]:.0f}%)", fontsize=9,
                          color=viz.CORRECT_COLOR if pc == label else viz.WRONG_COLOR)
        axes[1].imshow(viz._as_images(xa)[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1].set_title(f"adversarial, ε = {e:g}\npredicted {names(pa)} ({100 * p_adv[pa]:.0f}%)", fontsize=9,
                          color=viz.CORRECT_COLOR if pa == label else viz.WRONG_COLOR)
        delta = viz._as_images(xa - xi)[0]
        m = float(np.abs(delta).max()) or 1.0
        axes[2].imshow(delta, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        axes[2].set_title(f"δ, amplified to ±{m:.3f}", fontsize=9)
        axes[2].set_xlabel(f"‖δ‖∞ = {d.abs().max():.3f}   ‖δ‖₂ = {d.norm():.2f}", fontsize=8)
        for ax in axes[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        k = len(p_clean)
        pos = np.arange(k)
        axes[3].barh(pos + 0.2, p_clean.numpy(), height=0.4, color="0.6", label="clean")
        axes[3].barh(pos - 0.2, p_adv.numpy(), height=0.4, color=viz.WRONG_COLOR if pa != label else viz.CORRECT_COLOR,
                     label="adversarial")
        axes[3].set_yticks(pos, [names(c) for c in range(k)], fontsize=7)
        axes[3].invert_yaxis()
        axes[3].set_xlim(0, 1)
        axes[3].set_xlabel("probability", fontsize=8)
        axes[3].legend(fontsize=7, loc="lower right")
        fig.suptitle(rep, fontsize=7.5)
        fig.tight_layout()
        box.last_figure = fig
        box.last_result = {"attack": rep, "eps": e, "index": i, "label": label, "pred_clean": pc, "pred_adv": pa,
                           "probs_clean": p_clean, "probs_adv": p_adv}
        _show_in(out, fig)
        plt.close(fig)

    for c in controls:
        c.observe(render, names="value")
    box.update = render
    render()
    r = box.last_result
    _freeze_default(box, box.last_figure, name, f"{r['attack']}, image {r['index']}", out_dir)
    return box


def figure_explorer(draw, name: str = "explorer", out_dir=None, **controls):
    """Any picture under its own controls, with the static fallback of the other explorers:
    `draw(**values) -> Figure` is called with the current value of every control (ipywidgets
    value widgets, e.g. FloatSlider, Dropdown) and again whenever one changes.

        explorer = widgets.figure_explorer(draw_temperature, name="temperature", out_dir=out_dir,
                                           t=ipywidgets.FloatLogSlider(value=0.5, base=10, min=-2, max=1))

    `draw` must return its figure and not call plt.show(). Returns the widget: `.update()` redraws,
    `.last_figure` is the figure drawn last, `.static_figure` the first one (the controls' starting
    values), shown by static copies of the notebook and saved as OUT_DIR/NAME.png with `out_dir`.
    """
    if not callable(draw):
        raise ValueError(f"draw: expected a callable draw(**values) -> Figure, got {type(draw).__name__}")
    if not controls:
        raise ValueError("controls: expected at least one control, e.g. t=ipywidgets.FloatSlider(...)")
    for key, c in controls.items():
        if not (hasattr(c, "value") and hasattr(c, "observe")):
            raise ValueError(f"{key}: expected an ipywidgets value widget (FloatSlider, Dropdown, ...), "
                             f"got {type(c).__name__}")
    w = _ipywidgets()
    import matplotlib.figure
    import matplotlib.pyplot as plt

    out = w.Output()
    box = _explorer_class()([w.HBox(list(controls.values())), out])

    def render(*_):
        fig = draw(**{k: c.value for k, c in controls.items()})
        if not isinstance(fig, matplotlib.figure.Figure):
            raise TypeError(f"draw: must return a matplotlib Figure, returned {type(fig).__name__}")
        box.last_figure = fig
        _show_in(out, fig)
        plt.close(fig)

    for c in controls.values():
        c.observe(render, names="value")
    box.update = render
    render()
    _freeze_default(box, box.last_figure, name, ", ".join(f"{k} = {c.value!r}" for k, c in controls.items()),
                    out_dir)
    return box


def _in_kernel() -> bool:
    import sys
    return "ipykernel" in sys.modules
