"""Building blocks that the generative purifiers share (each method's own networks live in its
folder under advlab.purifiers).

  blocks         Generator: the DCGAN-layout decoder z -> 28x28 images (Defense-GAN's generator, the
                 VAE-GAN's and LQ-VAE's decoders); make_ema: the weights' moving average (HVAE, consistency model)
  losses         kl_divergence, gradient_penalty
  latent_search  projection on a generator's range by gradient descent on latents with restarts

Submodules and names are imported on first use, so `import advlab` stays light.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("blocks", "losses", "latent_search")
_NAMES = {"Generator": "blocks", "make_ema": "blocks", "kl_divergence": "losses", "gradient_penalty": "losses",
          "LatentSearch": "latent_search", "SEARCH_LR": "latent_search"}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.generative.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"advlab.generative.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'advlab.generative' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
