"""The names lectures 03-06 use for defenses, kept as one namespace:

    from advlab import defenses
    defense = defenses.LQVAE.from_zoo("fashion_mnist")
    from advlab.defenses import adversarial_training as at

The code lives in advlab.purifiers (one folder per purifier) and advlab.training.adversarial
(adversarial training); this module only forwards to them, on first use.
"""
from __future__ import annotations

import importlib

_SUBMODULES = {"adversarial_training": "advlab.training.adversarial", "base": "advlab.purifiers.base",
               "defense_gan": "advlab.purifiers.defense_gan.purifier",
               "vaegan": "advlab.purifiers.vaegan.purifier", "lqvae": "advlab.purifiers.lqvae.purifier"}
_NAMES = {"Defense": "advlab.purifiers.base", "Purifier": "advlab.purifiers.base",
          "DefenseGAN": "advlab.purifiers.defense_gan.purifier",
          "latent_search": "advlab.generative.latent_search", "LatentSearch": "advlab.generative.latent_search",
          "VAEGANPurifier": "advlab.purifiers.vaegan.purifier",
          "discriminator_step": "advlab.purifiers.vaegan.purifier", "LQVAE": "advlab.purifiers.lqvae.purifier"}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(_SUBMODULES[name])
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'advlab.defenses' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
