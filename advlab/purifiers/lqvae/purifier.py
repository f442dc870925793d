"""The LQ-VAE purifier of Kyatham, Mishra & Prathosh, "Variational Inference with Latent Space
Quantization for Adversarial Resilience": encode with a Lipschitz-constrained encoder, quantise the
latent, decode with decoder 1 (g), classify.

    defense = LQVAE.from_zoo("fashion_mnist")                 # LQ-VAE = zoo fmnist/lqvae, fmnist/cnn
    logits = defense(x)                                       # classifier(g(H(mu(x))))
    flips = defense.code_flips(x, x_adv)                      # (N,) fraction of code bits flipped

Purification of x (N, C, H, W) in [0, 1]: z = mu(x) (the posterior mean: deterministic), codes = H(z)
(sign(z) for the zoo model's two levels), x' = g(codes). No search, one forward pass: this is why the
paper calls it orders of magnitude faster than Defense-GAN (measured throughputs: the defense reports
in docs/results). The model and its training are in advlab.purifiers.lqvae.model and .train.

Classifier. The paper's classifiers A, B, C are three architectures; the zoo has fmnist/cnn (the
default, as for Defense-GAN), fmnist/vgg and fmnist/mlp: pass `classifier="fmnist/vgg"` to from_zoo.

Threat model. The attacker knows the classifier, the LQ-VAE and all weights; the defense draws no
random numbers (stochastic=False). H is piecewise constant, so autograd through the defense gives a
zero input gradient (differentiable=False): attacking `defense` itself is the broken evaluation that
`evaluate.defense_report`'s large-eps sanity check exists to catch. An adaptive attacker uses
`defense.adaptive_model(backward)`, whose forward pass is the real defense and whose gradient is:
  "straight-through" (default) exact through the classifier, g and the encoder; H's Jacobian replaced
                     by the identity: BPDA (Athalye et al. 2018) confined to the one layer that
                     breaks the gradient, so the rest of the pipeline keeps its exact gradient.
  "identity"         BPDA over the whole purifier: d purify / dx = I (the paper's own BPDA evaluation
                     reports 57.41% on Fashion-MNIST; the paper does not say which approximation).
  "soft"             BPDA whose backward is the gradient of g(H~(mu(x))), H~ the model's soft
                     quantiser (tanh(2 z / temperature) for two levels) at its training temperature.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from advlab.purifiers.base import Defense
from advlab.validate import eval_mode


class LQVAE(Defense):
    """Paper 004's purifier: forward(x) = classifier(g(H(mu(x)))), see the module docstring.

    lqvae: a module with encode(x) -> (mu, logvar), `quantiser` (hard, soft, index), decoder `g` and
        `latent_dim`, e.g. advlab.generative.LQVAEModel (zoo fmnist/lqvae).
    classifier: images in [0, 1] -> logits.
    """

    stochastic = False
    differentiable = False
    backwards = ("straight-through", "identity", "soft")
    ZOO = {"fashion_mnist": {"classifier": "fmnist/cnn", "lqvae": "fmnist/lqvae"}}

    def __init__(self, lqvae: nn.Module, classifier: nn.Module, seed: int | None = 0):
        super().__init__(classifier, seed)
        q = getattr(lqvae, "quantiser", None)
        if not isinstance(lqvae, nn.Module) or not all(hasattr(lqvae, a) for a in ("encode", "g", "latent_dim")) \
                or not all(hasattr(q, a) for a in ("hard", "soft", "index")):
            raise ValueError(f"lqvae: expected a module with encode, quantiser (hard, soft, index), g and "
                             f"latent_dim (e.g. advlab.generative.LQVAEModel), got {type(lqvae).__name__}")
        self.lqvae = lqvae

    def settings(self) -> dict:
        q = self.lqvae.quantiser
        return {"latent_dim": self.lqvae.latent_dim, "levels": q.levels}

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        V = self.lqvae
        with eval_mode(V), torch.no_grad():                    # H has no gradient: build no graph
            mu = V.encode(x)[0]                                # (N, d)
            return V.g(V.quantiser.hard(mu)).to(x.dtype)       # (N, C, H, W) in [0, 1]

    def code_flips(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """Per image, the fraction of latent levels (bits, for two levels) that x_adv changes in H(mu(x)),
        (N,) in [0, 1]: the LQ-VAE paper's bit-flip analysis."""
        from advlab.purifiers.lqvae.model import code_flips
        from advlab.validate import check_fit
        x, _ = check_fit(self, x, name="x")
        x_adv, _ = check_fit(self, x_adv, name="x_adv")
        if x_adv.shape != x.shape:
            raise ValueError(f"x_adv: expected the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
        return code_flips(self.lqvae, x, x_adv)

    # ----------------------------------------------------------------------------- attacking it
    def straight_through(self, x: torch.Tensor) -> torch.Tensor:
        """g(H(mu(x))) in value, differentiable: H's gradient replaced by the identity."""
        V = self.lqvae
        with eval_mode(V):
            mu = V.encode(x)[0]
            return V.g(V.quantiser.hard(mu) + (mu - mu.detach())).to(x.dtype)

    def soft_path(self, x: torch.Tensor) -> torch.Tensor:
        """g(H~(mu(x))) with the soft quantiser: the smooth surrogate of the "soft" backward."""
        V = self.lqvae
        with eval_mode(V):
            return V.g(V.quantiser.soft(V.encode(x)[0])).to(x.dtype)

    def _adaptive_model(self, backward: str) -> nn.Module:
        # both are BPDA: the forward pass is purify itself, the gradient that of the surrogate
        # (straight_through equals purify in value, so there only H's Jacobian is approximated)
        from advlab.attacks.bpda import bpda_model
        surrogate = self.straight_through if backward == "straight-through" else self.soft_path
        return bpda_model(self.purify, self.classifier, surrogate)
