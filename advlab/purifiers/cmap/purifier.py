"""CMAP purification (Zhang, Yang, Luo, Chen, Wang, Liu, Han & Tan, "Adversarial Purification by
Consistency-aware Latent Space Optimization on Data Manifolds"): optimise K latents of a one-step
consistency model so that its images match the input, keep the K latents' statistics at the prior's,
and let the classifier vote over the K images.

    defense = CMAP.from_zoo("fashion_mnist")           # zoo fmnist/consistency + fmnist/cnn
    defense = CMAP.from_zoo("fashion_mnist", k=8, iters=25, lam=1.0, beta=0.1)   # the defaults, spelt out
    scores = defense(x)                                # majority vote over the K images (ties: summed logits)
    res = defense.search(x)                            # the K images, latents and loss curves

The search, for each image x (N, C, H, W) in [0, 1], all images and all K latents in one batch:
  u_k ~ N(0, I) (k = 1..K; standardised latents, z_k = T u_k with T = the model's sigma_max),
  Adam on u for `iters` steps (learning rate `lr`) of
    L = sum_k [ MAE(G(z_k), x) + lam (1 - SSIM(G(z_k), x)) ] / K + beta [ mean(u)^2 + (var(u) - 1)^2 ]
  where G is the one-step generator, SSIM comes from pytorch-msssim (11x11 Gaussian window, sigma 1.5),
  and mean(u), var(u) are the empirical mean and variance of all coordinates of the image's K latents:
  the prior N(0, T^2 I) written for u (the paper's (mean(z))^2 + (var(z) - T^2)^2 up to the scale of beta).
  Without the distribution term the latents fit whatever is in x, the adversarial noise included.
Prediction: the classifier on the K final images, a majority vote (advlab.purifiers.voting.aggregate,
rule "vote": ties broken by the summed logits). `purify` returns the image of the lowest per-image loss.

Threat model. The attacker knows the generator, the classifier and the settings, not the initial latents.
The search is an inner optimisation: autograd through forward gives a zero gradient (differentiable =
False). Backwards for adaptive attacks: "identity" (BPDA: the classifier's gradient at each of the K
images, as if the search were x -> x, averaged through the mean softmax; the scores' values stay the
vote). The full gradient through the unrolled search and the paper's consistency-disruption attack
are separate attacks (advlab.evaluation).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from advlab.purifiers.base import Purifier
from advlab.purifiers.voting import aggregate
from advlab.validate import check_fit, check_int, check_positive, eval_mode


class CMAPSearch(NamedTuple):
    images: torch.Tensor     # (K, N, C, H, W) G(z_k) after the search, in [0, 1]
    u: torch.Tensor          # (K, N, C, H, W) the standardised latents
    loss: torch.Tensor       # (K, N) final reconstruction loss per latent (MAE + lam (1 - SSIM))
    curve: torch.Tensor      # (iters, N) the per-image objective L at every step (before the update)


def reconstruction_loss(images: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    """MAE + lam (1 - SSIM) per row: images and x (M, C, H, W) in [0, 1] -> (M,)."""
    from pytorch_msssim import ssim
    mae = (images - x).abs().flatten(1).mean(1)
    if lam == 0:
        return mae
    return mae + lam * (1 - ssim(images, x, data_range=1.0, size_average=False))


def distribution_penalty(u: torch.Tensor) -> torch.Tensor:
    """(mean(u))^2 + (var(u) - 1)^2 per image, from its K standardised latents u (K, N, ...) -> (N,)."""
    flat = u.transpose(0, 1).flatten(1)                                   # (N, K * D)
    return flat.mean(1).pow(2) + (flat.var(1) - 1).pow(2)


class CMAP(Purifier):
    """CMAP purification: forward(x) = vote of classifier over the K images of `search(x)`.

    generator: a module with generate(z) (latents (M, C, H, W) -> images in [0, 1]), latent_shape and
        sigma_max, e.g. advlab.purifiers.cmap.model.ConsistencyModel (zoo fmnist/consistency).
    classifier: images in [0, 1] -> logits.
    k: latents per image; iters: Adam steps; lr: Adam's learning rate on the standardised latents;
    lam: weight of 1 - SSIM; beta: weight of the distribution term (0: none). The defaults of k, iters, lam
    and beta are the choice of the validation search recorded in docs/results/cmap_search.{json,md}
    (advlab.purifiers.cmap.search; a test keeps them equal): there, grey-box accuracy fell as the iteration count
    grew, since longer searches fit the perturbation too;
    batch_size: images searched at a time (K * batch_size rows); seed: the defense's own stream.
    """

    stochastic = True
    differentiable = False
    backwards = ("identity",)
    ZOO = {"fashion_mnist": {"classifier": "fmnist/cnn", "generator": "fmnist/consistency"}}

    def __init__(self, generator: nn.Module, classifier: nn.Module, k: int = 8, iters: int = 25, lr: float = 0.05,
                 lam: float = 1.0, beta: float = 0.1, batch_size: int = 128, seed: int | None = 0):
        super().__init__(classifier, seed)
        if not isinstance(generator, nn.Module) or not all(hasattr(generator, a) for a in
                                                            ("generate", "latent_shape", "sigma_max")):
            raise ValueError(f"generator: expected a module with generate, latent_shape and sigma_max (e.g. "
                             f"advlab.purifiers.cmap.model.ConsistencyModel), got {type(generator).__name__}")
        self.generator = generator
        self.k = check_int(k, "k")
        self.iters = check_int(iters, "iters", minimum=0)
        self.lr = float(check_positive(lr, "lr"))
        self.lam = float(check_positive(lam, "lam", strict=False))
        self.beta = float(check_positive(beta, "beta", strict=False))
        self.batch_size = check_int(batch_size, "batch_size")

    def settings(self) -> dict:
        return super().settings() | {"k": self.k, "iters": self.iters, "lr": self.lr, "lam": self.lam, "beta": self.beta}

    # ----------------------------------------------------------------------------- the search
    def search(self, x: torch.Tensor, generator: torch.Generator | None = None) -> CMAPSearch:
        """The latent search of the module docstring on x (N, C, H, W) in [0, 1]; initial latents (K, N, ...)
        drawn from `generator` (default: the defense's own stream) on the CPU before any computation."""
        x, _ = check_fit(self, x)
        g = generator if generator is not None else self._generator
        x = x.detach()
        u0 = torch.randn(self.k, len(x), *self.generator.latent_shape, generator=g)   # (K, N, C, H, W), CPU
        parts = [self._search_chunk(x[i:i + self.batch_size], u0[:, i:i + self.batch_size])
                 for i in range(0, len(x), self.batch_size)]
        return CMAPSearch(*(torch.cat([p[j] for p in parts], 1) for j in range(4)))

    def search_at(self, x: torch.Tensor, at, generator: torch.Generator | None = None) -> dict:
        """The K images (K, N, C, H, W) after t Adam steps for every t in `at` (0 <= t <= iters), from one
        search of `iters` steps: the same draws and batches as search(x, generator), so the images at t are
        those a CMAP with iters = t returns (Adam has no schedule that depends on the iteration count).
        Returns {t: images} and under "seconds" {t: wall time from the search's start to step t}."""
        import time
        x, _ = check_fit(self, x)
        at = sorted({int(t) for t in at})
        if not at or at[0] < 0 or at[-1] > self.iters:
            raise ValueError(f"at: step counts in [0, iters = {self.iters}], got {at}")
        g = generator if generator is not None else self._generator
        x = x.detach()
        u0 = torch.randn(self.k, len(x), *self.generator.latent_shape, generator=g)   # as in search
        parts, seconds, t0 = {t: [] for t in at}, dict.fromkeys(at, 0.0), time.perf_counter()

        def watch(step, u, images):
            if step in parts:
                parts[step].append(images)
                seconds[step] += time.perf_counter() - t0

        for i in range(0, len(x), self.batch_size):
            t0 = time.perf_counter()
            self._search_chunk(x[i:i + self.batch_size], u0[:, i:i + self.batch_size], watch)
        return {t: torch.cat(v, 1) for t, v in parts.items()} | {"seconds": seconds}

    def _search_chunk(self, x: torch.Tensor, u0: torch.Tensor, watch=None):
        k, n = u0.shape[:2]
        t = float(self.generator.sigma_max)
        target = x.repeat(k, 1, 1, 1)                                                   # (K*n, C, H, W)
        u = u0.to(x.device, x.dtype).requires_grad_(True)
        opt = torch.optim.Adam([u], lr=self.lr)
        curve = []
        with eval_mode(self.generator), torch.enable_grad():
            for _ in range(self.iters):
                images = self.generator.generate(t * u.flatten(0, 1))                  # (K*n, C, H, W)
                rec = reconstruction_loss(images, target, self.lam).view(k, n)          # (K, n)
                obj = rec.mean(0) + (self.beta * distribution_penalty(u) if self.beta else 0)   # (n,)
                if watch is not None:
                    watch(len(curve), u.detach(), images.detach().view(k, n, *x.shape[1:]))
                opt.zero_grad(set_to_none=True)
                obj.sum().backward()
                opt.step()
                curve.append(obj.detach())
            with torch.no_grad():
                images = self.generator.generate(t * u.flatten(0, 1))
                rec = reconstruction_loss(images, target, self.lam).view(k, n)
                if watch is not None:
                    watch(self.iters, u.detach(), images.view(k, n, *x.shape[1:]))
        curve = torch.stack(curve) if curve else torch.zeros(0, n, device=x.device)
        return images.view(k, n, *x.shape[1:]).detach(), u.detach(), rec.detach(), curve

    @torch.no_grad()
    def trace(self, x: torch.Tensor, at=(0, 5, 10, 25, 50, 100), generator: torch.Generator | None = None) -> dict:
        """The search of a few images x (n, C, H, W) step by step, for pictures: at every step t = 0..iters (t = 0
        before the first update, t = iters the result) the terms MAE and 1 - SSIM (K, n), the distribution term
        and the empirical mean and variance of each image's K latents (n,); the K images at the steps in `at`
        (those <= iters). Same draws and result as search(x, generator). Returns tensors on the CPU:
        {"mae": (T+1, K, n), "ssim_term": (T+1, K, n), "dist": (T+1, n), "mean_u": (T+1, n), "var_u": (T+1, n),
        "snapshots": {t: (K, n, C, H, W)}, "result": CMAPSearch}."""
        from pytorch_msssim import ssim
        x, _ = check_fit(self, x)
        if len(x) > self.batch_size:
            raise ValueError(f"x: trace is for a few images (at most batch_size = {self.batch_size}), got {len(x)}")
        at = sorted({int(t) for t in at if 0 <= int(t) <= self.iters})
        rows = {"mae": [], "ssim_term": [], "dist": [], "mean_u": [], "var_u": []}
        snapshots = {}
        target = x.detach()

        def watch(step, u, images):                                     # u (K, n, ...), images (K, n, C, H, W)
            k, n = images.shape[:2]
            flat, tgt = images.flatten(0, 1), target.repeat(k, 1, 1, 1)
            rows["mae"].append((flat - tgt).abs().flatten(1).mean(1).view(k, n).cpu())
            rows["ssim_term"].append((1 - ssim(flat, tgt, data_range=1.0, size_average=False)).view(k, n).cpu())
            pooled = u.transpose(0, 1).flatten(1)
            rows["dist"].append(distribution_penalty(u).cpu())
            rows["mean_u"].append(pooled.mean(1).cpu())
            rows["var_u"].append(pooled.var(1).cpu())
            if step in at:
                snapshots[step] = images.cpu()

        g = generator if generator is not None else self._generator
        u0 = torch.randn(self.k, len(x), *self.generator.latent_shape, generator=g)
        result = CMAPSearch(*self._search_chunk(target, u0, watch))
        return {name: torch.stack(v) for name, v in rows.items()} | {"snapshots": snapshots, "result": result}

    # ----------------------------------------------------------------------------- the defense
    def _purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        res = self.search(x, generator)
        best = res.loss.argmin(0)                                                       # (N,)
        return res.images[best, torch.arange(len(x), device=best.device)]

    def draw_logits(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The classifier's logits on the K images of one search, (K, N, classes)."""
        res = self.search(x, generator)
        k, n = res.images.shape[:2]
        with torch.no_grad():
            return self.classifier(res.images.flatten(0, 1)).view(k, n, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Vote scores (N, classes) over the K images; connected to x with a zero gradient (an inner
        optimisation has none that autograd can see)."""
        x, _ = check_fit(self, x)
        scores = aggregate(self.draw_logits(x), "vote")
        if torch.is_grad_enabled() and x.requires_grad:
            scores = scores + 0.0 * x.flatten(1).sum(1, keepdim=True)
        return scores

    def _adaptive_model(self, backward: str) -> nn.Module:  # pragma: no cover - only "identity" is offered
        raise ValueError(f"backward: {backward!r} is not implemented by CMAP")

    def adaptive_model(self, backward=None) -> nn.Module:
        """"identity" (the default): BPDA through the search, see the module docstring. A callable f gives
        BPDA whose backward is the gradient of f at x (as for every purifier)."""
        if backward is None or backward == "identity":
            return self._same_mode(_CMAPIdentity(self))
        return super().adaptive_model(backward)


class _CMAPIdentity(nn.Module):
    """Values: the defense's vote scores. Gradient: that of the mean softmax of the classifier at the K
    images, each image standing in for x (x + (image - x).detach()): BPDA with an identity backward."""

    def __init__(self, defense: CMAP):
        super().__init__()
        self.defense = defense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = check_fit(self.defense, x)
        res = self.defense.search(x)
        k, n = res.images.shape[:2]
        stand_in = (x[None] + (res.images - x[None]).detach()).flatten(0, 1)             # (K*N, C, H, W)
        logits = self.defense.classifier(stand_in).view(k, n, -1)
        smooth = aggregate(logits, "mean_probs")
        return aggregate(logits.detach(), "vote") + (smooth - smooth.detach())
