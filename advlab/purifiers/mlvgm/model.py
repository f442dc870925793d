"""A small hierarchical VAE for 28x28 grey images: the multiple-latent-variable generative model (MLVGM)
that the purifier of Serez, Cristani, Del Bue, Murino & Morerio, "Pre-trained Multiple Latent Variable
Generative Models are good defenders against Adversarial Attacks", needs. The paper uses large pretrained
models (StyleGAN2-E4E, NVAE); we train this one on Fashion-MNIST (zoo `fmnist/hvae`).

    model = HVAEModel()                                  # 3 levels: 4x4, 7x7, 14x14 latent maps
    means = model.encode(x)                              # [(N, 8, 4, 4), (N, 4, 7, 7), (N, 2, 14, 14)]
    x_pure = model.decode_mixed(x, [1/3, 2/3, 1], 0.6, g)  # (N, 1, 28, 28) in [0, 1]
    x_new = model.sample(16, temperature=0.6)            # (16, 1, 28, 28) decoder means
    bpd = model.elbo(x)                                  # (N,) negative ELBO in bits per dimension

Architecture (NVAE / ladder style, "residual posteriors"):

  bottom-up (deterministic), x (N, 1, 28, 28) scaled to [-1, 1]:
      stem conv                          (c28, 28, 28)
      strided conv + ResBlock   -> h_3   (c14, 14, 14)
      strided conv + ResBlock   -> h_2   (c7,   7,  7)
      strided conv + ResBlock   -> h_1   (c4,   4,  4)
  top-down (generative), level 1 = coarsest:
      s = learned constant               (c4, 4, 4)
      level i:  prior      p(z_i | z_<i) = N(mu_p, sigma_p^2), (mu_p, log sigma_p) = prior_head_i(s)
                                          (level 1: N(0, I), no head)
                posterior  q(z_i | x, z_<i) = N(mu_p + d_mu, (sigma_p * exp(d_logsig))^2),
                                          (d_mu, d_logsig) = post_head_i([s, h_i]): an offset of the prior
                s = ResBlock(s + conv1x1(z_i)); upsample to the next level's size
      out: transposed conv to (c28, 28, 28), conv -> logits (1, 28, 28); Bernoulli likelihood, the decoder's
      mean is sigmoid(logits).
  z_i shapes (the zoo's z_channels = (8, 4, 2)): (N, 8, 4, 4), (N, 4, 7, 7), (N, 2, 14, 14).
  Widths: c4 = c7 = width, c14 = width / 2, c28 = width / 4.

KL of the residual posterior (NVAE's form), per latent coordinate:
  KL(q || p) = 0.5 * (d_mu^2 / sigma_p^2 + exp(2 d_logsig) - 1) - d_logsig
(for level 1, sigma_p = 1 and d_mu = mu: `advlab.generative.kl_divergence`, summed; tests check it).
Training (advlab.purifiers.mlvgm.train) adds KL warm-up and free bits per latent channel.

Purification (decode_mixed; the paper's NVAE variant): for each level top-down, along the already-mixed
path, z_e_i = the posterior mean, z_s_i = mu_p + T * sigma_p * eps (a prior sample at temperature T),
z_i = (1 - a_i) z_e_i + a_i z_s_i; the output is the decoder's mean. With all a_i = 0 it reconstructs
from posterior means; with a_i = 1 level i ignores x (its prior still depends on the mixed levels above).
Random draws: one eps per level, (N, k_i, H_i, W_i), in level order, from a CPU torch.Generator, so
decode_mixed with every a_i = 1 and sample(n) give the same images for the same generator state.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.validate import check_int

SIZES = (4, 7, 14)           # latent map size per level, coarsest first
LOG2 = math.log(2.0)


def soft_clamp(x: torch.Tensor, bound: float = 3.0) -> torch.Tensor:
    """bound * tanh(x / bound): ~x near 0, never beyond +-bound (keeps log-scales finite)."""
    return bound * torch.tanh(x / bound)


def gaussian_kl(d_mu: torch.Tensor, d_logsig: torch.Tensor, logsig_p: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mu_p + d_mu, (sigma_p e^d_logsig)^2) || N(mu_p, sigma_p^2)), same shape as d_mu."""
    return 0.5 * (d_mu.pow(2) * torch.exp(-2 * logsig_p) + torch.exp(2 * d_logsig) - 1) - d_logsig


class ResBlock(nn.Module):
    """x + conv(SiLU(conv(SiLU(x)))), 3x3 convs, the second zero-initialised (starts as the identity)."""

    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def _head(c_in: int, c_out: int) -> nn.Module:
    """SiLU + 3x3 conv, zero-initialised: a prior head starts at N(0, I), a posterior head at the prior."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return nn.Sequential(nn.SiLU(), conv)


class HVAEModel(nn.Module):
    """The three-level hierarchical VAE described in the module docstring.

    width: channels at 4x4 and 7x7 (14x14: width / 2, 28x28: width / 4).
    z_channels: latent channels per level, coarsest first (4x4, 7x7, 14x14).
    channels: image channels (1 for Fashion-MNIST).
    """

    def __init__(self, width: int = 64, z_channels=(8, 4, 2), channels: int = 1):
        super().__init__()
        check_int(width, "width", minimum=4)
        check_int(channels, "channels")
        if not isinstance(z_channels, (list, tuple)) or len(z_channels) != len(SIZES):
            raise ValueError(f"z_channels: expected {len(SIZES)} ints (one per level, coarsest first), got {z_channels!r}")
        for k in z_channels:
            check_int(k, "z_channels")
        self.width, self.channels = width, channels
        self.z_channels = tuple(int(k) for k in z_channels)
        self.n_levels = len(SIZES)
        c4, c7, c14, c28 = width, width, max(width // 2, 1), max(width // 4, 1)
        self.feature_channels = (c4, c7, c14)                       # decoder state per level
        # bottom-up
        self.stem = nn.Conv2d(channels, c28, 3, padding=1)                                            # (c28, 28, 28)
        self.down14 = nn.Sequential(nn.SiLU(), nn.Conv2d(c28, c14, 4, 2, 1), ResBlock(c14))          # (c14, 14, 14)
        self.down7 = nn.Sequential(nn.SiLU(), nn.Conv2d(c14, c7, 4, 2, 1), ResBlock(c7))             # (c7, 7, 7)
        self.down4 = nn.Sequential(nn.SiLU(), nn.Conv2d(c7, c4, 3, 2, 1), ResBlock(c4))              # (c4, 4, 4)
        # top-down
        self.s0 = nn.Parameter(torch.zeros(1, c4, 4, 4))
        cs = self.feature_channels
        self.prior_heads = nn.ModuleList([nn.Identity()] + [_head(cs[i], 2 * self.z_channels[i])
                                                            for i in range(1, self.n_levels)])
        self.post_heads = nn.ModuleList([_head(2 * cs[i], 2 * self.z_channels[i]) for i in range(self.n_levels)])
        self.z_proj = nn.ModuleList([nn.Conv2d(self.z_channels[i], cs[i], 1) for i in range(self.n_levels)])
        self.td_res = nn.ModuleList([ResBlock(cs[i]) for i in range(self.n_levels)])
        self.up = nn.ModuleList([
            nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(c4, c7, 3, 2, 1)),       # 4 -> 7
            nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(c7, c14, 4, 2, 1)),      # 7 -> 14
            nn.Sequential(nn.SiLU(), nn.ConvTranspose2d(c14, c28, 4, 2, 1)),     # 14 -> 28
        ])
        self.out = nn.Sequential(ResBlock(c28), nn.SiLU(), nn.Conv2d(c28, channels, 3, padding=1))  # logits

    # ----------------------------------------------------------------------------- pieces
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(k_i, H_i, W_i) per level, coarsest first."""
        return [(k, s, s) for k, s in zip(self.z_channels, SIZES)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up features [h_1 (c4, 4, 4), h_2 (c7, 7, 7), h_3 (c14, 14, 14)] of x (N, C, 28, 28) in [0, 1]."""
        h = self.stem(2 * x - 1)
        h3 = self.down14(h)
        h2 = self.down7(h3)
        h1 = self.down4(h2)
        return [h1, h2, h3]

    def _prior(self, i: int, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.z_channels[i]
        if i == 0:
            z = s.new_zeros(len(s), k, SIZES[0], SIZES[0])
            return z, z                                                  # N(0, I)
        mu, logsig = self.prior_heads[i](s).chunk(2, dim=1)
        return mu, soft_clamp(logsig)

    def _posterior(self, i: int, s: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d_mu, d_logsig = self.post_heads[i](torch.cat([s, h], dim=1)).chunk(2, dim=1)
        return d_mu, soft_clamp(d_logsig)

    def _draw(self, n: int, i: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
        k, hh, ww = self.latent_shapes()[i]
        return torch.randn(n, k, hh, ww, generator=generator).to(like.device, like.dtype)

    def top_down(self, feats: list[torch.Tensor] | None, mode: str, n: int | None = None,
                 alphas: torch.Tensor | None = None, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[dict]]:
        """The generative path; returns (logits (N, C, 28, 28), one dict per level).

        mode "posterior": z_i ~ q(z_i | x, z_<i) (training); the dicts hold "kl" (N, k_i, H_i, W_i).
             "mean":      z_i = posterior mean (encode, reconstruction); no draws.
             "mixed":     z_i = (1 - a_i) z_e_i + a_i z_s_i (purification); dicts hold z_e, z_s, z.
             "prior":     z_i ~ p(z_i | z_<i) at the temperature (sampling); feats may be None.
        Draws (all modes but "mean"): one eps (N, k_i, H_i, W_i) per level in order, from `generator`.
        """
        if mode not in ("posterior", "mean", "mixed", "prior"):
            raise ValueError(f"mode: must be 'posterior', 'mean', 'mixed' or 'prior', got {mode!r}")
        n = len(feats[0]) if feats is not None else n
        s = self.s0.expand(n, -1, -1, -1)
        levels = []
        for i in range(self.n_levels):
            mu_p, logsig_p = self._prior(i, s)
            info = {}
            if mode == "prior":
                z = mu_p + temperature * logsig_p.exp() * self._draw(n, i, generator, s)
            else:
                d_mu, d_logsig = self._posterior(i, s, feats[i])
                mu_q = mu_p + d_mu
                if mode == "mean":
                    z = mu_q
                elif mode == "posterior":
                    z = mu_q + (logsig_p + d_logsig).exp() * self._draw(n, i, generator, s)
                    info["kl"] = gaussian_kl(d_mu, d_logsig, logsig_p)
                else:
                    z_s = mu_p + temperature * logsig_p.exp() * self._draw(n, i, generator, s)
                    a = alphas[i]
                    z = (1 - a) * mu_q + a * z_s
                    info |= {"z_e": mu_q, "z_s": z_s}
            info["z"] = z
            s = self.advance(i, s, z)
            levels.append(info)
        return self.out(s), levels

    # ----------------------------------------------------------------------------- one level at a time
    # (what decode_mixed does, in the pieces exercise 08.1 puts together:
    #    feats = features(x); s = start(N)
    #    for i: z_e, z_s = level_latents(i, s, feats[i], T, g); z = (1 - a_i) z_e + a_i z_s; s = advance(i, s, z)
    #    x' = to_image(s))
    def start(self, n: int) -> torch.Tensor:
        """The top-down state before level 1: the learned constant, (n, c4, 4, 4)."""
        return self.s0.expand(check_int(n, "n"), -1, -1, -1)

    def level_latents(self, i: int, s: torch.Tensor, h: torch.Tensor, temperature: float = 0.6,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_e, z_s) of level i given the state s of the levels above and the encoder features h = features(x)[i]:
        the posterior mean of q(z_i | x, z_<i) and a draw of p(z_i | z_<i) at `temperature` (one eps from
        `generator`), each (N, k_i, H_i, W_i)."""
        mu_p, logsig_p = self._prior(i, s)
        d_mu, _ = self._posterior(i, s, h)
        return mu_p + d_mu, mu_p + temperature * logsig_p.exp() * self._draw(len(s), i, generator, s)

    def advance(self, i: int, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The state after level i took the value z: ResBlock(s + conv1x1(z)), upsampled to the next size."""
        return self.up[i](self.td_res[i](s + self.z_proj[i](z)))

    def to_image(self, s: torch.Tensor) -> torch.Tensor:
        """The decoder's mean from the state after the last level, (N, C, 28, 28) in [0, 1]."""
        return torch.sigmoid(self.out(s))

    # ----------------------------------------------------------------------------- the API
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Posterior means z_e per level, top-down, each conditioned on the previous levels' means:
        [(N, k_1, 4, 4), (N, k_2, 7, 7), (N, k_3, 14, 14)]."""
        _, levels = self.top_down(self.features(x), "mean")
        return [lv["z"] for lv in levels]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean from the posterior means, (N, C, 28, 28) in [0, 1] (= decode_mixed with all a_i = 0)."""
        logits, _ = self.top_down(self.features(x), "mean")
        return torch.sigmoid(logits)

    def decode_mixed(self, x: torch.Tensor, alphas, temperature: float = 0.6,
                     generator: torch.Generator | None = None, return_latents: bool = False):
        """The purification of Serez et al.: (N, C, 28, 28) in [0, 1] -> decoder mean (N, C, 28, 28) in [0, 1].

        alphas: n_levels weights in [0, 1], coarsest first (a sequence or a tensor (n_levels,)); level i
        uses z_i = (1 - a_i) z_e_i + a_i z_s_i, z_e_i the posterior mean given x and the mixed levels
        above, z_s_i a draw from p(z_i | z_<i) at `temperature`. Differentiable in x.
        return_latents: also return the per-level dicts {"z_e", "z_s", "z"}.
        """
        a = self._alphas(alphas)
        logits, levels = self.top_down(self.features(x), "mixed", alphas=a.to(x.device, x.dtype),
                                       temperature=temperature, generator=generator)
        out = torch.sigmoid(logits)
        return (out, levels) if return_latents else out

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n decoder means of ancestral samples z_i ~ p(z_i | z_<i) at `temperature`, (n, C, 28, 28) in [0, 1]."""
        check_int(n, "n")
        logits, _ = self.top_down(None, "prior", n=n, temperature=temperature, generator=generator)
        return torch.sigmoid(logits)

    def loss_terms(self, x: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(recon (N,) Bernoulli negative log-likelihood in nats, [KL per level (N, k_i, H_i, W_i)], logits),
        with one posterior sample per level from `generator`."""
        logits, levels = self.top_down(self.features(x), "posterior", generator=generator)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        return recon, [lv["kl"] for lv in levels], logits

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Negative ELBO per image in bits per dimension, (N,), one posterior sample (Bernoulli likelihood
        of the grey values: a bound for binarised data, a fixed-scale score for grey images)."""
        recon, kls, _ = self.loss_terms(x, generator)
        nats = recon + sum(k.flatten(1).sum(1) for k in kls)
        return nats / (x[0].numel() * LOG2)

    def _alphas(self, alphas) -> torch.Tensor:
        a = torch.as_tensor(alphas, dtype=torch.float32) if not isinstance(alphas, torch.Tensor) else alphas.detach().float().cpu()
        if a.shape != (self.n_levels,):
            raise ValueError(f"alphas: expected {self.n_levels} values (one per level, coarsest first), "
                             f"got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError(f"alphas: must lie in [0, 1], got {a.tolist()}")
        return a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction from posterior means (all a_i = 0), (N, C, 28, 28) in [0, 1]."""
        return self.reconstruct(x)

    def extra_repr(self) -> str:
        return f"width={self.width}, z_channels={self.z_channels}, sizes={SIZES}"


def build_hvae(width: int = 64, z_channels=(8, 4, 2), channels: int = 1) -> HVAEModel:
    """The zoo builder of `fmnist/hvae` (advlab.zoo.build calls it with the entry's arch_kwargs)."""
    return HVAEModel(width, tuple(z_channels), channels)
