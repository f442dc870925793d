"""MLVGM purification of Serez, Cristani, Del Bue, Murino & Morerio, "Pre-trained Multiple Latent Variable
Generative Models are good defenders against Adversarial Attacks": encode the input into one latent per
level, sample each level from its prior, decode the per-level interpolation, classify.

    defense = MLVGM.from_zoo("fashion_mnist")                    # zoo fmnist/hvae + fmnist/cnn
    defense = MLVGM.from_zoo("fashion_mnist", alphas="cosine", scale=0.7, temperature=0.6)
    logits = defense(x)                                          # classifier(purify(x)), one draw
    logits = defense.mean_logits(x, k=32)                        # the paper's evaluation: 32 draws averaged

Purification of x (N, C, 28, 28) in [0, 1] (advlab.purifiers.mlvgm.model.HVAEModel.decode_mixed):
  0. optional preprocessing: ("noise", r) adds Gaussian noise rescaled to L2 norm r per image, then clamps
     to [0, 1]; ("blur", sigma) a Gaussian blur (kernel radius ceil(3 sigma), reflected borders)
  1. for each level i, coarsest first, along the already-mixed path: z_e_i = posterior mean of
     q(z_i | x, z_<i), z_s_i = a draw of p(z_i | z_<i) at `temperature` (0.6, the paper's NVAE value),
     z_i = (1 - a_i) z_e_i + a_i z_s_i
  2. x' = the decoder's mean (sigmoid of its Bernoulli logits)
Coarse levels keep the class (small a_i), fine levels, where the adversarial detail lives, are
resampled (a_i near 1). Schedules (advlab.purifiers.mlvgm.schedules): "linear" a_i = i / n, "cosine"
a_i = (1 - cos(pi i / n)) / 2, "learned" (Bayesian optimisation, recorded in
docs/results/mlvgm_schedule_search.json), or n numbers; `scale` multiplies them (the paper uses 0.7).

Threat model. The attacker knows the classifier, the HVAE and all weights, not the draws (stochastic:
attacks need EoT; each call of the defense draws fresh noise from its own seeded stream, `seed`, so an
EoT loop sees independent draws and a reseed replays them). Every step is differentiable (posterior means,
reparameterised prior draws, the decoder, the preprocessing), so the adaptive attack runs on the defense
itself ("exact", the only backward): full gradients through encoder and decoder, as in the paper.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from advlab.purifiers.base import Purifier
from advlab.validate import check_images, eval_mode

PREPROCESS = ("noise", "blur")


def _check_preprocess(preprocess):
    if preprocess is None:
        return None
    if not isinstance(preprocess, (tuple, list)) or len(preprocess) != 2 or preprocess[0] not in PREPROCESS:
        raise ValueError(f"preprocess: expected None, ('noise', l2_norm) or ('blur', sigma), got {preprocess!r}")
    kind, v = preprocess
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or (kind == "blur" and v == 0):
        raise ValueError(f"preprocess: the {kind} {'L2 norm' if kind == 'noise' else 'sigma'} must be a finite "
                         f"number {'>= 0' if kind == 'noise' else '> 0'}, got {v!r}")
    return (kind, float(v))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of x (N, C, H, W), kernel radius ceil(3 sigma), reflected borders."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t.pow(2) / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def add_l2_noise(x: torch.Tensor, l2_norm: float, generator: torch.Generator) -> torch.Tensor:
    """x + n, n Gaussian rescaled to L2 norm l2_norm per image, clamped to [0, 1]."""
    n = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    n = n * (l2_norm / n.flatten(1).norm(dim=1).clamp_min(1e-12)).view(-1, *([1] * (x.dim() - 1)))
    return (x + n).clamp(0, 1)


class MLVGM(Purifier):
    """MLVGM purification: forward(x) = classifier(decode_mixed(preprocess(x), alphas, temperature)).

    hvae: a module with decode_mixed(x, alphas, temperature, generator) and n_levels, e.g.
        advlab.purifiers.mlvgm.model.HVAEModel (zoo fmnist/hvae).
    classifier: images in [0, 1] -> logits.
    alphas: "linear" (default), "cosine", "learned" (the recorded Bayesian-optimisation result), or
        n_levels numbers in [0, 1], coarsest level first.
    scale: multiplies every a_i (the paper's 0.7 option); temperature: of the prior draws (0.6).
    preprocess: None, ("noise", l2_norm) or ("blur", sigma).
    seed: of the defense's own random stream (Purifier.reseed).
    """

    stochastic = True
    differentiable = True
    backwards = ("exact",)
    ZOO = {"fashion_mnist": {"classifier": "fmnist/cnn", "hvae": "fmnist/hvae"}}

    def __init__(self, hvae: nn.Module, classifier: nn.Module, alphas="linear", scale: float = 1.0,
                 temperature: float = 0.6, preprocess=None, seed: int | None = 0):
        super().__init__(classifier, seed)
        if not isinstance(hvae, nn.Module) or not all(hasattr(hvae, a) for a in ("decode_mixed", "n_levels")):
            raise ValueError(f"hvae: expected a module with decode_mixed and n_levels (e.g. "
                             f"advlab.purifiers.mlvgm.model.HVAEModel), got {type(hvae).__name__}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature: must be a finite number >= 0, got {temperature!r}")
        from advlab.purifiers.mlvgm import schedules
        self.hvae = hvae
        self.schedule = alphas if isinstance(alphas, str) else "custom"
        self.scale = float(scale)
        self.alphas = schedules.resolve(alphas, hvae.n_levels, scale)           # (n_levels,) CPU float32
        self.temperature = float(temperature)
        self.preprocess = _check_preprocess(preprocess)

    def settings(self) -> dict:
        return super().settings() | {"schedule": self.schedule, "alphas": [round(float(a), 4) for a in self.alphas],
                                     "scale": self.scale, "temperature": self.temperature,
                                     "preprocess": self.preprocess}

    # ----------------------------------------------------------------------------- the defense
    def _preprocessed(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.preprocess is None:
            return x
        kind, v = self.preprocess
        return add_l2_noise(x, v, generator) if kind == "noise" else gaussian_blur(x, v).clamp(0, 1)

    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        with eval_mode(self.hvae):
            x = self._preprocessed(x, generator)
            return self.hvae.decode_mixed(x, self.alphas, self.temperature, generator).to(x.dtype)

    def draw_logits(self, x: torch.Tensor, k: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
        """The classifier's logits on k purifications of each input, (k, N, classes); draws from
        `generator` (default: the defense's own stream), one purification of the batch after the other."""
        check_images(x, "x")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: must be an int >= 1, got {k!r}")
        return torch.stack([self.classifier(self.purify(x, generator)) for _ in range(k)])

    def mean_logits(self, x: torch.Tensor, k: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits averaged over k draws, (N, classes): the paper's evaluation (EoT 32)."""
        return self.draw_logits(x, k, generator).mean(0)
