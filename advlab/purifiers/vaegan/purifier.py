"""The VAE-GAN purification network of Agarwal, Verma & Momin, "Enhancing Adversarial Robustness
through a Purification Network": encode, decode, then climb the discriminator's "real" score, and
classify the result.

    defense = VAEGANPurifier.from_zoo("fashion_mnist")        # VAE-GAN = zoo fmnist/vaegan, VGG classifier
    logits = defense(x)                                       # classifier(purify(x))

Purification of x (N, C, H, W) in [0, 1]:
  1. z = mu(x) (sample=False), or z ~ q(z|x) = N(mu, exp(logvar)) (sample=True, stochastic);
  2. x' = Dec(z), the VAE's projection on the data manifold;
  3. `steps` discriminator-guided steps towards "real" (the paper's idea of driving inputs back to the
     manifold with the discriminator's gradient), in image space (space="image"):
         x' <- clip_[0,1](x' + step_size * g / ||g||_2),   g = grad_x' Dis(x')
     or in latent space (space="latent"): z <- z + step_size * g / ||g||_2, g = grad_z Dis(Dec(z)),
     then x' = Dec(z). Normalised steps make step_size an L2 distance per step.
The paper gives neither the number of steps nor the step size: the defaults (2 steps of L2 size 0.25
in latent space, from a search: see VAEGANPurifier) are our choice; steps=0 is the plain VAE reconstruction.

Threat model. Every stage is differentiable: the guidance steps are taken with create_graph=True
when the input needs a gradient, so autograd through `defense` is the exact gradient of the whole
pipeline and an adaptive attacker uses backward="exact" (the default); "identity" (BPDA with
d purify / dx = I) is offered for comparison. With sample=True the defense is stochastic and an
adaptive attack needs EoT over the posterior draws.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.purifiers.base import Defense
from advlab.validate import check_positive, eval_mode

SPACES = ("image", "latent")


def discriminator_step(D: nn.Module, x: torch.Tensor, step_size: float, decode: nn.Module | None = None) -> torch.Tensor:
    """One normalised gradient-ascent step on D's "real" logit.

    decode None: x is an image batch (N, C, H, W); returns clip_[0,1](x + step_size * g / ||g||).
    decode a module: x is a latent batch (N, d) and the score is D(decode(x)); returns x + step_size * g / ||g||.
    Differentiable (create_graph) when x is part of a graph that needs a gradient; else detached.
    """
    keep = torch.is_grad_enabled() and x.requires_grad
    xin = x if keep else x.detach().requires_grad_(True)
    with torch.enable_grad():
        score = D(xin if decode is None else decode(xin))                 # (N,)
        g, = torch.autograd.grad(score.sum(), xin, create_graph=keep)     # same shape as x
    norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    out = xin + step_size * g / norm
    if decode is None:
        out = out.clamp(0, 1)
    return out if keep else out.detach()


class VAEGANPurifier(Defense):
    """The VAE-GAN purifier: forward(x) = classifier(guide(Dec(z(x)))), see the module docstring.

    vaegan: a module with encode(x) -> (mu, logvar), decode(z) -> images in [0, 1], `discriminator`
        (images -> (N,) logits of "real") and `latent_dim`, e.g. advlab.purifiers.vaegan.model.VAEGAN.
    steps, step_size: discriminator-guided steps and their L2 length. space: "latent" (guide z, then
        decode) or "image" (guide the decoded image). Defaults 2, 0.25, "latent": the highest grey-box
        accuracy with clean accuracy >= 80% in a search on 1000 test images (scripts/purifier_sweep.py;
        the table is docs/results/sweep_vaegan_n1000_seed0.md).
    space: "image" (guide the decoded image) or "latent" (guide z, then decode).
    sample: False uses the posterior mean (deterministic); True samples z ~ q(z|x) (stochastic,
        drawn with purify's `generator`, by default the defense's own stream seeded by `seed`).
    """

    differentiable = True
    backwards = ("exact", "identity")
    ZOO = {"fashion_mnist": {"classifier": "fmnist/vgg", "vaegan": "fmnist/vaegan"}}

    def __init__(self, vaegan: nn.Module, classifier: nn.Module, steps: int = 2, step_size: float = 0.25,
                 space: str = "latent", sample: bool = False, seed: int | None = 0):
        super().__init__(classifier, seed)
        if not isinstance(vaegan, nn.Module) or not all(hasattr(vaegan, a) for a in
                                                       ("encode", "decode", "discriminator", "latent_dim")):
            raise ValueError(f"vaegan: expected a module with encode, decode, discriminator and latent_dim "
                             f"(e.g. advlab.purifiers.vaegan.model.VAEGAN), got {type(vaegan).__name__}")
        if space not in SPACES:
            raise ValueError(f"space: must be one of {SPACES}, got {space!r}")
        if not isinstance(sample, bool):
            raise ValueError(f"sample: must be True or False, got {sample!r}")
        self.vaegan = vaegan
        self.steps = check_positive(steps, "steps", integer=True, minimum=0, strict=False)
        self.step_size = float(check_positive(step_size, "step_size", minimum=0, strict=False))
        self.space, self.sample = space, sample
        self.stochastic = sample

    def settings(self) -> dict:
        s = {"steps": self.steps, "step_size": self.step_size, "space": self.space, "sample": self.sample}
        return s | ({"seed": self.seed} if self.stochastic else {})

    def latent(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z(x) (N, latent_dim): the posterior mean, or a posterior sample when sample=True."""
        from advlab.validate import check_fit
        x, _ = check_fit(self, x)
        mu, logvar = self.vaegan.encode(x)
        if not self.sample:
            return mu
        eps = torch.randn(mu.shape, generator=generator if generator is not None else self._generator)
        return mu + (0.5 * logvar).exp() * eps.to(mu.device, mu.dtype)

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        V = self.vaegan
        with eval_mode(V):
            z = self.latent(x, generator)                                   # (N, d)
            if self.space == "latent":
                for _ in range(self.steps):
                    z = discriminator_step(V.discriminator, z, self.step_size, decode=V.decode)
                return V.decode(z)                                          # (N, C, H, W)
            x_pure = V.decode(z)                                            # (N, C, H, W)
            for _ in range(self.steps):
                x_pure = discriminator_step(V.discriminator, x_pure, self.step_size)
            return x_pure
