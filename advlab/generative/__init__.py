"""Generative models that purifiers are built on (lecture 04 on).

  wgan   DCGAN-style generator and critic for 28x28 grey images, trained with WGAN-GP
         (zoo: fmnist/wgan-gp, the generator of Defense-GAN)

Submodules are imported on first use, so `import advlab` stays light.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("wgan",)
_NAMES = {"Generator": "wgan", "Critic": "wgan", "WGANConfig": "wgan", "train_wgan_gp": "wgan",
          "gradient_penalty": "wgan", "build_generator": "wgan"}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.generative.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"advlab.generative.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'advlab.generative' has no attribute {name!r}")
