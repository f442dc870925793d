"""Defense-GAN (Samangouei, Kabkab & Chellappa, ICLR 2018): purification by projection on the
range of a GAN generator G trained on clean data.

    defense = DefenseGAN.from_zoo("fashion_mnist")            # G = zoo fmnist/wgan-gp, fmnist/cnn
    logits = defense(x)                                       # classifier(G(z*(x)))

Purification. z*(x) = argmin_z ||G(z) - x||^2, found by gradient descent from R random starts
z ~ N(0, I / latent_dim), L steps each; the restart with the lowest error wins and G(z*) replaces
x. Settings of the paper's code for MNIST / Fashion-MNIST: L = 200, R = 10, SGD with learning
rate 10 and momentum 0.7, the rate divided by 10 after 80% of the steps, the error being the
mean over pixels per image. All R restarts of a batch run in parallel as one (R * N) batch.
Cost: L * R forward+backward passes of G per image - why it is slow.

Threat model. The search is not differentiated (differentiable=False): autograd sees a zero
gradient, so attacking `defense` itself is a broken evaluation. Adaptive attacks use BPDA
(Athalye et al. 2018), which broke Defense-GAN:
  backward="identity"  (default) d purify / dx = I, the approximation Athalye et al. used;
  backward="generator" the gradient flows through G at the found z*: the last `unroll` search
                       steps are re-run from z* with autograd, so dG(z')/dx ~ J J^T (J = dG/dz at
                       z*), the projection on G's tangent space (up to scale).
The restarts are random (stochastic=True): attacks should average gradients over draws (EoT).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from advlab.generative.latent_search import SEARCH_LR, LatentSearch, latent_search  # noqa: F401 (re-exported)
from advlab.purifiers.base import Defense
from advlab.validate import check_positive, eval_mode


class DefenseGAN(Defense):
    """Defense-GAN: forward(x) = classifier(G(z*(x))), z* from `latent_search` (L steps, R restarts).

    generator: a module with `latent_dim` mapping (N, latent_dim) latents to images in [0, 1].
    steps, restarts: L and R (paper: 200 and 10; the quick profile uses fewer and should say so).
    lr, momentum, decay_at: the search's SGD (paper code: 10, 0.7, 0.8). lr is 0.1 here: it acts on
        our loss scale (each image's mean over pixels), and the paper's 10 makes the search diverge
        to saturated images with the zoo's fmnist/wgan-gp. lr 0.1 won a search of lr, L and R on
        1000 test images (scripts/purifier_sweep.py; docs/results/sweep_defense-gan_n1000_seed0.md
        and _seed1.md); a closer fit also re-creates more of the perturbation.
    seed: seeds the defense's own random stream of initial latents (each call draws new ones).
    unroll: search steps re-run with autograd by the "generator" BPDA backward.
    """

    stochastic = True
    differentiable = False
    backwards = ("identity", "generator")
    ZOO = {"fashion_mnist": {"classifier": "fmnist/cnn", "generator": "fmnist/wgan-gp"}}

    def __init__(self, generator: nn.Module, classifier: nn.Module, steps: int = 200, restarts: int = 10,
                 lr: float = SEARCH_LR, momentum: float = 0.7, decay_at: float = 0.8, seed: int | None = 0,
                 batch_size: int = 128, unroll: int = 1):
        super().__init__(classifier, seed)
        if not isinstance(generator, nn.Module) or not isinstance(getattr(generator, "latent_dim", None), int):
            raise ValueError(f"generator: expected an nn.Module with an int `latent_dim` (e.g. "
                             f"advlab.generative.Generator), got {type(generator).__name__}")
        self.generator = generator
        self.steps = check_positive(steps, "steps", integer=True, minimum=0, strict=False)
        self.restarts = check_positive(restarts, "restarts", integer=True, minimum=1, strict=False)
        self.lr = float(check_positive(lr, "lr", minimum=0, strict=False))
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum: must lie in [0, 1), got {momentum!r}")
        if not 0 <= decay_at <= 1:
            raise ValueError(f"decay_at: must lie in [0, 1], got {decay_at!r}")
        self.momentum, self.decay_at = float(momentum), float(decay_at)
        self.batch_size = check_positive(batch_size, "batch_size", integer=True)
        self.unroll = check_positive(unroll, "unroll", integer=True)

    def settings(self) -> dict:
        return {"steps": self.steps, "restarts": self.restarts, "lr": self.lr, "momentum": self.momentum,
                "decay_at": self.decay_at, "seed": self.seed}

    def search(self, x: torch.Tensor, generator: torch.Generator | None = None, callback=None) -> LatentSearch:
        """The full result of the latent search on x (best z, reconstruction, errors per restart)."""
        from advlab.validate import check_fit
        x, _ = check_fit(self, x)
        return latent_search(self.generator, x, self.steps, self.restarts, self.lr, self.momentum, self.decay_at,
                             generator if generator is not None else self._generator, self.batch_size, callback)

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return latent_search(self.generator, x, self.steps, self.restarts, self.lr, self.momentum, self.decay_at,
                             generator, self.batch_size).x_rec

    def _adaptive_model(self, backward: str) -> nn.Module:
        from advlab.attacks.bpda import bpda_model
        path = _GeneratorPath(self)
        return bpda_model(path.project, self.classifier, path.surrogate)


class _GeneratorPath(nn.Module):
    """BPDA through G at the found latent: forward_fn = the real projection (which remembers z*),
    backward_fn = G after `unroll` differentiable search steps from z*, a function of x."""

    def __init__(self, defense: DefenseGAN):
        super().__init__()
        self.defense = defense
        self._z: torch.Tensor | None = None

    def project(self, x: torch.Tensor) -> torch.Tensor:
        res = self.defense.search(x)
        self._z = res.z
        return res.x_rec

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        if self._z is None or len(self._z) != len(x):
            raise RuntimeError("surrogate: call project(x) on the same batch first (BPDA does)")
        d, G = self.defense, self.defense.generator
        z = self._z.detach()
        with eval_mode(G):
            for _ in range(d.unroll):  # z <- z - lr * grad_z mean (G(z) - x)^2, kept in the graph of x
                z = z.requires_grad_(True) if not z.requires_grad else z
                err = (G(z) - x).pow(2).flatten(1).mean(1)
                grad, = torch.autograd.grad(err.sum(), z, create_graph=True)
                z = z - d.lr * grad
            return G(z)
