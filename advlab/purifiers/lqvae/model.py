"""The LQ-VAE of Kyatham, Mishra & Prathosh, "Variational Inference with Latent Space Quantization for
Adversarial Resilience": a VAE with a Lipschitz-constrained encoder, a quantised latent space and two
decoders, for 28x28 grey images.

    model, metrics = train_lqvae(LQVAEConfig(iters=2000))
    mu, logvar = model.encode(x)              # (N, 1, 28, 28) -> (N, latent_dim) twice
    codes = model.quantiser.hard(mu)          # H: (N, latent_dim) on the quantiser's levels
    x_pure = model.g(codes)                   # decoder 1: (N, latent_dim) -> (N, 1, 28, 28) in [0, 1]
    x_pure = model(x)                         # the same three steps: g(H(mu(x)))

What the paper says (its Algorithm 1):
  encoder f_theta   x -> (mu, sigma); z ~ N(mu, sigma^2) during training
  H, H~             a quantiser H used at inference and a differentiable approximation H~ of it
  decoder 2 (h_psi) a copy of g made at the start; learns on H~(z) and is the one whose error
                    trains the encoder: L_h = sum_i ||x_i - h(H~(z_i))||^2
  decoder 1 (g_phi) learns on H(z): L_g = sum_i ||x_i - g(H(z_i))||^2; used at inference
  encoder loss      L_f = L_h + sum_i KL(N(mu_i, sigma_i^2) || N(0, I)) + sum_i (||grad_x f(x_i)||_2 - K)^2
  updates           theta by grad L_f, phi by grad L_g, psi by grad L_h (each network its own loss)
Inference (the purifier, advlab.purifiers.lqvae.purifier): x -> H(f(x)) -> g -> classifier. The paper's latent
analysis counts the fraction of code bits an adversarial example flips (about 90% of CW adversaries
on MNIST flip fewer than 6%): `code_flips` computes it per image.

What the paper does not give, and what we chose (all are fields of LQVAEConfig / the zoo entry):
  H         levels=2, span=1: each latent coordinate becomes sign(z) in {-1, +1}, one bit per
            coordinate. The paper speaks of "bits flipped", so its codes are binary; the N(0, I)
            prior makes each bit a fair coin, the most information a bit can carry. `levels` > 2 gives
            the nearest of `levels` evenly spaced values in [-span, span] (the flip helper then counts
            changed levels).
  H~        relax="soft", temperature=0.5: the softmax-weighted mean of the levels with weights
            exp(-(z - c)^2 / temperature); for two levels H~(z) = tanh(2 z / temperature), which tends
            to sign(z) as the temperature goes to 0. Not straight-through by default: with H~(z) = H(z)
            in the forward pass, h and g see the same inputs, get the same losses and, starting as
            copies, stay identical, so Algorithm 1's second decoder would be pointless. relax=
            "straight-through" (forward H, gradient of the identity) is offered for comparison.
  K         lipschitz_k=1: the encoder mean may stretch an input perturbation by at most about 1 in L2
            (an adversarial L2 step of 1.5 moves the latent by at most ~1.5 over all coordinates,
            while distinct images lie ~5-10 apart in pixel L2 and their latents ~sqrt(2 * latent_dim)
            apart under the prior); WGAN-GP's value for its own (||grad|| - 1)^2. The measurements behind K are in docs/results/lqvae_design.md.
  latent    latent_dim=64 is the config default; the zoo model uses 128, chosen by a search of latent size
            and KL weight (docs/results/lqvae_search_*.md, summarised in docs/results/lqvae_design.md).
  penalty   penalty="projection": ||grad_x (v . mu(x))||_2 with v a fresh random unit vector of the
            latent space per image and step (a sliced gradient penalty). The encoder is vector-valued,
            so "||grad_x f(x)||_2" needs a reading. We penalise the mean mu only (sigma is not used at
            inference; the Lipschitz property matters only for the code an adversarial input gets).
            ||J^T v|| for random unit v is the gain of mu along a random latent direction; pushing it
            to K for every v pushes all singular values of the Jacobian J = d mu / dx towards K, so K
            is the (local, L2) Lipschitz constant of mu. It costs one double-backward pass whatever
            the latent size. penalty="jacobian" is the literal alternative, the Frobenius norm
            ||J||_F (then K bounds sqrt(sum of squared singular values), ~sqrt(latent_dim) times
            the per-direction gain): exact, but latent_dim backward passes per step: a training step
            costs 14x the one with the projection (docs/results/lqvae_design.md).
            The penalty needs per-example gradients: the encoder has no batch norm, so the gradient
            of sum_i v_i . mu(x_i) with respect to x_i is J_i^T v_i.
  decoders  g and h have the DCGAN layout of `advlab.generative.blocks.Generator` (width 32); h starts as
            an exact copy of g (Algorithm 1, line 1).
  losses    per image as in Algorithm 1 (summed squared error over pixels, KL summed over latent
            coordinates, the penalty), averaged over the batch; kl_weight and lipschitz_weight scale
            the last two. The paper's weights are 1 and 1; we keep lipschitz_weight = 1 but use
            kl_weight = 0.1: a summed squared error is a Gaussian likelihood of variance 1/2, far wider
            than the real pixel errors (~0.015 per pixel), so at weight 1 the KL wins and the purified
            images lose the class (measurements: docs/results/lqvae_design.md).
  optimiser one Adam (lr 1e-3) over all parameters, stepped on L_f + L_g: the three parameter sets are
            disjoint and L_g reaches the encoder only through H, which has no gradient (we detach it),
            so the gradient of the sum on theta, phi and psi is exactly Algorithm 1's three gradients,
            at the cost of one backward pass (tests/test_lqvae.py checks the routing).

Threat model relevance. H has zero gradient almost everywhere: an attacker who differentiates the
purifier sees nothing, which is gradient masking, not robustness. The defense (advlab.purifiers.lqvae.purifier)
therefore names the approximations an adaptive attacker should use (straight-through through H,
BPDA with the identity, or the soft path through H~ and g). Train it with
`advlab train fmnist/lqvae --profile full` (GPU recommended; on one CPU thread 46875 steps at
0.081 s are about 1.1 h, several times that when the cores are shared).

Timings of a training step and of purification, and the short runs that chose the defaults, are in
docs/results/lqvae_design.md.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from advlab.generative.blocks import Generator
from advlab.validate import check_images, check_int, eval_mode

RELAXATIONS = ("soft", "straight-through")
PENALTIES = ("projection", "jacobian")


def _check_number(name: str, v, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name}: must be a finite number {'>' if positive else '>='} 0, got {v!r}")
    return float(v)


class Quantiser(nn.Module):
    """H and its relaxation H~ on latents (N, d): each coordinate to the nearest of `levels` evenly spaced
    values in [-span, span] (levels=2, span=1: sign(z) in {-1, +1}).

      hard(z)              H(z), piecewise constant (zero gradient almost everywhere)
      index(z)             (N, d) int64 level index of H(z): what the bit-flip analysis compares
      soft(z, t)           sum_l softmax_l(-(z - c_l)^2 / t) c_l; -> H(z) as t -> 0
      straight_through(z)  H(z) in the forward pass, gradient of the identity
      relaxed(z)           H~: soft(z, temperature) or straight_through(z), per `relax`
    """

    def __init__(self, levels: int = 2, span: float = 1.0, relax: str = "soft", temperature: float = 0.5):
        super().__init__()
        self.levels = check_int(levels, "levels", minimum=2)
        self.span = _check_number("span", span, positive=True)
        if relax not in RELAXATIONS:
            raise ValueError(f"relax: must be one of {RELAXATIONS}, got {relax!r}")
        self.relax = relax
        self.temperature = _check_number("temperature", temperature, positive=True)
        self.step = 2 * self.span / (levels - 1)
        # not in the state_dict: the levels follow from the settings, and the zoo file stays plain weights
        self.register_buffer("values", torch.linspace(-self.span, self.span, levels), persistent=False)

    def index(self, z: torch.Tensor) -> torch.Tensor:
        return ((z.detach().clamp(-self.span, self.span) + self.span) / self.step).round().long()   # (N, d)

    def hard(self, z: torch.Tensor) -> torch.Tensor:
        return self.values.to(z.dtype)[self.index(z)]                                              # (N, d)

    def soft(self, z: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        t = self.temperature if temperature is None else temperature
        c = self.values.to(z.dtype)                                                                # (L,)
        w = torch.softmax(-(z.unsqueeze(-1) - c).pow(2) / t, dim=-1)                              # (N, d, L)
        return w @ c                                                                               # (N, d)

    def straight_through(self, z: torch.Tensor) -> torch.Tensor:
        # H(z) + (z - z.detach()): exactly H(z) in value (z - z is 0), gradient 1
        return self.hard(z) + (z - z.detach())

    def relaxed(self, z: torch.Tensor) -> torch.Tensor:
        return self.soft(z) if self.relax == "soft" else self.straight_through(z)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, span={self.span}, relax={self.relax!r}, temperature={self.temperature}"


class Encoder(nn.Module):
    """images (N, C, 28, 28) in [0, 1] -> (mu, logvar), each (N, latent_dim).

    Two strided convs (w, 14, 14) -> (2w, 7, 7) with LeakyReLU, then a linear layer. No batch norm:
    the Lipschitz penalty needs each image's gradient to depend on that image only.
    """

    def __init__(self, latent_dim: int = 64, width: int = 32, channels: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),          # (w, 14, 14)
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),         # (2w, 7, 7)
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 2 * latent_dim),                     # (2 * latent_dim,)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.net(2 * x - 1).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


class LQVAEModel(nn.Module):
    """Encoder f, quantiser H / H~, decoder 1 g (inference) and decoder 2 h (training), in one module
    (the zoo stores one state_dict). forward(x) = g(H(mu(x))), the purified images."""

    def __init__(self, latent_dim: int = 64, width: int = 32, channels: int = 1, levels: int = 2,
                 span: float = 1.0, relax: str = "soft", temperature: float = 0.5):
        super().__init__()
        for name, v in (("latent_dim", latent_dim), ("width", width), ("channels", channels)):
            check_int(v, name)
        self.latent_dim, self.width, self.channels = latent_dim, width, channels
        self.quantiser = Quantiser(levels, span, relax, temperature)
        self.encoder = Encoder(latent_dim, width, channels)
        self.g = Generator(latent_dim, width, channels)
        self.h = copy.deepcopy(self.g)            # Algorithm 1, line 1: h starts as a copy of g

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """Level indices of H(mu(x)), (N, latent_dim) int64 (for two levels: the bits)."""
        return self.quantiser.index(self.encode(x)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """g(H(mu(x))), (N, C, 28, 28) in [0, 1]: deterministic, zero gradient with respect to x."""
        return self.g(self.quantiser.hard(self.encode(x)[0]))


def build_lqvae(latent_dim: int = 64, width: int = 32, channels: int = 1, levels: int = 2, span: float = 1.0,
                relax: str = "soft", temperature: float = 0.5) -> LQVAEModel:
    """The zoo builder of `fmnist/lqvae` (advlab.zoo.build calls it with the entry's arch_kwargs)."""
    return LQVAEModel(latent_dim, width, channels, levels, span, relax, temperature)


def gradient_norm(mu: torch.Tensor, x: torch.Tensor, kind: str = "projection",
                  generator: torch.Generator | None = None, create_graph: bool = True) -> torch.Tensor:
    """Per-image norm of the encoder's input gradient, (N,); mu (N, d) must have been computed from x
    (N, C, H, W) with x.requires_grad, each image independently of the others (no batch norm).

    kind="projection": ||grad_x (v_i . mu_i)||_2 = ||J_i^T v_i||_2, v_i uniform on the unit sphere of R^d
      (drawn with `generator`): one backward pass, the gain of mu along a random direction.
    kind="jacobian":   ||J_i||_F, the Frobenius norm of the Jacobian d mu_i / d x_i: d backward passes.
    create_graph=True keeps the graph, so that a penalty on the norm trains the encoder (double backward).
    """
    if kind not in PENALTIES:
        raise ValueError(f"kind: must be one of {PENALTIES}, got {kind!r}")
    n, d = mu.shape
    if kind == "projection":
        v = torch.randn(n, d, generator=generator).to(mu.device, mu.dtype)
        v = v / v.norm(dim=1, keepdim=True)                                            # (N, d) unit rows
        grad, = torch.autograd.grad(mu, x, grad_outputs=v, create_graph=create_graph)  # (N, C, H, W) = J_i^T v_i
        return grad.flatten(1).norm(dim=1)
    # one backward pass per latent coordinate; a loop, because is_grads_batched (vmap) measured 15x
    # slower on CPU for this double backward
    sq = torch.zeros(n, device=mu.device, dtype=mu.dtype)
    for j in range(d):
        row, = torch.autograd.grad(mu[:, j].sum(), x, create_graph=create_graph, retain_graph=True)  # (N, C, H, W)
        sq = sq + row.flatten(1).pow(2).sum(1)
    return sq.sqrt()


def lipschitz_penalty(encoder: nn.Module, x: torch.Tensor, K: float = 1.0, kind: str = "projection",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(||grad_x f(x_i)||_2 - K)^2 per image, (N,), differentiable for the encoder (see `gradient_norm`)."""
    x = x.detach().float().requires_grad_(True)
    mu = encoder(x)[0].float()
    return (gradient_norm(mu, x, kind, generator) - K) ** 2


@torch.no_grad()
def code_flips(model: LQVAEModel, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Fraction of latent coordinates whose quantised level differs between H(mu(x)) and H(mu(x_adv)),
    per image, (N,) in [0, 1]; for two levels, the fraction of code bits the perturbation flips
    (the LQ-VAE paper's histogram). x, x_adv: images (N, C, H, W) in [0, 1] of the same shape."""
    check_images(x, "x")
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"x_adv: expected the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    with eval_mode(model):
        return (model.code(x) != model.code(x_adv)).float().mean(1)
