"""The consistency-disruption attack on CMAP (Zhang et al., "Adversarial Purification by Consistency-aware
Latent Space Optimization on Data Manifolds", Sec. IV-D and Alg. 2): the defense's own latent search,
turned against it.

    atk = ConsistencyDisruption(eps=0.1, gamma=1.0, steps=50)
    x_adv = atk(defense, x, y)                # defense: an advlab.purifiers.cmap.purifier.CMAP
    cands = atk.candidates(defense, x, y)     # (K, N, C, H, W): every adversarial sample, before the choice

Threat model: ||x_adv - x|| <= eps (Linf or L2), x_adv in [0, 1]; white box (the attacker knows the
generator, the classifier and the settings, not the defender's initial latents, which it draws itself).

The paper's equation (15) lost its symbols in our copy; this is our reading of the text around it:
  1. start from the defender's own fit of x: K latents u found by CMAP's search (its Alg. 2 initialises
     so, "to stay close to the clean data manifold");
  2. run `steps` Adam steps on u of the defender's objective minus gamma times the classifier's
     cross-entropy at the generated images,
        L_def(u; x) - gamma * mean_k CE(C(G(T u_k)), y),
     so the generated images stay near x in the defender's own metric (MAE + lam (1 - SSIM), the
     distribution term) while moving into another class;
  3. project each of the K images into the eps ball around x and [0, 1]: K adversarial samples per image;
  4. the defense (a fresh search, its own randomness) classifies each; the attack succeeds on an image when
     any of them is misclassified (the paper's rule), so it returns, per image, the candidate with the
     lowest vote margin of the true class (negative: misclassified).
It is one more attack for the per-image worst case of the ensemble, not a replacement for it: gradient
attacks through BPDA and the unrolled search, and Square, still run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from advlab.attacks.base import Attack, fit_to_threat_model
from advlab.validate import check_positive, eval_mode

__all__ = ["ConsistencyDisruption"]


def _defense(model):
    d = getattr(model, "model", model)          # the dtype-casting wrapper of Attack keeps the defense in .model
    if not all(hasattr(d, a) for a in ("search", "generator", "classifier", "lam", "beta", "lr")):
        raise ValueError(f"model: the consistency-disruption attack needs a CMAP defense "
                         f"(advlab.purifiers.cmap.purifier.CMAP), got {type(d).__name__}")
    return d


class ConsistencyDisruption(Attack):
    """Consistency disruption (module docstring): Adam on the defender's K latents of
    L_def - gamma * CE, the K generated images projected into the eps ball, the one the defense
    classifies worst returned. Linf or L2. gamma: weight of the cross-entropy; steps: Adam steps;
    lr: Adam's learning rate on the standardised latents (None: the defense's own)."""

    randomized = True

    def __init__(self, eps: float | None = None, gamma: float = 1.0, steps: int = 50, lr: float | None = None,
                 norm: str = "linf", **common):
        super().__init__(eps, norm, **common)
        self.gamma = float(check_positive(gamma, "gamma", strict=False))
        self.steps = check_positive(steps, "steps", integer=True, minimum=0, strict=False)
        self.lr = None if lr is None else float(check_positive(lr, "lr"))
        self.last_curve: dict[str, list[float]] = {}

    def _runtime_checks(self, model, x, y, was_training: bool) -> list[str]:
        return []   # the defense's input gradient is zero by design (an inner optimisation); this attack needs none

    def candidates(self, model, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
        """The K adversarial samples of every image, (K, N, C, H, W), each inside the threat model; the
        initial latents come from `generator` (default: one seeded with the attack's seed). Also records
        last_curve: the mean reconstruction loss and cross-entropy at every step."""
        from advlab.purifiers.cmap.purifier import distribution_penalty, reconstruction_loss
        d = _defense(model)
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed)
        x, y = x.detach(), y.to(x.device)
        res = d.search(x, generator=g)                                            # step 1: the defender's fit
        k, n = res.u.shape[:2]
        t = float(d.generator.sigma_max)
        target, yk = x.repeat(k, 1, 1, 1), y.repeat(k)                            # (K*n, C, H, W), (K*n,)
        u = res.u.clone().requires_grad_(True)
        opt = torch.optim.Adam([u], lr=self.lr or d.lr)
        curve = {"reconstruction": [], "cross_entropy": []}
        with eval_mode(d.generator), eval_mode(d.classifier), torch.enable_grad():
            for _ in range(self.steps + 1):
                images = d.generator.generate(t * u.flatten(0, 1))                 # (K*n, C, H, W)
                rec = reconstruction_loss(images, target, d.lam).view(k, n)
                ce = F.cross_entropy(d.classifier(images), yk, reduction="none").view(k, n)
                curve["reconstruction"].append(rec.mean().item())
                curve["cross_entropy"].append(ce.mean().item())
                if len(curve["cross_entropy"]) > self.steps:
                    break
                obj = rec.mean(0) - self.gamma * ce.mean(0)                       # (n,)
                if d.beta:
                    obj = obj + d.beta * distribution_penalty(u)
                opt.zero_grad(set_to_none=True)
                obj.sum().backward()                                              # step 2
                opt.step()
        self.last_curve = curve
        images = images.detach().view(k, n, *x.shape[1:])
        return torch.stack([fit_to_threat_model(images[j], x, self.eps, self.norm) for j in range(k)])   # step 3

    def _attack(self, model, x, y, generator):
        d = _defense(model)
        cands = self.candidates(d, x, y, generator)
        best, best_margin = cands[0].clone(), torch.full((len(x),), float("inf"), device=x.device)
        rows = torch.arange(len(x), device=x.device)
        for cand in cands:                                                        # step 4: the defense decides
            with torch.no_grad():
                scores = d(cand)                                                  # vote scores (N, classes)
            true = scores[rows, y]
            other = scores.clone()
            other[rows, y] = float("-inf")
            margin = true - other.max(1).values
            better = margin < best_margin
            best[better], best_margin = cand[better], torch.where(better, margin, best_margin)
        return best
