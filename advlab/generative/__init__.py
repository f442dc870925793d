"""Generative models that purifiers are built on (lecture 04 on).

  wgan   DCGAN-style generator and critic for 28x28 grey images, trained with WGAN-GP
         (zoo: fmnist/wgan-gp, the generator of Defense-GAN)
  vaegan VAE-GAN (Larsen et al. 2016) of paper 002: encoder, decoder, discriminator whose features
         give the reconstruction loss (zoo: fmnist/vaegan, the purifier of VAEGANPurifier)
  lqvae  LQ-VAE of paper 004: Lipschitz-penalised encoder, quantiser H and its relaxation H~, two
         decoders trained by Algorithm 1 (zoo: fmnist/lqvae, the purifier of defenses.LQVAE)

Submodules are imported on first use, so `import advlab` stays light.
"""
from __future__ import annotations

import importlib

_SUBMODULES = ("wgan", "vaegan", "lqvae")
_NAMES = {"Generator": "wgan", "Critic": "wgan", "WGANConfig": "wgan", "train_wgan_gp": "wgan",
          "gradient_penalty": "wgan", "build_generator": "wgan",
          "VAEGAN": "vaegan", "VAEGANConfig": "vaegan", "train_vaegan": "vaegan", "build_vaegan": "vaegan",
          "kl_divergence": "vaegan",
          "LQVAEModel": "lqvae", "LQVAEConfig": "lqvae", "Quantiser": "lqvae", "train_lqvae": "lqvae",
          "build_lqvae": "lqvae", "lipschitz_penalty": "lqvae", "gradient_norm": "lqvae", "code_flips": "lqvae"}
__all__ = list(_SUBMODULES) + list(_NAMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"advlab.generative.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"advlab.generative.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'advlab.generative' has no attribute {name!r}")
