"""Purification defenses: one folder per method (model.py, purifier.py, train.py) and this registry.

    from advlab import purifiers
    defense = purifiers.get("lqvae").from_zoo("fashion_mnist")   # or purifiers.LQVAE.from_zoo(...)
    logits = defense(x)                                           # classifier(purify(x))

REGISTRY maps the name the CLI, the reports, the tests and the leaderboard use to the class, as
"module:Class" so that importing this package stays light. A new purifier is one folder, one line
here and one zoo entry (advlab/zoo/entries.py).

  Purifier        the API every purifier keeps (base.py; `Defense` is the same class)
  voting          K stochastic draws -> one decision (majority vote, logit aggregation) and the
                  differentiable model an adaptive attacker should use for it
"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "defense-gan": "advlab.purifiers.defense_gan.purifier:DefenseGAN",
    "vaegan": "advlab.purifiers.vaegan.purifier:VAEGANPurifier",
    "lqvae": "advlab.purifiers.lqvae.purifier:LQVAE",
    "carso": "advlab.purifiers.carso.purifier:CARSO",
    "mlvgm": "advlab.purifiers.mlvgm.purifier:MLVGM",
    "cmap": "advlab.purifiers.cmap.purifier:CMAP",
}

_NAMES = {"Purifier": "advlab.purifiers.base", "Defense": "advlab.purifiers.base",
          "Voting": "advlab.purifiers.voting", "aggregate": "advlab.purifiers.voting"}
_NAMES |= {path.split(":")[1]: path.split(":")[0] for path in REGISTRY.values()}
_SUBMODULES = ("base", "voting", "defense_gan", "vaegan", "lqvae", "carso", "mlvgm", "cmap")
__all__ = ["REGISTRY", "names", "get"] + list(_SUBMODULES) + list(_NAMES)


def names() -> list[str]:
    """The registered purifier names, sorted."""
    return sorted(REGISTRY)


def get(name: str):
    """The purifier class registered as `name` (e.g. "lqvae" -> LQVAE)."""
    if name not in REGISTRY:
        raise ValueError(f"name: unknown purifier {name!r}; available: {names()}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.purifiers.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'advlab.purifiers' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
