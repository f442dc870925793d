"""Defenses: adversarial training (lecture 03) and, from lecture 04 on, purifiers.

Every purifier is an nn.Module from images in [0, 1] to logits with .purify(x), .classifier,
.stochastic and Name.from_zoo(dataset, classifier=None) (DESIGN.md section 3); see base.py.

  Defense       the base class (base.py): forward = classifier(purify(x)), adaptive_model()
  DefenseGAN    projection on a WGAN-GP generator's range by latent search (defense_gan.py)
  VAEGANPurifier  paper 002: VAE-GAN reconstruction + discriminator-guided steps (vaegan.py)
  LQVAE         paper 004: Lipschitz encoder, quantised latent, decoder 1 (lqvae.py)

Submodules and classes are imported on first use, so `import advlab` stays light.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("adversarial_training", "base", "defense_gan", "vaegan", "lqvae")
_NAMES = {"Defense": "base", "DefenseGAN": "defense_gan", "latent_search": "defense_gan",
          "LatentSearch": "defense_gan", "VAEGANPurifier": "vaegan", "discriminator_step": "vaegan",
          "LQVAE": "lqvae"}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.defenses.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"advlab.defenses.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'advlab.defenses' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
